"""PSI drift per feature with Evidently, graded by the feature contract's thresholds.

How Evidently 0.7 bins (read from `evidently/legacy/calculations/stattests/utils.py`,
`get_binned_data`, and `legacy/calculations/data_drift.py`, `get_one_column_drift`) — it is
*not* the textbook decile PSI:

1. NaN and ±inf are dropped from each side first; row shares are taken over the remaining values.
2. A numeric column whose *reference* side has more than 20 distinct values gets equal-width
   bins: `numpy.histogram_bin_edges(concat(reference, current), bins="sturges")`, i.e.
   `ceil(log2(n_ref + n_cur)) + 1` bins spanning the min..max of both sides combined (the last bin
   is closed on the right). The `n_bins` argument of Evidently's PSI is ignored. A textbook PSI
   instead cuts the reference into ten quantile (decile) buckets, so each reference bucket holds
   10%; Evidently's equal-width bins can be nearly empty in the tails and crowded in the body.
3. Any other column — categorical, or numeric with ≤ 20 distinct reference values (counts such as
   `active_days_30d` or `orders_30d` usually are) — gets one bin per distinct value seen on either side.
4. Empty bins are floored before the logarithm: on each side, a zero share becomes 0.0001, or
   (smallest non-zero share) / 10⁶ when that smallest share is itself ≤ 0.0001.
5. PSI = Σ over bins of (ref_share - cur_share) · ln(ref_share / cur_share).

The grade comes from one Evidently test per feature (`psi_grade`, below): SUCCESS under warn,
WARNING at warn or above, FAIL at block or above; WARNING maps to `warn`, FAIL to `block`. (Two
stock tests, `lt(warn)` and `lt(block)`, would count a blocking feature twice in the Tests tab.)

The HTML report starts with a summary table (feature, PSI, status, threshold) and shows, per
feature, the reference and current distributions; Evidently's "data drift" tab, the column's mean
over row index, is dropped: a training set and a snapshot have no common row order.

`import evidently` costs seconds, so it happens inside `compute_drift` only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from churnops.contracts.feature_contract import FeatureContract
from churnops.errors import ChurnopsError
from churnops.storage.atomic import write_atomic

Status = Literal["ok", "warn", "block"]
Kind = Literal["numeric", "categorical"]

_SEVERITY: dict[str, int] = {"ok": 0, "warn": 1, "block": 2}
# The statuses of the `psi_grade` test.
_GRADE: dict[str, Status] = {"WARNING": "warn", "FAIL": "block"}


class DriftInputError(ChurnopsError, ValueError):
    """The reference or current frame cannot be compared (missing column, no rows, wrong type)."""


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's PSI and grade.

    Attributes:
        feature: The feature's name.
        kind: `numeric` or `categorical` (as the contract types it).
        psi: Evidently's PSI between reference and current.
        status: `ok`, `warn` (PSI ≥ warn threshold) or `block` (PSI ≥ block threshold).
        reference_values: Non-null reference values the PSI used.
        current_values: Non-null current values the PSI used.
    """

    feature: str
    kind: Kind
    psi: float
    status: Status
    reference_values: int
    current_values: int


