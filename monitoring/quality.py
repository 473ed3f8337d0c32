"""The feature contract's data-quality rules, applied to a feature table or a training set.

Rules (all figures and thresholds come from `contracts/features/*.yaml`):

- `null_rate` per feature: share of nulls ≤ `data_quality.null_rate_max`.
- `range` per numeric feature: no value outside the feature's `min`..`max`;
  `allowed_values` per categorical feature: no value outside the list.
- `unique_key`: no two rows share `data_quality.unique_key` (feature tables only).
- `consistency`: each `data_quality.consistency` rule (a pandas expression such as
  `orders_30d >= distinct_order_days_30d`) holds on every row.
- `outliers` per numeric feature: values above the `outliers.percentile` quantile of the same column
  are *flagged* (reported, not failed) when the contract's action is `flag`.
- `freshness`: now - the oldest per-customer latest `snapshot_ts` ≤ `data_quality.freshness_max`.
  The figure is taken from the latest materialized snapshot of every customer (what each refresh also
  loads into the online store, so the two agree at every refresh): the oldest one bounds how stale any
  served customer can be, without opening the online store (and importing Feast) for a check.
- `join_match_rate` / `join_fanout` (training sets): the share of rows whose profile was found (not
  defaulted, from the contract's `entity.join.default_flag` column) ≥ `match_rate_min`, and rows per
  entity row ≤ `fanout_max`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from churnops.contracts.feature_contract import FeatureContract
from churnops.errors import ChurnopsError
from churnops.storage.atomic import write_atomic

Outcome = Literal["pass", "fail", "flag", "skip"]


class QualityInputError(ChurnopsError, ValueError):
    """The frame cannot be checked at all (no rows, no feature columns, bad timestamps)."""


@dataclass(frozen=True)
class QualityCheck:
    """One rule applied to one column (or to the whole frame).

    Attributes:
        rule: The rule's name (`null_rate`, `range`, `unique_key`, ...).
        target: The column or rule it applies to.
        figure: The measured value (a share, a count, hours).
        threshold: The bound it is compared with.
        outcome: `pass`, `fail`, `flag` (reported, not failed) or `skip` (cannot be measured here).
        message: A sentence naming what was found (the first offending row for failures).
    """

    rule: str
    target: str
    figure: float
    threshold: float
    outcome: Outcome
    message: str


@dataclass(frozen=True)
class QualityReport:
    """Every check on one frame.

    Attributes:
        scope: `feature_table` or `training_set`.
        rows: Rows checked.
        checks: The checks, in rule order.
    """

    scope: str
    rows: int
    checks: tuple[QualityCheck, ...]

    @property
    def passed(self) -> bool:
        """True when no check failed (flags and skips do not fail)."""
        return not self.failures

    @property
    def failures(self) -> list[QualityCheck]:
        """The failed checks."""
        return [c for c in self.checks if c.outcome == "fail"]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form.

        Returns:
            A JSON-serialisable mapping.
        """
        return {
            "scope": self.scope,
            "rows": self.rows,
            "passed": self.passed,
            "checks": [
                {
                    "rule": c.rule,
                    "target": c.target,
                    "figure": c.figure,
                    "threshold": c.threshold,
                    "outcome": c.outcome,
                    "message": c.message,
                }
                for c in self.checks
            ],
        }


def null_rate_checks(*, frame: pd.DataFrame, contract: FeatureContract) -> list[QualityCheck]:
    """Null share of every contract feature against `data_quality.null_rate_max`.

    Args:
        frame: The rows to check (must have every contract feature).
        contract: The feature contract.

    Returns:
        One check per feature.
    """
    limit = contract.data_quality.null_rate_max
    checks = []
    for name in contract.feature_names:
        rate = float(frame[name].isna().mean())
        checks.append(
            QualityCheck(
                "null_rate",
                name,
                rate,
                limit,
                "pass" if rate <= limit else "fail",
                f"{rate:.2%} of {name} is null (max {limit:.2%})",
            )
        )
    return checks


