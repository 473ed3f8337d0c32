"""Batch-level contract checks, run in DuckDB on a delivery or on the lake.

The same checks run in both places: on each batch during ingestion (a failure rejects the whole
batch) and on the lake in `churnops contracts check` and the promotion gate. The rows under
check are always a DuckDB relation named after the source, so a contract's custom SQL
(`SELECT ... FROM billing`) reads the same in both.

Figures: completeness and uniqueness are percentages; `not_null`, `accepted_values`, `range`
and `unique` are the share (0-1) of rows that pass; freshness is the age of the newest record
in hours; a custom check's figure is whatever its query returns.

Freshness applies to live data only. During ingestion a backfill skips it (and says so). On the
lake, freshness is skipped while the source's latest successful batch was a backfill: history
loaded on day one is old by definition; from the first live batch on, it is enforced.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb

from churnops.contracts.source_contract import (
    AcceptedValuesCheck,
    CustomCheck,
    NotNullCheck,
    RangeCheck,
    SourceContract,
    UniqueCheck,
    load_source_contracts,
)
from churnops.ingestion.readers import IngestError
from churnops.storage.duck import duckdb_connection
from churnops.storage.lake import list_partitions, source_dir, source_glob
from churnops.storage.staging import StagedFiles

LOAD_STATE_FILE = "_load_state.json"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one contract check.

    Attributes:
        source: The source checked.
        rule: `completeness`, `uniqueness`, `freshness`, `not_null`, `accepted_values`, `range`,
            `unique`, `custom:<name>`, and during ingestion `schema` and `quarantine_rate`.
        passed: Whether the check passed (a skipped check counts as passed).
        figure: The measured value, None when there was nothing to measure.
        threshold: The contract's bound for the figure.
        message: One sentence naming the rule, the figure and the threshold.
        column: The column(s) checked, when the rule is about columns.
        skipped: True when the check did not apply (no rows, or freshness on a backfill).
    """

    source: str
    rule: str
    passed: bool
    figure: float | None
    threshold: float | None
    message: str
    column: str | None = None
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON-ready values."""
        return asdict(self)


@dataclass(frozen=True)
class ContractCheckReport:
    """Every check run over the lake.

    Attributes:
        results: One entry per check, source by source in contract order.
    """

    results: list[CheckResult]

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        """The checks that failed."""
        return [r for r in self.results if not r.passed]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready values."""
        return {"passed": self.passed, "results": [r.to_dict() for r in self.results]}


def _q(name: str) -> str:
    # Contract column names are validated as [a-z][a-z0-9_]*, so quoting is only for keywords.
    return f'"{name}"'


def _ratio_result(
    source: str, rule: str, column: str, figure: float | None, threshold: float, what: str
) -> CheckResult:
    if figure is None:
        return CheckResult(
            source, rule, True, None, threshold, f"{rule} {column}: no rows to check", column, True
        )
    passed = figure >= threshold
    verdict = "meets" if passed else "is below"
    message = f"{rule} {column}: {figure:.2%} of {what} {verdict} the threshold {threshold:.2%}"
    return CheckResult(source, rule, passed, figure, threshold, message, column)


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    return None if row is None else row[0]


def run_checks(
    con: duckdb.DuckDBPyConnection,
    contract: SourceContract,
    *,
    now: datetime,
    freshness: Literal["enforce", "skip"] = "enforce",
    skip_reason: str = "",
    freshness_relation: str | None = None,
) -> list[CheckResult]:
    """Run a contract's batch checks on the relation named after its source.

    Args:
        con: A DuckDB connection where `contract.name` is a table or view of typed rows.
        contract: The source's contract.
        now: The reference time for freshness (UTC-aware).
        freshness: `skip` for historical loads; the result then says why.
        skip_reason: Why freshness is skipped, for the message.
        freshness_relation: Measure freshness on this relation instead (during ingestion: the
            rows that passed the row-level rules, so a future-dated row cannot fake freshness).

    Returns:
        One result per check: completeness per column, key uniqueness, freshness, then the
        `testing:` list in order.
    """
    source = contract.name
    total = int(_scalar(con, f"SELECT count(*) FROM {_q(source)}"))
    results = _completeness(con, contract)
    results.append(_uniqueness(con, contract))
    results.append(
        _freshness(
            con,
            contract,
            relation=freshness_relation or source,
            now=now,
            mode=freshness,
            skip_reason=skip_reason,
        )
    )
    results += [_testing(con, contract, check, total=total) for check in contract.testing]
    return results


