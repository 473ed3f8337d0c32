"""The promotion gate's decision: may the `challenger` version of a registered model become `champion`?

The gate passes when all four checks pass:

1. `contracts` — the lake's source-contract checks pass (`ingestion.checks.check_lake`).
2. `quality` — the feature contract's data-quality rules pass on the current feature table and on
   the challenger's training set (`monitoring.quality`).
3. `drift` — no feature's PSI between the challenger's training set and the current features
   reaches the contract's block threshold (`monitoring.drift`).
4. `model` — the challenger is not worse than the champion on the same latest out-of-time window
   (the challenger run's `datasets/test.parquet`): its PR AUC is at least the champion's minus the
   contract's `promotion.tolerance`. With no champion yet, this check passes.

Pass → alias `champion` moves to the challenger. Fail → nothing moves, unless forced with a reason.

Everything here is pure: checks and decisions are made from plain values, reports and frames, and
nothing talks to MLflow (so the decision is testable without a registry). Reading and moving the
registry's aliases, logging to runs and auditing is `monitoring.registry`; gathering the inputs
and running the whole gate is `monitoring.promotion`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pandas as pd

from churnops.errors import ChurnopsError
from churnops.monitoring.audit import AuditCheck, AuditRecord
from churnops.monitoring.drift import DriftResult
from churnops.monitoring.quality import QualityReport
from churnops.training.names import CHAMPION, LABEL_COLUMN

MOVES_CHAMPION = ("promoted", "forced")


class GateError(ChurnopsError, RuntimeError):
    """The gate cannot run (no challenger, a missing artifact, an unusable request)."""


class ContractReport(Protocol):
    """The lake's source-contract report (see `ingestion.checks.check_lake`)."""

    @property
    def passed(self) -> bool: ...

    @property
    def results(self) -> Sequence[Any]: ...


@dataclass(frozen=True)
class GateCheck:
    """One of the gate's checks.

    Attributes:
        name: `contracts`, `quality`, `drift` or `model`.
        passed: Whether it passed.
        figure: The measured value (failed rules, max PSI, PR AUC difference; NaN when none).
        threshold: The bound compared with (NaN when none).
        detail: A sentence saying what was measured and why it passed or failed.
    """

    name: str
    passed: bool
    figure: float
    threshold: float
    detail: str

    def to_audit(self) -> AuditCheck:
        """The audit form of this check.

        Returns:
            The same fields as an `AuditCheck`.
        """
        return AuditCheck(self.name, self.passed, self.figure, self.threshold, self.detail)


@dataclass(frozen=True)
class Versions:
    """The registry state the gate looks at.

    Attributes:
        model: The registered model's name.
        challenger: The challenger's version.
        challenger_run_id: The run that produced the challenger.
        champion: The champion's version, or None before the first promotion.
    """

    model: str
    challenger: str
    challenger_run_id: str
    champion: str | None


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided and why.

    Attributes:
        versions: The registry state at decision time.
        checks: The gate's checks.
        decision: `promoted`, `forced`, `refused` or `unchanged` (the challenger already is champion).
        dry_run: True when nothing was (or will be) moved or recorded.
        reason: The operator's reason (required to force).
        champion_after: The champion once the decision is applied.
    """

    versions: Versions
    checks: tuple[GateCheck, ...]
    decision: str
    dry_run: bool
    reason: str | None
    champion_after: str | None = field(default=None)

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[GateCheck]:
        """The checks that failed."""
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the gate result logged to MLflow).

        Returns:
            A JSON-serialisable mapping.
        """
        return {
            "model": self.versions.model,
            "challenger": self.versions.challenger,
            "champion_before": self.versions.champion,
            "champion_after": self.champion_after,
            "decision": self.decision,
            "passed": self.passed,
            "dry_run": self.dry_run,
            "reason": self.reason,
            "checks": [
                {
                    "name": c.name,
                    "passed": c.passed,
                    "figure": None if math.isnan(c.figure) else c.figure,
                    "threshold": None if math.isnan(c.threshold) else c.threshold,
                    "detail": c.detail,
                }
                for c in self.checks
            ],
        }


def contract_check(*, report: ContractReport) -> GateCheck:
    """Gate check 1: the lake's source-contract checks.

    Args:
        report: The report of `ingestion.checks.check_lake` (`.passed`, `.results`).

    Returns:
        The check; the figure is the number of failed rules.
    """
    failed = [r for r in report.results if not r.passed]
    names = ", ".join(f"{r.source}.{r.rule}" for r in failed[:5])
    detail = (
        f"all {len(report.results)} source-contract rules pass"
        if report.passed
        else f"{len(failed)} of {len(report.results)} source-contract rules fail: {names}"
    )
    return GateCheck("contracts", bool(report.passed), float(len(failed)), 0.0, detail)


