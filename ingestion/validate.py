"""Row-level validation: raw text → typed values plus one violation per broken (row, column, rule).

Pure functions over DataFrames; nothing here reads or writes files. Rules, in the order a
row's first violation is reported:

- `null_key`: a primary-key column is empty.
- `not_null`: another `nullable: false` column is empty.
- `type`: the value does not parse as the column's type (a malformed timestamp or date, text in
  a number column, an integer with decimals, a boolean that is not true/false).
- `format`: a string does not match the column's `format` regex.
- `accepted_values`: a string (after the contract's `normalize`) is not in the column's enum.
- `range`: a number is outside the column's minimum/maximum.
- `unknown_<name>` (e.g. `unknown_customer`): a `references` column names a record that is in
  neither the lake nor the rows accepted before it.
- `future_timestamp`: an event time after its own `ingested_at` (or after now) by more than the
  contract's clock skew, or an `ingested_at` after now by more than that skew.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from churnops.contracts.dtypes import source_arrow_type
from churnops.contracts.source_contract import Column, SourceContract
from churnops.ingestion.readers import REDACTED
from churnops.storage.duck import duckdb_connection
from churnops.storage.times import epoch_micros

RULE_ORDER: tuple[str, ...] = (
    "missing_column",
    "null_key",
    "not_null",
    "type",
    "format",
    "accepted_values",
    "range",
    "unknown_reference",
    "future_timestamp",
    "batch_rejected",
)
REASON_COLUMNS: tuple[str, ...] = ("_file", "_row", "_column", "_rule", "_value", "_message", "_reasons")
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_TYPE_EXPECTED = {
    "int": "expected a whole number",
    "float": "expected a finite number",
    "bool": "expected true or false",
    "date": "expected a date YYYY-MM-DD",
    "timestamp": "expected an ISO-8601 timestamp like 2026-07-24T13:05:12Z",
}
_VIOLATION_COLUMNS = ("row", "column", "rule", "value", "message")


@dataclass(frozen=True)
class ParsedBatch:
    """A batch after typing.

    Attributes:
        typed: Every row, contract columns in order, lake Arrow types. A value that does not
            parse is null; an enum value outside the enum or a number out of range is kept as it
            is, so batch checks can measure how much of the delivery breaks a rule.
        violations: One row per (row, column, rule) broken: `row` (0-based position), `column`,
            `rule`, `value` (the raw text), `message`.
    """

    typed: pa.Table
    violations: pd.DataFrame


def lake_dtype(column: Column) -> object:
    """The pandas dtype a column has when a lake partition is handled as a DataFrame.

    Args:
        column: The contract column.

    Returns:
        The dtype: nullable string, Int64, float64, boolean, Arrow date32, or microsecond UTC
        timestamps (never nanoseconds: DuckDB and Feast cast those badly).
    """
    return {
        "string": pd.StringDtype("python"),
        "int": pd.Int64Dtype(),
        "float": np.dtype("float64"),
        "bool": pd.BooleanDtype(),
        "date": pd.ArrowDtype(pa.date32()),
        "timestamp": pd.DatetimeTZDtype(unit="us", tz="UTC"),
    }[column.type]


def lake_schema(contract: SourceContract) -> pa.Schema:
    """The Arrow schema of a source's lake table.

    Args:
        contract: The source's contract.

    Returns:
        One field per contract column, in contract order.
    """
    return pa.schema([pa.field(c.name, source_arrow_type(c.type)) for c in contract.columns])


def to_lake_frame(frame: pd.DataFrame | pa.Table, contract: SourceContract) -> pd.DataFrame:
    """Rows with the contract's columns as a DataFrame in the lake dtypes, columns in contract order.

    Args:
        frame: A DataFrame or Arrow table holding at least the contract's columns.
        contract: The source's contract.

    Returns:
        A new frame with exactly the contract's columns and the lake dtypes.
    """
    if isinstance(frame, pa.Table):
        mapper = {
            pa.string(): pd.StringDtype("python"),
            pa.int64(): pd.Int64Dtype(),
            pa.bool_(): pd.BooleanDtype(),
            pa.date32(): pd.ArrowDtype(pa.date32()),
        }
        frame = frame.select(contract.column_names).to_pandas(types_mapper=mapper.get)
    return pd.DataFrame(
        {c.name: frame[c.name].astype(lake_dtype(c)) for c in contract.columns}, index=frame.index
    )


def empty_violations() -> pd.DataFrame:
    """A violations frame with no rows (see `ParsedBatch.violations`)."""
    return pd.DataFrame({name: pd.Series(dtype=object) for name in _VIOLATION_COLUMNS}).astype(
        {"row": np.int64}
    )


def _violations(rows: np.ndarray, column: str, rule: str, raw: pa.Table, message: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": rows.astype(np.int64),
            "column": column,
            "rule": rule,
            "value": np.array(raw.column(column).take(pa.array(rows, pa.int64())).to_pylist(), dtype=object),
            "message": message,
        }
    )


# A plain decimal or scientific number; "inf", "nan" and hex are not numbers in a delivery.
_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"


def _flags(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def _chunked(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    return values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])


def _parse_times(columns: dict[str, tuple[pa.ChunkedArray, str]], rows: int) -> dict[str, pa.ChunkedArray]:
    """Dates and timestamps through DuckDB's TRY_CAST: strict calendars (no 30 February), any ISO-8601
    offset normalised to UTC, and null instead of an error for what does not parse."""
    if not columns:
        return {}
    table = pa.table({name: text for name, (text, _) in columns.items()})
    table = table.append_column("_pos", pa.array(np.arange(rows), pa.int64()))
    casts = ", ".join(
        f'TRY_CAST("{name}" AS {"DATE" if kind == "date" else "TIMESTAMPTZ"}) AS "{name}"'
        for name, (_, kind) in columns.items()
    )
    con = duckdb_connection()
    try:
        con.register("times", table)
        # A parallel scan does not keep row order: sort back, row i must stay data row i + 1.
        result = con.execute(f"SELECT {casts} FROM times ORDER BY _pos").to_arrow_table()
    finally:
        con.close()
    return {name: result.column(name) for name in columns}


class _Findings:
    """The violations found so far in one batch, as frames of `_VIOLATION_COLUMNS`."""

    def __init__(self, raw: pa.Table) -> None:
        self.raw = raw
        self.frames: list[pd.DataFrame] = []

    def add(self, mask: np.ndarray, column: Column, rule: str, message: str) -> None:
        """Record one violation of `rule` for each row where `mask` is True."""
        if mask.any():
            self.frames.append(_violations(np.flatnonzero(mask), column.name, rule, self.raw, message))


def parse_batch(raw: pa.Table, contract: SourceContract) -> ParsedBatch:
    """Type every column and collect the violations that need only the row itself.

    Strings, numbers and booleans are handled with Arrow compute kernels, dates and timestamps
    with DuckDB's strict casts; nothing loops over rows in Python.

    Args:
        raw: The landing rows as text; must hold every contract column (extra ones are ignored).
        contract: The source's contract.

    Returns:
        The typed rows and the null/type/format/enum/range violations.
    """
    nulls = pa.array(sorted({*contract.delivery.null_values, ""}), pa.string())
    keys = set(contract.primary_key)
    typed: dict[str, pa.ChunkedArray | pa.Array] = {}
    findings = _Findings(raw)
    times: dict[str, tuple[pa.ChunkedArray, str]] = {}
    missing_of: dict[str, np.ndarray] = {}
    for column in contract.columns:
        original = raw.column(column.name)
        text = pc.utf8_trim_whitespace(original)
        missing = _flags(pc.or_(pc.is_null(original), pc.is_in(text, value_set=nulls)))
        missing_of[column.name] = missing
        if not column.nullable:
            rule = "null_key" if column.name in keys else "not_null"
            what = "key column" if column.name in keys else "column"
            message = f"{what} {column.name} is empty; the contract says nullable: false"
            findings.add(missing, column, rule, message)
        if column.type == "string":
            typed[column.name] = _type_string(
                column, original=original, text=text, missing=missing, findings=findings
            )
        elif column.type in ("int", "float"):
            typed[column.name] = _type_number(column, text=text, missing=missing, findings=findings)
        elif column.type == "bool":
            typed[column.name] = _type_bool(column, text=text, missing=missing, findings=findings)
        else:
            # Dates and timestamps of every column go through DuckDB together, after this loop.
            times[column.name] = (
                pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), text),
                column.type,
            )
    for name, parsed in _parse_times(times, raw.num_rows).items():
        column = contract.column(name)
        typed[name] = parsed
        findings.add(
            ~missing_of[name] & ~_flags(pc.is_valid(parsed)), column, "type", _TYPE_EXPECTED[column.type]
        )
    schema = lake_schema(contract)
    table = pa.table([_chunked(typed[f.name]).cast(f.type) for f in schema], schema=schema)
    return ParsedBatch(typed=table, violations=_concat(findings.frames))


def _type_string(
    column: Column,
    *,
    original: pa.ChunkedArray,
    text: pa.ChunkedArray,
    missing: np.ndarray,
    findings: _Findings,
) -> pa.ChunkedArray:
    """A string column after the contract's `normalize`, checked against its `format` and enum."""
    value = {"trim": text, "trim_lower": pc.utf8_lower(text)}.get(column.normalize or "", original)
    value = pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), value)
    if column.format is not None:
        matches = pc.match_substring_regex(value, f"^(?:{column.format})$")
        findings.add(_flags(pc.invert(matches)), column, "format", f"expected text matching {column.format}")
    if column.enum is not None:
        known = pc.is_in(value, value_set=pa.array(column.enum, pa.string()))
        bad = _flags(pc.invert(known)) & ~missing
        findings.add(bad, column, "accepted_values", f"expected one of {', '.join(column.enum)}")
    return value