def range_checks(*, frame: pd.DataFrame, contract: FeatureContract) -> list[QualityCheck]:
    """Values outside each numeric feature's min..max, or outside a categorical feature's allowed values.

    Args:
        frame: The rows to check.
        contract: The feature contract.

    Returns:
        One check per feature that declares bounds or allowed values; the figure is the count of
        offending (non-null) values.
    """
    checks = []
    for feature in contract.features:
        values = frame[feature.name]
        if feature.is_numeric and (feature.min is not None or feature.max is not None):
            numbers = pd.to_numeric(values, errors="coerce")
            low = -float("inf") if feature.min is None else feature.min
            high = float("inf") if feature.max is None else feature.max
            bad = (numbers < low) | (numbers > high) | (numbers.isna() & values.notna())
            bounds = f"[{_num(low)}, {_num(high)}]"
            threshold = 0.0
        elif feature.allowed_values is not None:
            bad = values.notna() & ~values.astype(str).isin(feature.allowed_values)
            bounds = str(feature.allowed_values)
            threshold = 0.0
        else:
            continue
        count = int(bad.sum())
        if count:
            row = int(bad.to_numpy().nonzero()[0][0])
            message = (
                f"{count} value(s) of {feature.name} outside {bounds}; first at row {row}: "
                f"{_plain(values.iloc[row])!r}"
            )
        else:
            message = f"every {feature.name} value is within {bounds}"
        checks.append(
            QualityCheck("range", feature.name, float(count), threshold, "fail" if count else "pass", message)
        )
    return checks


def unique_key_check(*, frame: pd.DataFrame, contract: FeatureContract) -> QualityCheck:
    """No two rows share the contract's `data_quality.unique_key`.

    Args:
        frame: The rows to check.
        contract: The feature contract.

    Returns:
        The check; the figure is the number of rows that repeat an earlier row's key.
    """
    key = contract.data_quality.unique_key
    target = "+".join(key)
    missing = [c for c in key if c not in frame.columns]
    if missing:
        return QualityCheck(
            "unique_key", target, float("nan"), 0.0, "fail", f"the key column(s) {missing} are missing"
        )
    duplicated = frame.duplicated(subset=key, keep="first")
    count = int(duplicated.sum())
    if count:
        row = int(duplicated.to_numpy().nonzero()[0][0])
        example = {c: str(frame[c].iloc[row]) for c in key}
        message = f"{count} row(s) repeat a key; first at row {row}: {example}"
    else:
        message = f"every {target} is unique"
    return QualityCheck("unique_key", target, float(count), 0.0, "fail" if count else "pass", message)


def consistency_checks(*, frame: pd.DataFrame, contract: FeatureContract) -> list[QualityCheck]:
    """Each `data_quality.consistency` rule holds on every row.

    Args:
        frame: The rows to check.
        contract: The feature contract.

    Returns:
        One check per rule; the figure is the count of violating rows.
    """
    checks = []
    for rule in contract.data_quality.consistency:
        try:
            holds = frame.eval(rule.rule, engine="python")
        except (KeyError, NameError, SyntaxError, ValueError, TypeError) as exc:
            raise QualityInputError(
                f"consistency rule {rule.name!r} ({rule.rule}) cannot be evaluated on this frame: {exc}"
            ) from exc
        # A rule on a null operand is the null-rate check's business, not a violation here.
        broken = ~holds.astype(bool) & frame[_operands(rule.rule, frame)].notna().all(axis=1)
        count = int(broken.sum())
        if count:
            row = int(broken.to_numpy().nonzero()[0][0])
            values = {c: _plain(frame[c].iloc[row]) for c in _operands(rule.rule, frame)}
            message = f"{count} row(s) break {rule.rule}; first at row {row}: {values}"
        else:
            message = f"{rule.rule} holds on every row"
        checks.append(
            QualityCheck("consistency", rule.name, float(count), 0.0, "fail" if count else "pass", message)
        )
    return checks