def quality_check(*, reports: Sequence[QualityReport]) -> GateCheck:
    """Gate check 2: the data-quality rules of every report.

    Args:
        reports: Quality reports (feature table, training set).

    Returns:
        The check; the figure is the number of failed rules.
    """
    failed = [(r.scope, c) for r in reports for c in r.failures]
    total = sum(len(r.checks) for r in reports)
    names = ", ".join(f"{scope}:{c.rule}({c.target})" for scope, c in failed[:5])
    detail = (
        f"all {total} data-quality checks pass"
        if not failed
        else f"{len(failed)} of {total} data-quality checks fail: {names}"
    )
    return GateCheck("quality", not failed, float(len(failed)), 0.0, detail)


def drift_check(*, result: DriftResult) -> GateCheck:
    """Gate check 3: no feature's PSI reaches the block threshold.

    Args:
        result: The drift of the current features against the challenger's training set.

    Returns:
        The check; the figure is the largest PSI, the threshold the block threshold.
    """
    top = max(result.features, key=lambda f: f.psi)
    if result.blocking:
        detail = f"PSI blocks on {', '.join(result.blocking)} (max {top.psi:.3f} on {top.feature})"
    elif result.warning:
        detail = f"no feature blocks; {', '.join(result.warning)} warn (max {top.psi:.3f} on {top.feature})"
    else:
        detail = f"no feature drifts (max PSI {top.psi:.3f} on {top.feature})"
    return GateCheck("drift", not result.blocking, top.psi, result.block, detail)


def model_check(*, challenger_score: float, champion_score: float | None, tolerance: float) -> GateCheck:
    """Gate check 4: the challenger is not worse than the champion (PR AUC within a tolerance).

    Args:
        challenger_score: The challenger's PR AUC on the latest out-of-time window.
        champion_score: The champion's PR AUC on the same rows, or None when there is no champion.
        tolerance: How far below the champion the challenger may be.

    Returns:
        The check; the figure is challenger - champion, the threshold -tolerance.
    """
    if champion_score is None:
        return GateCheck(
            "model",
            True,
            float("nan"),
            -tolerance,
            f"no champion yet; challenger PR AUC {challenger_score:.4f}",
        )
    delta = challenger_score - champion_score
    passed = delta >= -tolerance
    verdict = "not worse than" if passed else "worse than"
    return GateCheck(
        "model",
        passed,
        delta,
        -tolerance,
        f"challenger PR AUC {challenger_score:.4f} is {verdict} champion {champion_score:.4f} "
        f"(difference {delta:+.4f}, tolerance {tolerance})",
    )


def pr_auc(*, model: Any, frame: pd.DataFrame, features: Sequence[str], label: str = LABEL_COLUMN) -> float:
    """Average precision (PR AUC) of a fitted classifier on labelled rows.

    Args:
        model: A fitted sklearn estimator or pipeline with `predict_proba`.
        frame: Rows with the feature columns and the label.
        features: Feature columns to use when the model does not name its own inputs.
        label: The label column (1 = churned).

    Returns:
        The PR AUC.

    Raises:
        GateError: When the frame lacks the label or a feature, or has a single class.
    """
    from sklearn.metrics import average_precision_score

    inputs = list(getattr(model, "feature_names_in_", features))
    missing = [c for c in [*inputs, label] if c not in frame.columns]
    if missing:
        raise GateError(f"the evaluation window lacks the column(s) {missing}")
    labels = frame[label].astype(int)
    if labels.nunique() < 2:
        raise GateError(f"the evaluation window has a single class in {label!r}; PR AUC is undefined")
    scores = model.predict_proba(frame[inputs])[:, 1]
    return float(average_precision_score(labels, scores))


def require_reason(*, force: bool, reason: str | None) -> None:
    """Refuse to force a promotion without a reason.

    Args:
        force: Whether the operator forces the promotion.
        reason: The operator's reason.

    Raises:
        GateError: When forcing with no (or a blank) reason.
    """
    if force and not (reason and reason.strip()):
        raise GateError("--force needs --reason TEXT: a forced promotion must say why, for the audit")


def decide(
    *, versions: Versions, checks: Sequence[GateCheck], dry_run: bool, force: bool, reason: str | None
) -> GateDecision:
    """Turn the checks into a decision (pure; nothing is moved or recorded).

    Args:
        versions: The registry state.
        checks: The gate's checks.
        dry_run: Whether the decision will only be shown.
        force: Promote even when a check fails.
        reason: Why; required when forcing.

    Returns:
        The decision.

    Raises:
        GateError: When forcing without a reason.
    """
    require_reason(force=force, reason=reason)
    passed = all(c.passed for c in checks)
    if versions.champion == versions.challenger:
        decision, after = "unchanged", versions.champion
    elif passed:
        decision, after = "promoted", versions.challenger
    elif force:
        decision, after = "forced", versions.challenger
    else:
        decision, after = "refused", versions.champion
    return GateDecision(
        versions=versions,
        checks=tuple(checks),
        decision=decision,
        dry_run=dry_run,
        reason=reason.strip() if reason else None,
        champion_after=after,
    )