def _type_number(
    column: Column, *, text: pa.ChunkedArray, missing: np.ndarray, findings: _Findings
) -> pa.Array:
    """An int or float column: plain decimal text only, whole numbers for ints, within min/max."""
    shaped = _flags(pc.match_substring_regex(text, _NUMBER)) & ~missing
    numbers = pc.cast(pc.if_else(pa.array(shaped), text, pa.scalar(None, pa.string())), pa.float64())
    values = numbers.to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        ok = shaped & np.isfinite(values)
        if column.type == "int":
            ok &= (np.floor(values) == values) & (np.abs(values) < 2**53)
    values = np.where(ok, values, np.nan)
    findings.add(~missing & ~ok, column, "type", _TYPE_EXPECTED[column.type])
    if column.minimum is not None or column.maximum is not None:
        low = -np.inf if column.minimum is None else column.minimum
        high = np.inf if column.maximum is None else column.maximum
        with np.errstate(invalid="ignore"):
            out = ok & ((values < low) | (values > high))
        findings.add(out, column, "range", f"expected a value between {_fmt(low)} and {_fmt(high)}")
    if column.type == "int":
        return pa.array(np.where(ok, values, 0).astype(np.int64), mask=~ok)
    return pa.array(values, mask=~ok)


def _type_bool(
    column: Column, *, text: pa.ChunkedArray, missing: np.ndarray, findings: _Findings
) -> pa.Array:
    """A boolean column: true/false and their usual spellings, any case."""
    lowered = pc.utf8_lower(text)
    is_true = _flags(pc.is_in(lowered, value_set=pa.array(sorted(_TRUE))))
    is_false = _flags(pc.is_in(lowered, value_set=pa.array(sorted(_FALSE))))
    ok = is_true | is_false
    findings.add(~missing & ~ok, column, "type", _TYPE_EXPECTED["bool"])
    return pa.array(is_true, mask=~ok)