@dataclass(frozen=True)
class DriftResult:
    """Drift of every monitored feature between a reference and a current frame.

    Attributes:
        features: One entry per feature, in contract order.
        warn: PSI at or above which a feature warns.
        block: PSI at or above which a feature blocks promotion.
        reference_rows: Rows in the reference frame.
        current_rows: Rows in the current frame.
    """

    features: tuple[FeatureDrift, ...]
    warn: float
    block: float
    reference_rows: int
    current_rows: int

    @property
    def status(self) -> Status:
        """The worst feature status (`ok` when nothing warns or blocks)."""
        worst = max((f.status for f in self.features), key=_SEVERITY.__getitem__, default="ok")
        return worst

    @property
    def blocking(self) -> list[str]:
        """Names of the features whose PSI reaches the block threshold."""
        return [f.feature for f in self.features if f.status == "block"]

    @property
    def warning(self) -> list[str]:
        """Names of the features whose PSI reaches the warn (but not the block) threshold."""
        return [f.feature for f in self.features if f.status == "warn"]

    def threshold_of(self, feature: FeatureDrift) -> float:
        """The threshold behind a feature's status: the one it crossed, or warn when it crossed none.

        Args:
            feature: One of this result's features.

        Returns:
            `block` for a blocking feature, `warn` otherwise.
        """
        return self.block if feature.status == "block" else self.warn

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary: thresholds, row counts, overall status and per-feature PSI.

        Returns:
            A JSON-serialisable mapping.
        """
        return {
            "method": "psi",
            "engine": "evidently",
            "status": self.status,
            "thresholds": {"warn": self.warn, "block": self.block},
            "rows": {"reference": self.reference_rows, "current": self.current_rows},
            "blocking": self.blocking,
            "warning": self.warning,
            "summary": [
                {"feature": f.feature, "psi": f.psi, "status": f.status, "threshold": self.threshold_of(f)}
                for f in self.features
            ],
            "features": [
                {
                    "feature": f.feature,
                    "kind": f.kind,
                    "psi": f.psi,
                    "status": f.status,
                    "reference_values": f.reference_values,
                    "current_values": f.current_values,
                }
                for f in self.features
            ],
        }


@dataclass(frozen=True)
class DriftRun:
    """A drift result with the Evidently snapshot it was read from (for the HTML report).

    Attributes:
        result: The graded PSI figures.
        snapshot: Evidently's `Snapshot` of the report run.
    """

    result: DriftResult
    snapshot: Any


def monitored_features(*, contract: FeatureContract) -> tuple[list[str], list[str]]:
    """The features the contract's `drift.features` selects, less `drift.exclude`, split by kind.

    Args:
        contract: The feature contract.

    Returns:
        (numeric feature names, categorical feature names), each in contract order.
    """
    selected = contract.drift.features
    names = contract.feature_names if selected == "all" else list(selected)
    unknown = [n for n in names if n not in contract.feature_names]
    if unknown:
        raise DriftInputError(f"drift.features lists {unknown}, which the contract does not define")
    excluded = {x.feature for x in contract.drift.exclude}
    names = [n for n in names if n not in excluded]
    numeric = [n for n in names if n in contract.numeric_features]
    categorical = [n for n in names if n in contract.categorical_features]
    return numeric, categorical


def prepare_frame(
    *, frame: pd.DataFrame, numeric: list[str], categorical: list[str], label: str
) -> pd.DataFrame:
    """Check one side of the comparison and reduce it to the monitored columns.

    Args:
        frame: The reference or current data.
        numeric: Numeric feature columns it must have.
        categorical: Categorical feature columns it must have.
        label: How to name this frame in errors (e.g. its file path).

    Returns:
        The monitored columns: numeric ones as float64, categorical ones as strings (nulls kept).

    Raises:
        DriftInputError: When the frame has no rows, lacks a column, has a non-numeric value in a
            numeric column, or has no non-null value left in a column.
    """
    if frame.empty:
        raise DriftInputError(f"{label} has no rows: drift needs at least one row on each side")
    missing = [c for c in [*numeric, *categorical] if c not in frame.columns]
    if missing:
        raise DriftInputError(
            f"{label} lacks the feature column(s) {missing}; it has {sorted(map(str, frame.columns))}"
        )
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for column in numeric:
        values = pd.to_numeric(frame[column].reset_index(drop=True), errors="coerce")
        bad = values.isna() & frame[column].reset_index(drop=True).notna()
        if bad.any():
            row = int(bad.idxmax())
            raise DriftInputError(
                f"{label}, column {column!r}, row {row}: expected a number, got {frame[column].iloc[row]!r}"
            )
        out[column] = values.astype("float64")
    for column in categorical:
        values = frame[column].reset_index(drop=True)
        out[column] = values.where(values.isna(), values.astype(str)).astype(object)
    for column in out.columns:
        if out[column].replace([math.inf, -math.inf], math.nan).notna().sum() == 0:
            raise DriftInputError(f"{label}, column {column!r}: every value is null; nothing to compare")
    return out


def compute_drift(
    *,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    contract: FeatureContract,
    reference_label: str = "reference",
    current_label: str = "current",
) -> DriftRun:
    """PSI of every monitored feature with Evidently, graded against the contract's thresholds.

    Args:
        reference: The baseline (by default the challenger's training set).
        current: The data to compare (by default the latest snapshot of every active customer).
        contract: The feature contract (features, kinds, `drift.warn` / `drift.block`).
        reference_label: Name of the reference in error messages (e.g. its file).
        current_label: Name of the current frame in error messages.

    Returns:
        The graded figures and the Evidently snapshot.

    Raises:
        DriftInputError: When either frame cannot be compared (see `prepare_frame`).
    """
    numeric, categorical = monitored_features(contract=contract)
    ref = prepare_frame(frame=reference, numeric=numeric, categorical=categorical, label=reference_label)
    cur = prepare_frame(frame=current, numeric=numeric, categorical=categorical, label=current_label)
    warn, block = contract.drift.warn, contract.drift.block
    columns = [n for n in contract.feature_names if n in numeric or n in categorical]
    features, snapshot = psi_report(
        reference=ref, current=cur, columns=columns, categorical=categorical, warn=warn, block=block
    )
    result = DriftResult(
        features=features, warn=warn, block=block, reference_rows=len(reference), current_rows=len(current)
    )
    _shape_report(snapshot=snapshot, result=result)
    return DriftRun(result=result, snapshot=snapshot)


def psi_report(
    *,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    categorical: list[str],
    warn: float,
    block: float,
    **run: Any,
) -> tuple[tuple[FeatureDrift, ...], Any]:
    """Run Evidently's PSI on prepared frames and grade each column with its tests.

    Args:
        reference: The baseline, columns already typed (see `prepare_frame`); NaN is dropped per
            column, so frames padded with NaN compare each column over its own rows.
        current: The data to compare, typed the same way.
        columns: The columns to compare, in report order (numeric unless in `categorical`).
        categorical: Which of them are categorical.
        warn: PSI at or above which a column warns.
        block: PSI at or above which a column blocks.
        **run: Passed to Evidently's `Report.run` (`timestamp`, `metadata`, `tags`, `name`).

    Returns:
        One graded figure per column, and Evidently's snapshot.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    numeric = [c for c in columns if c not in categorical]
    definition = DataDefinition(
        numerical_columns=numeric, categorical_columns=[c for c in columns if c in categorical]
    )
    grade = _psi_grade_test()
    metrics = [
        ValueDrift(column=c, method="psi", threshold=block, tests=[grade(warn=warn, block=block)])
        for c in columns
    ]
    snapshot = Report(metrics, include_tests=True).run(
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        **run,
    )
    summary = snapshot.dict()
    psi_by_id = {m["id"]: (m["config"]["column"], float(m["value"])) for m in summary["metrics"]}
    status_by_column: dict[str, Status] = dict.fromkeys(columns, "ok")
    for test in summary["tests"]:
        column = psi_by_id[test["metric_config"]["metric_id"]][0]
        graded = _GRADE.get(test["status"], "ok")
        if _SEVERITY[graded] > _SEVERITY[status_by_column[column]]:
            status_by_column[column] = graded
    psi_by_column = dict(psi_by_id.values())
    features = tuple(
        FeatureDrift(
            feature=c,
            kind="numeric" if c in numeric else "categorical",
            psi=psi_by_column[c],
            status=status_by_column[c],
            reference_values=int(reference[c].notna().sum()),
            current_values=int(current[c].notna().sum()),
        )
        for c in columns
    )
    return features, snapshot


@cache
def _psi_grade_test() -> type:
    """Evidently's test class for one feature's PSI grade (built once: Evidently registers it).

    Returns:
        A `MetricTest` with fields `warn` and `block`: SUCCESS below warn, WARNING from warn,
        FAIL from block.
    """
    from evidently.core.metric_types import MetricTest, MetricTestResult, TestStatus

    class PsiGrade(MetricTest):
        warn: float
        block: float

        def to_test(self) -> Any:
            def grade(context: Any, metric: Any, value: Any) -> MetricTestResult:
                psi = float(value.value)
                status, word = (
                    (TestStatus.FAIL, "block")
                    if psi >= self.block
                    else (TestStatus.WARNING, "warn")
                    if psi >= self.warn
                    else (TestStatus.SUCCESS, "ok")
                )
                return MetricTestResult(
                    id="psi_grade",
                    name=f"{value.display_name}: PSI below {self.warn:g} (warn) and {self.block:g} (block)",
                    description=f"PSI {psi:.4f}: {word}",
                    status=status,
                    metric_config=metric.to_metric_config(),
                    test_config=self.dict(),
                )

            return grade

    return PsiGrade


def summary_rows(result: DriftResult) -> list[list[str]]:
    """The summary table's rows: feature, PSI, status, threshold (blocking features first).

    Args:
        result: The graded figures.

    Returns:
        One row of strings per feature, worst status first, then by PSI, highest first.
    """
    ordered = sorted(result.features, key=lambda f: (-_SEVERITY[f.status], -f.psi))
    return [[f.feature, f"{f.psi:.4f}", f.status, f"{result.threshold_of(f):g}"] for f in ordered]


def _shape_report(*, snapshot: Any, result: DriftResult) -> None:
    """Put the summary table first and keep only the distribution comparison of each feature.

    Evidently 0.7 renders the snapshot's `_widgets` list; a feature's tabs are shared with it.
    """
    from evidently.legacy.renderers.html_widgets import WidgetSize, table_data

    for widget in snapshot._widgets:
        if widget.tabs:
            widget.tabs = [tab for tab in widget.tabs if tab.title != "DATA DRIFT"]
    counts = f"{len(result.blocking)} block, {len(result.warning)} warn, {len(result.features)} features"
    summary = table_data(
        title=f"PSI drift summary: {counts} (warn ≥ {result.warn:g}, block ≥ {result.block:g}; "
        f"reference {result.reference_rows:,} rows, current {result.current_rows:,} rows)",
        column_names=["feature", "PSI", "status", "threshold"],
        data=summary_rows(result),
        size=WidgetSize.FULL,
    )
    snapshot._widgets.insert(0, summary)


def write_drift_json(*, result: DriftResult, path: Path) -> Path:
    """Write the JSON summary atomically.

    Args:
        result: The drift figures.
        path: Where to write (parent folders are created).

    Returns:
        The path written.
    """
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n"))


def write_drift_html(*, run: DriftRun, path: Path) -> Path:
    """Write Evidently's interactive HTML report atomically.

    Args:
        run: The drift run whose snapshot to render.
        path: Where to write (parent folders are created).

    Returns:
        The path written.
    """
    return write_atomic(path, lambda tmp: run.snapshot.save_html(str(tmp)))


def select_active(*, latest: pd.DataFrame, customers: pd.DataFrame, join_key: str) -> pd.DataFrame:
    """Keep the rows of customers whose latest customers record says `is_active`.

    Args:
        latest: The latest snapshot of every customer.
        customers: The `customers` source (one or more records per customer; the latest by
            `ingested_at` wins, as in the lake's deduplication).
        join_key: The customer id column.

    Returns:
        The rows of active customers, in their original order.

    Raises:
        DriftInputError: When `customers` lacks the id or `is_active` column.
    """
    missing = [c for c in (join_key, "is_active") if c not in customers.columns]
    if missing:
        raise DriftInputError(f"the customers source lacks the column(s) {missing}")
    records = customers
    if "ingested_at" in customers.columns:
        records = customers.sort_values("ingested_at", kind="stable")
    current = records.drop_duplicates(subset=join_key, keep="last")
    active = set(current.loc[current["is_active"].fillna(False).astype(bool), join_key])
    return latest[latest[join_key].isin(active)].reset_index(drop=True)