def promotion_record(*, decision: GateDecision, user: str, now: datetime) -> AuditRecord:
    """The audit record of an applied promotion decision.

    Args:
        decision: The decision from `decide`.
        user: Who decided.
        now: When (UTC).

    Returns:
        The record, with every check.
    """
    versions = decision.versions
    return AuditRecord(
        time=now,
        user=user,
        action="promote",
        model=versions.model,
        challenger_version=versions.challenger,
        champion_before=versions.champion,
        champion_after=decision.champion_after,
        decision=decision.decision,
        reason=decision.reason,
        checks=tuple(c.to_audit() for c in decision.checks),
    )


def recorded_decision(*, record: AuditRecord, run_id: str) -> GateDecision:
    """The applied decision an audit record was written from (the inverse of `promotion_record`).

    Args:
        record: A `promote` record.
        run_id: The challenger's run.

    Returns:
        The decision, as it was applied (not a dry run).
    """
    versions = Versions(
        model=record.model,
        challenger=str(record.challenger_version),
        challenger_run_id=run_id,
        champion=record.champion_before,
    )
    checks = tuple(GateCheck(c.name, c.passed, c.figure, c.threshold, c.detail) for c in record.checks)
    return GateDecision(
        versions=versions,
        checks=checks,
        decision=record.decision,
        dry_run=False,
        reason=record.reason,
        champion_after=record.champion_after,
    )


def settled_history(*, history: Sequence[str], record: AuditRecord, applied: bool) -> list[str]:
    """The champion history with a decision's change applied, or with it taken back.

    A promotion appends its new champion; a rollback drops the champion it replaces. Either way the
    history ends with `champion_after` once the change is in, and does not before (the two differ
    for a decision that moves `champion`), so the result is the same however often it is applied:
    that is what lets an interrupted decision be finished or undone from whatever a crash left.

    Args:
        history: The history as the registry holds it now, oldest first.
        record: The decision (`promote` or `rollback`).
        applied: True for the history with the change, False for the history without it.

    Returns:
        The history to write.
    """
    before, after = record.champion_before, record.champion_after
    if before == after or after is None:
        return list(history)
    has_change = history[-1:] == [after]
    if applied == has_change:
        return list(history)
    if record.action == "rollback":
        return list(history[:-1]) if applied else [*history, str(before)]
    return [*history, after] if applied else list(history[:-1])


GATE_HEADING = "**Gate**"


def gate_paragraph(*, decision: GateDecision, user: str, now: datetime) -> str:
    """The paragraph a gate decision adds to the challenger version's description.

    Args:
        decision: The applied decision.
        user: Who decided.
        now: When (UTC).

    Returns:
        One Markdown paragraph starting with `GATE_HEADING`: decision, who, when, each check.
    """
    checks = "; ".join(f"{c.name} {'passed' if c.passed else 'FAILED'}: {c.detail}" for c in decision.checks)
    reason = f" Reason: {decision.reason}." if decision.reason else ""
    return (
        f"{GATE_HEADING} {now:%Y-%m-%d %H:%M} UTC, {user}: {decision.decision} "
        f"(champion {decision.versions.champion or 'none'} → {decision.champion_after or 'none'}).{reason} "
        f"{checks}."
    )


def with_gate_paragraph(*, description: str | None, paragraph: str) -> str:
    """A version description with its gate paragraph replaced by a new one (or added).

    Args:
        description: The version's description (None or empty when it has none).
        paragraph: The new gate paragraph (`gate_paragraph`).

    Returns:
        The description: the training's paragraphs, then the latest gate paragraph.
    """
    kept = [part for part in (description or "").split("\n\n") if part and not part.startswith(GATE_HEADING)]
    return "\n\n".join([*kept, paragraph])


def rollback_target(*, model: str, history: Sequence[str], current: str | None) -> str:
    """The version a rollback moves `champion` back to.

    Args:
        model: The registered model (for the messages).
        history: The versions churnops promoted, oldest first (rolled-back ones removed).
        current: The version alias `champion` points at now, or None when unset.

    Returns:
        The previous champion.

    Raises:
        GateError: When there is no previous champion, or `champion` was moved outside churnops.
    """
    if current is None or len(history) < 2:
        raise GateError(
            f"{model!r} has no previous champion to roll back to (history: {list(history) or 'empty'})"
        )
    if current != history[-1]:
        raise GateError(
            f"'{CHAMPION}' points at version {current}, but churnops last promoted {history[-1]}: "
            f"the alias was moved by hand, and serving does not follow such a move: move it back to "
            f"{history[-1]}, then roll back"
        )
    return history[-2]