def future_violations(
    typed: pa.Table, raw: pa.Table, contract: SourceContract, *, now: datetime
) -> pd.DataFrame:
    """Timestamps that lie ahead of when they were recorded by more than the contract's clock skew.

    `ingested_at` may not be after `now`; the event time may not be after the row's own
    `ingested_at` nor after `now` (unless the contract allows future event times, e.g.
    scheduled invoices).

    Args:
        typed: The typed rows (see `parse_batch`).
        raw: The raw rows (for the reported value).
        contract: The source's contract.
        now: The ingestion time (UTC-aware).

    Returns:
        The violations found.
    """
    skew = contract.quality.clock_skew
    skew_us = skew.total_seconds() * 1e6
    now_us = now.timestamp() * 1e6
    ingested_col = contract.schema_.ingested_at
    ingested = epoch_micros(typed.column(ingested_col))
    found = []
    with np.errstate(invalid="ignore"):
        ahead = ingested > now_us + skew_us
    if ahead.any():
        message = (
            f"{ingested_col} is after the ingestion time {now:%Y-%m-%dT%H:%M:%SZ} by more than {_dur(skew)}"
        )
        found.append(_violations(np.flatnonzero(ahead), ingested_col, "future_timestamp", raw, message))
    event_col = contract.schema_.event_time
    if contract.quality.future_event_time == "reject" and event_col != ingested_col:
        event = epoch_micros(typed.column(event_col))
        reference = np.fmin(ingested, now_us)
        with np.errstate(invalid="ignore"):
            bad = event > reference + skew_us
        if bad.any():
            message = (
                f"{event_col} is after the row's {ingested_col} (or the ingestion time) "
                f"by more than {_dur(skew)}"
            )
            found.append(_violations(np.flatnonzero(bad), event_col, "future_timestamp", raw, message))
    return _concat(found)


