"""The batch-level decisions of ingestion: schema, live or backfill, contract checks, quarantine rate.

Any failed check rejects the whole batch: it goes to quarantine with its reasons and nothing
reaches the lake. The checks shared with the lake (completeness, uniqueness, freshness, the
`testing:` list) live in `churnops.ingestion.checks`; this module adds the two that only make
sense for a delivery (`schema`, `quarantine_rate`) and decides which mode a batch runs in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from churnops.contracts.source_contract import SourceContract
from churnops.ingestion.batch import Mode
from churnops.ingestion.checks import CheckResult, duckdb_connection, run_checks


def schema_check(contract: SourceContract, columns: Sequence[str]) -> CheckResult | None:
    """The failed `schema` check of a delivery whose columns differ from the contract's.

    Args:
        contract: The source's contract.
        columns: The delivery's column names.

    Returns:
        The failed check naming the missing and unexpected columns, or None when the
        delivery has exactly the contract's columns (in any order).
    """
    missing = [c for c in contract.column_names if c not in columns]
    unexpected = [c for c in columns if c not in contract.column_names]
    if not missing and not unexpected:
        return None
    parts = [
        f"missing column(s) {', '.join(missing)}" if missing else "",
        f"unexpected column(s) {', '.join(unexpected)}" if unexpected else "",
    ]
    message = (
        f"schema: {'; '.join(p for p in parts if p)} (a missing or renamed column); expected exactly "
        f"{', '.join(contract.column_names)}"
    )
    return CheckResult(contract.name, "schema", False, float(len(missing) + len(unexpected)), 0.0, message)


def decide_mode(valid: pa.Table, contract: SourceContract, *, backfill: bool | None) -> tuple[Mode, str]:
    """Whether a batch is a backfill (freshness skipped) or live, and why.

    Args:
        valid: The rows that passed the row-level rules.
        contract: The source's contract.
        backfill: True or False when the caller decided; None to decide from the rows: a batch
            whose `ingested_at` spans more than the contract's `backfill_span` is a backfill.

    Returns:
        The mode and the reason for a backfill ("" for live).
    """
    if backfill is True:
        return "backfill", "requested (--backfill)"
    if backfill is False or valid.num_rows == 0:
        return "live", ""
    # ingested_at, not the event time: a live delivery's rows were all ingested within one
    # delivery interval, however late some of its events are; history was ingested over its span.
    bounds = pc.min_max(valid.column(contract.schema_.ingested_at)).as_py()
    span = bounds["max"] - bounds["min"]
    limit = contract.quality.freshness.backfill_span
    if span > limit:
        return "backfill", (
            f"its {contract.schema_.ingested_at} spans {span.total_seconds() / 86400:.1f} days, "
            "more than the "
            f"{limit.total_seconds() / 86400:g}d of a live delivery"
        )
    return "live", ""


def contract_checks(
    typed: pa.Table, valid: pa.Table, contract: SourceContract, *, now: datetime, mode: Mode, reason: str
) -> list[CheckResult]:
    """The contract's checks on the delivery as parsed; freshness only on rows that passed row rules.

    Args:
        typed: Every row of the delivery, typed.
        valid: The rows that passed the row-level rules.
        contract: The source's contract.
        now: The ingestion time (UTC-aware).
        mode: `backfill` skips freshness.
        reason: Why the batch is a backfill, for the skipped check's message.

    Returns:
        One result per check (see `run_checks`).
    """
    con = duckdb_connection()
    try:
        con.register(contract.name, typed)
        con.register("_valid_rows", valid)
        return run_checks(
            con,
            contract,
            now=now,
            freshness="skip" if mode == "backfill" else "enforce",
            skip_reason=f"backfill: {reason}",
            freshness_relation="_valid_rows",
        )
    finally:
        con.close()


def quarantine_rate_check(contract: SourceContract, *, broken: int, received: int) -> CheckResult:
    """Whether the share of rows that broke a row-level rule stays within the contract's maximum.

    Args:
        contract: The source's contract (`quality.max_quarantined_percent`).
        broken: Rows with at least one row-level violation.
        received: Data rows in the delivery (an empty delivery has a rate of 0%).

    Returns:
        The `quarantine_rate` check, figure in percent.
    """
    percent = 100.0 * broken / received if received else 0.0
    limit = contract.quality.max_quarantined_percent
    passed = bool(percent <= limit)
    return CheckResult(
        contract.name,
        "quarantine_rate",
        passed,
        float(percent),
        limit,
        f"quarantine_rate: {percent:.2f}% of rows broke a row-level rule, "
        f"{'within' if passed else 'above'} the maximum {limit:g}%",
    )