def outlier_checks(*, frame: pd.DataFrame, contract: FeatureContract) -> list[QualityCheck]:
    """Values above each numeric feature's `outliers.percentile` quantile (flagged by default).

    Args:
        frame: The rows to check.
        contract: The feature contract.

    Returns:
        One check per numeric feature; the figure is the count above the quantile, the threshold the
        quantile itself.
    """
    policy = contract.data_quality.outliers
    checks = []
    for name in contract.numeric_features:
        numbers = pd.to_numeric(frame[name], errors="coerce").dropna()
        if numbers.empty:
            continue
        cut = float(numbers.quantile(policy.percentile))
        count = int((numbers > cut).sum())
        outcome: Outcome = "pass" if count == 0 else ("flag" if policy.action == "flag" else "fail")
        checks.append(
            QualityCheck(
                "outliers",
                name,
                float(count),
                cut,
                outcome,
                f"{count} value(s) of {name} above its {policy.percentile:.1%} quantile {_num(cut)}",
            )
        )
    return checks


def freshness_check(
    *, snapshot_ts: pd.Series, contract: FeatureContract, now: datetime, customer_ids: pd.Series | None = None
) -> QualityCheck:
    """Age of the stalest customer's latest snapshot against `data_quality.freshness_max`.

    Args:
        snapshot_ts: Snapshot times (UTC); one or more per customer.
        contract: The feature contract.
        now: The reference time (UTC, timezone-aware).
        customer_ids: The customer of each snapshot; when given, each customer's latest snapshot is
            taken first, otherwise the values are already one per customer.

    Returns:
        The check; figure and threshold are in hours.

    Raises:
        QualityInputError: When there is no snapshot time, or `now` is naive.
    """
    if now.tzinfo is None:
        raise QualityInputError("freshness needs a timezone-aware 'now' (UTC)")
    limit = contract.data_quality.freshness_max.total_seconds() / 3600
    times = pd.to_datetime(snapshot_ts, utc=True)
    if customer_ids is not None:
        times = times.groupby(customer_ids.to_numpy()).max()
    times = times.dropna()
    if times.empty:
        raise QualityInputError("freshness needs at least one snapshot_ts; the column is empty")
    oldest = times.min()
    age = (pd.Timestamp(now).tz_convert("UTC") - oldest).total_seconds() / 3600
    return QualityCheck(
        "freshness",
        "snapshot_ts",
        age,
        limit,
        "pass" if age <= limit else "fail",
        f"the stalest customer's latest snapshot is {oldest.isoformat()}, "
        f"{age:.2f} h old (max {_num(limit)} h)",
    )


def join_checks(
    *, frame: pd.DataFrame, contract: FeatureContract, entity_rows: int | None = None
) -> list[QualityCheck]:
    """Join match rate and fanout of a training set.

    Args:
        frame: The training set.
        contract: The feature contract (`entity.join.default_flag`, `match_rate_min`, `fanout_max`).
        entity_rows: Rows of the entity frame the set was built from; when None, fanout is measured
            as rows per distinct (join key, timestamp) pair.

    Returns:
        The match-rate and fanout checks (`skip` when the frame lacks what a figure needs).
    """
    policy = contract.entity.join
    checks = []
    flag = policy.default_flag
    if flag in frame.columns:
        rate = 1.0 - float(frame[flag].fillna(True).astype(bool).mean()) if len(frame) else 0.0
        checks.append(
            QualityCheck(
                "join_match_rate",
                contract.entity.join_key,
                rate,
                policy.match_rate_min,
                "pass" if rate >= policy.match_rate_min else "fail",
                f"{rate:.2%} of rows found a profile (min {policy.match_rate_min:.0%})",
            )
        )
    else:
        checks.append(
            QualityCheck(
                "join_match_rate",
                contract.entity.join_key,
                float("nan"),
                policy.match_rate_min,
                "skip",
                f"no {flag!r} column: the match rate cannot be measured",
            )
        )
    key = [c for c in (contract.entity.join_key, "event_timestamp") if c in frame.columns]
    if entity_rows is None and len(key) == 2:
        entity_rows = len(frame.drop_duplicates(subset=key))
    if entity_rows:
        fanout = len(frame) / entity_rows
        checks.append(
            QualityCheck(
                "join_fanout",
                contract.entity.join_key,
                fanout,
                policy.fanout_max,
                "pass" if fanout <= policy.fanout_max else "fail",
                f"{len(frame)} rows for {entity_rows} entity rows: "
                f"fanout {fanout:.4f} (max {policy.fanout_max})",
            )
        )
    else:
        checks.append(
            QualityCheck(
                "join_fanout",
                contract.entity.join_key,
                float("nan"),
                policy.fanout_max,
                "skip",
                f"neither the entity row count nor ({contract.entity.join_key}, event_timestamp) is known",
            )
        )
    return checks