def reference_violations(
    typed: pa.Table, raw: pa.Table, contract: SourceContract, *, known: dict[str, pa.Array]
) -> pd.DataFrame:
    """Values of `references` columns that name no known record (e.g. an unknown customer).

    Args:
        typed: The typed rows.
        raw: The raw rows.
        contract: The source's contract.
        known: `"<source>.<column>"` → the values that exist in the lake (which already holds
            this run's accepted rows of sources ingested before).

    Returns:
        The violations found, rule `unknown_<referenced column without _id>`.
    """
    found = []
    for column in contract.columns:
        if column.references is None:
            continue
        values = typed.column(column.name)
        target = known.get(column.references, pa.array([], pa.string()))
        present = pc.is_valid(values)
        member = pc.fill_null(pc.is_in(values, value_set=target), False)
        bad = pc.and_(present, pc.invert(member)).to_numpy(zero_copy_only=False)
        if bad.any():
            ref_source, ref_column = column.references.split(".", 1)
            rule = f"unknown_{ref_column.removesuffix('_id')}"
            message = (
                f"{column.name} is not a {ref_source}.{ref_column} in the lake (ingest {ref_source} first; "
                f"a {ref_source} row quarantined in this run does not count)"
            )
            found.append(_violations(np.flatnonzero(bad), column.name, rule, raw, message))
    return _concat(found)


def quarantine_frame(
    raw: pa.Table,
    violations: pd.DataFrame,
    *,
    file: str,
    contract: SourceContract,
    reject_rest: str | None = None,
) -> pd.DataFrame:
    """The quarantine rows: each broken row once, with its first violation and all of them listed.

    Args:
        raw: The raw rows as delivered.
        violations: All violations of the batch.
        file: The landing file, as reported in `_file`.
        contract: The source's contract (its `pii: true` columns are redacted).
        reject_rest: When the whole batch failed, the reason given to rows without a violation of
            their own (rule `batch_rejected`); every row is then quarantined.

    Returns:
        `_file, _row` (1-based data row), `_column, _rule, _value, _message, _reasons`, then the
        original columns as text, ordered by `_row`.
    """
    rank = {rule: i for i, rule in enumerate(RULE_ORDER)}
    position = {name: i for i, name in enumerate(raw.column_names)}
    ordered = violations.assign(
        _rule_rank=violations["rule"].map(rank).fillna(rank["unknown_reference"]),
        _col_rank=violations["column"].map(position).fillna(-1),
    ).sort_values(["row", "_rule_rank", "_col_rank"], kind="stable")
    first = ordered.drop_duplicates("row").set_index("row")[["column", "rule", "value", "message"]]
    reasons = pd.Series(
        (ordered["column"] + ":" + ordered["rule"]).to_numpy(), index=ordered["row"].to_numpy()
    )
    # Most broken rows break one rule; only the others need a (slow, per-group) join.
    several = reasons.index.duplicated(keep=False)
    if several.any():
        joined = reasons[several].groupby(level=0).agg("; ".join)
        reasons = pd.concat([reasons[~several], joined])
    if reject_rest is not None:
        rest = np.setdiff1d(np.arange(raw.num_rows), first.index.to_numpy())
        extra = pd.DataFrame(
            {"column": "", "rule": "batch_rejected", "value": None, "message": reject_rest}, index=rest
        )
        first = pd.concat([first, extra]).sort_index() if len(first) else extra
        reasons = pd.concat([reasons, pd.Series("batch_rejected", index=rest)])
    rows = first.index.to_numpy(dtype=np.int64)
    pii = set(contract.pii_columns)
    value = first["value"].where(~first["column"].isin(pii), REDACTED)
    text = pd.StringDtype("python")
    out = pd.DataFrame(
        {
            "_file": pd.array([file] * len(rows), dtype=text),
            "_row": rows + 1,
            "_column": pd.array(first["column"].to_numpy(dtype=object), dtype=text),
            "_rule": pd.array(first["rule"].to_numpy(dtype=object), dtype=text),
            "_value": pd.array(value.to_numpy(dtype=object), dtype=text),
            "_message": pd.array(first["message"].to_numpy(dtype=object), dtype=text),
            "_reasons": pd.array(reasons.reindex(rows).to_numpy(dtype=object), dtype=text),
        }
    )
    taken = raw.take(pa.array(rows, pa.int64()))
    for name in raw.column_names:
        original = taken.column(name)
        if name in pii:
            original = pc.if_else(pc.is_valid(original), pa.scalar(REDACTED), pa.scalar(None, pa.string()))
        out[f"_orig{name}" if name in REASON_COLUMNS else name] = original.to_pandas(
            types_mapper={pa.string(): text}.get
        ).to_numpy(dtype=object)
    return out.astype({c: text for c in out.columns if c != "_row"})


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty_violations()


def _fmt(value: float) -> str:
    return "-inf" if value == -np.inf else "inf" if value == np.inf else f"{value:g}"


def _dur(value: timedelta) -> str:
    minutes = int(value.total_seconds() // 60)
    return f"{minutes // 60}h" if minutes % 60 == 0 and minutes >= 60 else f"{minutes}m"