def _completeness(con: duckdb.DuckDBPyConnection, contract: SourceContract) -> list[CheckResult]:
    """One result per column with a minimum share of present values."""
    source, table = contract.name, _q(contract.name)
    results: list[CheckResult] = []
    for column, min_percent in contract.quality.completeness.items():
        share = _scalar(con, f"SELECT avg(CASE WHEN {_q(column)} IS NULL THEN 0.0 ELSE 1.0 END) FROM {table}")
        if share is None:
            results.append(
                CheckResult(
                    source,
                    "completeness",
                    True,
                    None,
                    min_percent,
                    f"completeness {column}: no rows",
                    column,
                    True,
                )
            )
            continue
        percent = 100.0 * float(share)
        passed = percent >= min_percent
        message = (
            f"completeness {column}: {percent:.2f}% of values present "
            f"{'meets' if passed else 'is below'} the minimum {min_percent:g}%"
        )
        results.append(CheckResult(source, "completeness", passed, percent, min_percent, message, column))
    return results


def _uniqueness(con: duckdb.DuckDBPyConnection, contract: SourceContract) -> CheckResult:
    """The share of rows with a complete key whose key is distinct."""
    source, table = contract.name, _q(contract.name)
    keys = contract.quality.uniqueness.columns
    key_list = ", ".join(_q(k) for k in keys)
    not_null = " AND ".join(f"{_q(k)} IS NOT NULL" for k in keys)
    counts = con.execute(
        f"SELECT count(*), count(DISTINCT ({key_list})) FROM {table} WHERE {not_null}"
    ).fetchone()
    keyed, distinct = (int(counts[0]), int(counts[1])) if counts else (0, 0)
    min_unique = contract.quality.uniqueness.min_percent
    label = "+".join(keys)
    if keyed == 0:
        return CheckResult(
            source, "uniqueness", True, None, min_unique, f"uniqueness {label}: no rows", label, True
        )
    percent = 100.0 * distinct / keyed
    passed = percent >= min_unique
    message = (
        f"uniqueness {label}: {percent:.2f}% of keyed rows have a distinct key "
        f"({keyed - distinct} duplicates) {'meets' if passed else 'is below'} the minimum {min_unique:g}%"
    )
    return CheckResult(source, "uniqueness", passed, percent, min_unique, message, label)


def _freshness(
    con: duckdb.DuckDBPyConnection,
    contract: SourceContract,
    *,
    relation: str,
    now: datetime,
    mode: Literal["enforce", "skip"],
    skip_reason: str,
) -> CheckResult:
    rule = contract.quality.freshness
    limit_hours = rule.max_delay.total_seconds() / 3600
    newest = _scalar(con, f"SELECT max({_q(rule.column)}) FROM {_q(relation)}")
    if newest is None:
        return CheckResult(
            contract.name, "freshness", True, None, limit_hours, "freshness: no rows", rule.column, True
        )
    if not isinstance(newest, datetime):
        newest = datetime(newest.year, newest.month, newest.day, tzinfo=UTC)
    newest = newest.astimezone(UTC) if newest.tzinfo else newest.replace(tzinfo=UTC)
    age_hours = (now - newest).total_seconds() / 3600
    if mode == "skip":
        message = (
            f"freshness {rule.column}: skipped ({skip_reason}); newest record {newest:%Y-%m-%dT%H:%MZ} is "
            f"{age_hours:.1f}h old, the live limit is {limit_hours:g}h"
        )
        return CheckResult(
            contract.name, "freshness", True, age_hours, limit_hours, message, rule.column, True
        )
    passed = age_hours <= limit_hours
    message = (
        f"freshness {rule.column}: newest record {newest:%Y-%m-%dT%H:%MZ} is {age_hours:.1f}h old, "
        f"{'within' if passed else 'beyond'} the limit of {limit_hours:g}h"
        + ("" if passed else " (for a historical load, ingest with --backfill)")
    )
    return CheckResult(contract.name, "freshness", passed, age_hours, limit_hours, message, rule.column)