def check_feature_table(
    *,
    frame: pd.DataFrame,
    contract: FeatureContract,
    now: datetime,
    label: str = "feature table",
    ended: frozenset[str] = frozenset(),
) -> QualityReport:
    """Every rule for a feature table (one row per customer per snapshot).

    Args:
        frame: The table, with the contract's key columns and features.
        contract: The feature contract.
        now: The reference time for freshness (UTC, timezone-aware).
        label: How to name the frame in errors.
        ended: Customers the contract's population has ended by `now` (churned): their last
            snapshot stays where their churn stopped it, so freshness leaves them out.

    Returns:
        The report.

    Raises:
        QualityInputError: When the frame has no rows or lacks feature columns.
    """
    _require(frame=frame, contract=contract, label=label, extra=["snapshot_ts"])
    checks = [
        *null_rate_checks(frame=frame, contract=contract),
        *range_checks(frame=frame, contract=contract),
        unique_key_check(frame=frame, contract=contract),
        *consistency_checks(frame=frame, contract=contract),
        *outlier_checks(frame=frame, contract=contract),
        _freshness_of_population(frame=frame, contract=contract, now=now, ended=ended),
    ]
    return QualityReport(scope="feature_table", rows=len(frame), checks=tuple(checks))


def _freshness_of_population(
    *, frame: pd.DataFrame, contract: FeatureContract, now: datetime, ended: frozenset[str]
) -> QualityCheck:
    key = contract.entity.join_key
    served = frame[~frame[key].isin(ended)] if ended and key in frame.columns else frame
    return freshness_check(
        snapshot_ts=served["snapshot_ts"], customer_ids=served.get(key), contract=contract, now=now
    )


def check_training_set(
    *,
    frame: pd.DataFrame,
    contract: FeatureContract,
    entity_rows: int | None = None,
    label: str = "training set",
) -> QualityReport:
    """The rules that apply to a training set: nulls, ranges, consistency, outliers, join quality.

    Args:
        frame: The training set (contract features, `label`, optionally the default flag).
        contract: The feature contract.
        entity_rows: Rows of the entity frame it was built from, when known.
        label: How to name the frame in errors.

    Returns:
        The report.

    Raises:
        QualityInputError: When the frame has no rows or lacks feature columns.
    """
    _require(frame=frame, contract=contract, label=label, extra=[])
    checks = [
        *null_rate_checks(frame=frame, contract=contract),
        *range_checks(frame=frame, contract=contract),
        *consistency_checks(frame=frame, contract=contract),
        *outlier_checks(frame=frame, contract=contract),
        *join_checks(frame=frame, contract=contract, entity_rows=entity_rows),
    ]
    return QualityReport(scope="training_set", rows=len(frame), checks=tuple(checks))


def write_quality_json(*, reports: list[QualityReport], path: Path) -> Path:
    """Write the reports as one JSON document atomically.

    Args:
        reports: The reports to write.
        path: Where to write (parent folders are created).

    Returns:
        The path written.
    """
    document = {"passed": all(r.passed for r in reports), "reports": [r.to_dict() for r in reports]}
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(document, indent=2) + "\n"))


def _require(*, frame: pd.DataFrame, contract: FeatureContract, label: str, extra: list[str]) -> None:
    if frame.empty:
        raise QualityInputError(f"{label} has no rows: there is nothing to check")
    missing = [c for c in [*contract.feature_names, *extra] if c not in frame.columns]
    if missing:
        raise QualityInputError(
            f"{label} lacks the column(s) {missing}; it has {sorted(map(str, frame.columns))}"
        )


def _operands(expression: str, frame: pd.DataFrame) -> list[str]:
    tokens = expression.replace("(", " ").replace(")", " ").split()
    return [t for t in tokens if t in frame.columns]


def _plain(value: object) -> object:
    # NumPy scalars print as `np.int64(32)`; messages should show `32`.
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _num(value: float) -> str:
    return f"{value:g}"