TestingCheck = NotNullCheck | AcceptedValuesCheck | UniqueCheck | RangeCheck | CustomCheck


def _testing(
    con: duckdb.DuckDBPyConnection, contract: SourceContract, check: TestingCheck, *, total: int
) -> CheckResult:
    """One check of the contract's `testing:` list."""
    if isinstance(check, NotNullCheck):
        return _not_null(con, contract, check)
    if isinstance(check, AcceptedValuesCheck):
        return _accepted_values(con, contract, check)
    if isinstance(check, RangeCheck):
        return _range(con, contract, check)
    if isinstance(check, UniqueCheck):
        return _unique(con, contract, check)
    return _custom(con, contract, check, total=total)


def _not_null(con: duckdb.DuckDBPyConnection, contract: SourceContract, check: NotNullCheck) -> CheckResult:
    share = _scalar(
        con,
        f"SELECT avg(CASE WHEN {_q(check.column)} IS NULL THEN 0.0 ELSE 1.0 END) FROM {_q(contract.name)}",
    )
    return _ratio_result(
        contract.name, "not_null", check.column, _float(share), check.threshold, "rows are present"
    )


def _accepted_values(
    con: duckdb.DuckDBPyConnection, contract: SourceContract, check: AcceptedValuesCheck
) -> CheckResult:
    values = ", ".join("'" + v.replace("'", "''") + "'" for v in contract.column(check.column).enum or [])
    col = _q(check.column)
    share = _non_null_share(con, _q(contract.name), col, f"{col} IN ({values})")
    return _ratio_result(
        contract.name,
        "accepted_values",
        check.column,
        _float(share),
        check.threshold,
        "values are in the enum",
    )


def _range(con: duckdb.DuckDBPyConnection, contract: SourceContract, check: RangeCheck) -> CheckResult:
    column = contract.column(check.column)
    col = _q(check.column)
    bounds = []
    if column.minimum is not None:
        bounds.append(f"{col} >= {column.minimum!r}")
    if column.maximum is not None:
        bounds.append(f"{col} <= {column.maximum!r}")
    share = _non_null_share(con, _q(contract.name), col, " AND ".join(bounds))
    return _ratio_result(
        contract.name, "range", check.column, _float(share), check.threshold, "values are in range"
    )


def _unique(con: duckdb.DuckDBPyConnection, contract: SourceContract, check: UniqueCheck) -> CheckResult:
    cols = ", ".join(_q(c) for c in check.columns)
    row = con.execute(
        f"SELECT count(*), count(DISTINCT ({cols})) FROM {_q(contract.name)} "
        f"WHERE {' AND '.join(f'{_q(c)} IS NOT NULL' for c in check.columns)}"
    ).fetchone()
    share = None if not row or not row[0] else row[1] / row[0]
    return _ratio_result(
        contract.name, "unique", "+".join(check.columns), share, check.threshold, "rows are unique"
    )


def _custom(
    con: duckdb.DuckDBPyConnection, contract: SourceContract, check: CustomCheck, *, total: int
) -> CheckResult:
    source, rule = contract.name, f"custom:{check.name}"
    if total == 0:
        return CheckResult(source, rule, True, None, check.threshold, f"{rule}: no rows", None, True)
    try:
        value = _float(_scalar(con, check.sql))
    except duckdb.Error as exc:
        return CheckResult(
            source,
            rule,
            False,
            None,
            check.threshold,
            f"{rule}: the contract's SQL failed in DuckDB: {' '.join(str(exc).split())}",
        )
    if value is None:
        return CheckResult(source, rule, True, None, check.threshold, f"{rule}: no rows to check", None, True)
    passed = value >= check.threshold if check.must_be == "at_least" else value <= check.threshold
    bound = "at least" if check.must_be == "at_least" else "at most"
    message = f"{rule}: {value:.4g} must be {bound} {check.threshold:g}" + ("" if passed else " (failed)")
    return CheckResult(source, rule, passed, value, check.threshold, message)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _non_null_share(con: duckdb.DuckDBPyConnection, table: str, col: str, predicate: str) -> Any:
    """The share of the rows with a value in `col` for which `predicate` holds (None: no such rows)."""
    return _scalar(
        con, f"SELECT avg(CASE WHEN {predicate} THEN 1.0 ELSE 0.0 END) FROM {table} WHERE {col} IS NOT NULL"
    )


def write_load_state(
    lake_dir: Path, source: str, *, mode: Literal["live", "backfill"], batch: str, files: StagedFiles
) -> None:
    """Record how the latest successful batch of a source was loaded (read by `check_lake`).

    Args:
        lake_dir: The lake's root folder.
        source: The source name.
        mode: `live` or `backfill`.
        batch: The batch id.
        files: The batch's commit: the state changes with its partitions.
    """
    body = json.dumps({"mode": mode, "batch": batch}) + "\n"
    path = source_dir(lake_dir, source) / LOAD_STATE_FILE
    files.write(path, lambda tmp: tmp.write_text(body, encoding="utf-8"))


def read_load_state(lake_dir: Path, source: str) -> dict[str, str] | None:
    """How the latest successful batch of a source was loaded, or None when nothing was.

    Args:
        lake_dir: The lake's root folder.
        source: The source name.

    Returns:
        `{"mode": "live" | "backfill", "batch": <id>}` or None.
    """
    path = source_dir(lake_dir, source) / LOAD_STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    return state if isinstance(state, dict) else None


def check_lake(
    *,
    lake_dir: Path,
    source: str | None = None,
    now: datetime | None = None,
    contracts: dict[str, SourceContract] | None = None,
) -> ContractCheckReport:
    """Run every source contract's batch checks over what is in the lake.

    Args:
        lake_dir: The lake's root folder.
        source: Check only this source (default: all five).
        now: Reference time for freshness (default: the current time, UTC).
        contracts: The contracts to use (default: `contracts/sources/*.yaml`).

    Returns:
        The report; `.passed` is False when any check failed. A source with no rows in the lake
        gets skipped results (an empty source is valid).

    Raises:
        IngestError: When `source` is not one of the contracts' sources.
    """
    contracts = contracts if contracts is not None else load_source_contracts()
    if source is not None and source not in contracts:
        raise IngestError(f"unknown source {source!r}: expected one of {', '.join(contracts)}")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    results: list[CheckResult] = []
    con = duckdb_connection()
    try:
        for name, contract in contracts.items():
            if source is not None and name != source:
                continue
            if not list_partitions(lake_dir, name):
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE {_q(name)} AS SELECT * FROM ({_empty_select(contract)})"
                )
            else:
                glob = source_glob(lake_dir, name).replace("'", "''")
                con.execute(f"CREATE OR REPLACE VIEW {_q(name)} AS SELECT * FROM read_parquet('{glob}')")
            state = read_load_state(lake_dir, name)
            backfilled = state is not None and state.get("mode") == "backfill"
            results += run_checks(
                con,
                contract,
                now=now,
                freshness="skip" if backfilled else "enforce",
                skip_reason="the latest batch was a backfill; freshness applies from the first live batch",
            )
    finally:
        con.close()
    return ContractCheckReport(results=results)


def _empty_select(contract: SourceContract) -> str:
    sql_types = {
        "string": "VARCHAR",
        "int": "BIGINT",
        "float": "DOUBLE",
        "bool": "BOOLEAN",
        "date": "DATE",
        "timestamp": "TIMESTAMPTZ",
    }
    cols = ", ".join(f"CAST(NULL AS {sql_types[c.type]}) AS {_q(c.name)}" for c in contract.columns)
    return f"SELECT {cols} LIMIT 0"
