"""The promotion gate's pure decision, from plain values: no MLflow, no registry, no files.

`test_gate_promotion.py` runs the same checks and decisions against a real (temporary) registry;
here every combination of check outcomes, force, reason, dry run and champion is enumerated.
"""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnops.monitoring import gate as gate_module
from churnops.monitoring.audit import AuditRecord
from churnops.monitoring.drift import DriftResult, FeatureDrift
from churnops.monitoring.gate import (
    MOVES_CHAMPION,
    GateCheck,
    GateError,
    Versions,
    contract_check,
    decide,
    drift_check,
    model_check,
    pr_auc,
    promotion_record,
    quality_check,
    recorded_decision,
    require_reason,
    rollback_target,
    settled_history,
)
from churnops.monitoring.inputs import InputProblem, read_frame
from churnops.monitoring.quality import QualityCheck, QualityReport
from churnops.monitoring.registry import open_client
from churnops.training.names import CHALLENGER, CHAMPION, LABEL_COLUMN, REGISTERED_MODEL

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
CHECK_NAMES = ("contracts", "quality", "drift", "model")


def checks(*failing: str) -> list[GateCheck]:
    return [GateCheck(name, name not in failing, 0.0, 0.0, f"{name} detail") for name in CHECK_NAMES]


def versions(*, champion: str | None = "1", challenger: str = "2") -> Versions:
    return Versions(model="churn-model", challenger=challenger, challenger_run_id="run-2", champion=champion)


# ---------------------------------------------------------------- decide


@pytest.mark.parametrize("champion", ["1", None])
@pytest.mark.parametrize("dry_run", [False, True])
def test_every_check_passing_promotes(champion: str | None, dry_run: bool) -> None:
    decision = decide(
        versions=versions(champion=champion), checks=checks(), dry_run=dry_run, force=False, reason=None
    )
    assert decision.decision == "promoted" and decision.passed and decision.failures == []
    assert decision.champion_after == "2"
    assert decision.dry_run is dry_run


@pytest.mark.parametrize(
    "failing",
    [
        ("contracts",),
        ("quality",),
        ("drift",),
        ("model",),
        ("contracts", "drift"),
        ("quality", "model"),
        CHECK_NAMES,
    ],
)
@pytest.mark.parametrize("champion", ["1", None])
def test_any_failed_check_refuses_and_keeps_the_champion(
    failing: tuple[str, ...], champion: str | None
) -> None:
    decision = decide(
        versions=versions(champion=champion), checks=checks(*failing), dry_run=False, force=False, reason=None
    )
    assert decision.decision == "refused" and not decision.passed
    assert [c.name for c in decision.failures] == list(failing)
    assert decision.champion_after == champion


@pytest.mark.parametrize("failing", [("contracts",), ("drift",), ("model",), CHECK_NAMES])
def test_forcing_with_a_reason_promotes_despite_failures(failing: tuple[str, ...]) -> None:
    decision = decide(
        versions=versions(),
        checks=checks(*failing),
        dry_run=False,
        force=True,
        reason="  approved by CAB-42 ",
    )
    assert decision.decision == "forced" and not decision.passed
    assert decision.champion_after == "2"
    assert decision.reason == "approved by CAB-42"


def test_forcing_when_every_check_passes_is_a_plain_promotion() -> None:
    decision = decide(versions=versions(), checks=checks(), dry_run=False, force=True, reason="just in case")
    assert decision.decision == "promoted" and decision.reason == "just in case"


@pytest.mark.parametrize("reason", [None, "", "   "])
@pytest.mark.parametrize("failing", [(), ("drift",)])
def test_forcing_needs_a_reason(reason: str | None, failing: tuple[str, ...]) -> None:
    with pytest.raises(GateError, match="--force needs --reason"):
        decide(versions=versions(), checks=checks(*failing), dry_run=False, force=True, reason=reason)
    with pytest.raises(GateError, match="--force needs --reason"):
        decide(versions=versions(), checks=checks(*failing), dry_run=True, force=True, reason=reason)


@pytest.mark.parametrize("failing", [(), ("model",)])
@pytest.mark.parametrize("force", [False, True])
def test_the_champion_already_being_the_challenger_changes_nothing(
    failing: tuple[str, ...], force: bool
) -> None:
    decision = decide(
        versions=versions(champion="2", challenger="2"),
        checks=checks(*failing),
        dry_run=False,
        force=force,
        reason="why" if force else None,
    )
    assert decision.decision == "unchanged" and decision.champion_after == "2"


def test_a_reason_without_force_is_kept_and_blank_becomes_none() -> None:
    kept = decide(versions=versions(), checks=checks("drift"), dry_run=False, force=False, reason=" noted ")
    assert kept.decision == "refused" and kept.reason == "noted"
    blank = decide(versions=versions(), checks=checks(), dry_run=False, force=False, reason="")
    assert blank.reason is None


@pytest.mark.parametrize(
    ("force", "reason"), [(False, None), (False, ""), (True, "ok"), (False, "unused reason")]
)
def test_require_reason_accepts(force: bool, reason: str | None) -> None:
    require_reason(force=force, reason=reason)


def test_only_promotions_move_the_champion() -> None:
    assert set(MOVES_CHAMPION) == {"promoted", "forced"}


def test_decision_json_has_versions_checks_and_no_nan() -> None:
    nan_check = GateCheck("model", True, float("nan"), -0.01, "no champion yet")
    decision = decide(
        versions=versions(champion=None),
        checks=[*checks()[:3], nan_check],
        dry_run=True,
        force=False,
        reason=None,
    )
    document = decision.to_dict()
    assert {k: document[k] for k in ("model", "challenger", "champion_before", "champion_after")} == {
        "model": "churn-model",
        "challenger": "2",
        "champion_before": None,
        "champion_after": "2",
    }
    assert (document["decision"], document["passed"], document["dry_run"]) == ("promoted", True, True)
    assert document["checks"][3] == {
        "name": "model",
        "passed": True,
        "figure": None,
        "threshold": -0.01,
        "detail": "no champion yet",
    }


def test_promotion_record_carries_the_decision_and_every_check() -> None:
    decision = decide(versions=versions(), checks=checks("drift"), dry_run=False, force=True, reason="hotfix")
    record = promotion_record(decision=decision, user="ana", now=NOW)
    assert (record.action, record.model, record.challenger_version) == ("promote", "churn-model", "2")
    assert (record.champion_before, record.champion_after, record.decision) == ("1", "2", "forced")
    assert (record.user, record.time, record.reason) == ("ana", NOW, "hotfix")
    assert [(c.name, c.passed) for c in record.checks] == [
        ("contracts", True),
        ("quality", True),
        ("drift", False),
        ("model", True),
    ]


def test_recorded_decision_is_the_inverse_of_promotion_record() -> None:
    nan_model = GateCheck("model", False, float("nan"), -0.01, "no champion yet")
    decision = decide(
        versions=versions(), checks=[*checks()[:3], nan_model], dry_run=False, force=True, reason="CAB-7"
    )
    record = promotion_record(decision=decision, user="ana", now=NOW)
    again = recorded_decision(record=record, run_id="run-2")
    assert again.to_dict() == decision.to_dict()


# ---------------------------------------------------------------- the history an interrupted decision leaves


def record(action: str, before: str | None, after: str | None) -> AuditRecord:
    decision = {"promote": "forced", "rollback": "rolled_back"}[action]
    return AuditRecord(NOW, "ana", action, "churn-model", None, before, after, decision, "why")


@pytest.mark.parametrize(
    ("action", "before", "after", "without", "with_"),
    [
        ("promote", "2", "3", ["1", "2"], ["1", "2", "3"]),
        ("promote", None, "1", [], ["1"]),
        ("promote", "2", "1", ["1", "2"], ["1", "2", "1"]),  # an earlier champion promoted again
        ("rollback", "3", "2", ["1", "2", "3"], ["1", "2"]),
        ("rollback", "2", "1", ["2", "1", "2"], ["2", "1"]),
    ],
)
def test_a_decisions_history_change_is_applied_or_taken_back_from_either_state(
    action: str, before: str | None, after: str, without: list[str], with_: list[str]
) -> None:
    change = record(action, before, after)
    for start in (without, with_):  # whatever a crash left, the outcome is the same
        assert settled_history(history=start, record=change, applied=True) == with_
        assert settled_history(history=start, record=change, applied=False) == without


@pytest.mark.parametrize(("before", "after"), [("2", "2"), (None, None)])
def test_a_decision_moving_nothing_leaves_the_history_alone(before: str | None, after: str | None) -> None:
    unchanged = record("promote", before, after)
    for applied in (True, False):
        assert settled_history(history=["1", "2"], record=unchanged, applied=applied) == ["1", "2"]


# ---------------------------------------------------------------- rollback


def test_rollback_goes_to_the_previous_champion() -> None:
    assert rollback_target(model="m", history=["1", "3", "4"], current="4") == "3"


@pytest.mark.parametrize(("history", "current"), [([], None), (["1"], "1"), (["1", "2"], None)])
def test_rollback_needs_a_previous_champion(history: list[str], current: str | None) -> None:
    with pytest.raises(GateError, match="no previous champion"):
        rollback_target(model="m", history=history, current=current)


def test_rollback_refuses_a_champion_moved_by_hand() -> None:
    with pytest.raises(GateError, match="moved by hand"):
        rollback_target(model="m", history=["1", "2"], current="5")


# ---------------------------------------------------------------- the four checks


@dataclass(frozen=True)
class Rule:
    source: str
    rule: str
    passed: bool


@dataclass(frozen=True)
class LakeReport:
    results: list[Rule]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)


def test_contract_check_counts_failed_rules() -> None:
    ok = contract_check(report=LakeReport([Rule("customers", "not_null", True)]))
    assert ok.passed and ok.figure == 0.0 and ok.detail == "all 1 source-contract rules pass"
    bad = contract_check(
        report=LakeReport([Rule("customers", "not_null", False), Rule("billing", "range", True)])
    )
    assert not bad.passed and bad.figure == 1.0
    assert bad.detail == "1 of 2 source-contract rules fail: customers.not_null"


def quality_report(scope: str, *outcomes: str) -> QualityReport:
    return QualityReport(
        scope=scope,
        rows=10,
        checks=tuple(QualityCheck("range", f"col{i}", 0.0, 0.0, o, "") for i, o in enumerate(outcomes)),  # type: ignore[arg-type]
    )


def test_quality_check_fails_on_failures_only() -> None:
    ok = quality_check(reports=[quality_report("feature_table", "pass", "flag", "skip")])
    assert ok.passed and ok.detail == "all 3 data-quality checks pass"
    bad = quality_check(
        reports=[quality_report("feature_table", "pass", "fail"), quality_report("training_set", "fail")]
    )
    assert not bad.passed and bad.figure == 2.0
    assert (
        bad.detail == "2 of 3 data-quality checks fail: feature_table:range(col1), training_set:range(col0)"
    )


def drift_result(**psi: float) -> DriftResult:
    def status(value: float) -> str:
        return "block" if value >= 0.2 else "warn" if value >= 0.1 else "ok"

    features = tuple(FeatureDrift(name, "numeric", v, status(v), 100, 100) for name, v in psi.items())  # type: ignore[arg-type]
    return DriftResult(features=features, warn=0.1, block=0.2, reference_rows=100, current_rows=100)


def test_drift_check_blocks_at_the_block_threshold_only() -> None:
    calm = drift_check(result=drift_result(a=0.01, b=0.05))
    assert calm.passed and calm.figure == 0.05 and calm.threshold == 0.2
    assert calm.detail == "no feature drifts (max PSI 0.050 on b)"
    warn = drift_check(result=drift_result(a=0.15, b=0.05))
    assert warn.passed and warn.detail == "no feature blocks; a warn (max 0.150 on a)"
    block = drift_check(result=drift_result(a=0.15, b=0.2))
    assert not block.passed and block.detail == "PSI blocks on b (max 0.200 on b)"


@pytest.mark.parametrize(
    ("challenger", "champion", "passed"),
    [(0.50, 0.50, True), (0.495, 0.50, True), (0.491, 0.50, True), (0.4899, 0.50, False), (0.7, 0.5, True)],
)
def test_model_check_allows_the_tolerance_below_the_champion(
    challenger: float, champion: float, passed: bool
) -> None:
    check = model_check(challenger_score=challenger, champion_score=champion, tolerance=0.01)
    assert check.passed is passed
    assert check.figure == pytest.approx(challenger - champion)
    assert check.threshold == -0.01


def test_model_check_passes_with_no_champion() -> None:
    check = model_check(challenger_score=0.3, champion_score=None, tolerance=0.01)
    assert check.passed and math.isnan(check.figure)
    assert check.detail == "no champion yet; challenger PR AUC 0.3000"


class Fixed:
    """A classifier whose churn probability is its `score` column."""

    feature_names_in_ = np.array(["score"])

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        p = frame["score"].to_numpy(dtype=float)
        return np.column_stack([1 - p, p])


def test_pr_auc_scores_the_label_column() -> None:
    frame = pd.DataFrame({"score": [0.9, 0.8, 0.2, 0.1], LABEL_COLUMN: [1, 1, 0, 0]})
    assert pr_auc(model=Fixed(), frame=frame, features=["score"]) == pytest.approx(1.0)
    with pytest.raises(GateError, match="single class"):
        pr_auc(model=Fixed(), frame=frame.assign(**{LABEL_COLUMN: 1}), features=["score"])
    with pytest.raises(GateError, match="lacks the column"):
        pr_auc(model=Fixed(), frame=frame.drop(columns=[LABEL_COLUMN]), features=["score"])


# ---------------------------------------------------------------- seams


def test_gate_module_never_imports_mlflow() -> None:
    tree = ast.parse(Path(gate_module.__file__).read_text())
    imported = [
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
    ]
    assert not [name for name in imported if name.split(".")[0] == "mlflow"]
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, churnops.monitoring.gate; print('mlflow' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "False"


def test_registry_names_are_defined_once_with_their_published_values() -> None:
    from churnops.serving.settings import ServingSettings

    assert (REGISTERED_MODEL, CHAMPION, CHALLENGER, LABEL_COLUMN) == (
        "churn-model",
        "champion",
        "challenger",
        "label",
    )
    settings = ServingSettings(predictions_dir=Path("unused"), audit_db=Path("unused.db"))
    assert (settings.model_name, settings.champion_alias, settings.challenger_alias) == (
        REGISTERED_MODEL,
        CHAMPION,
        CHALLENGER,
    )


def test_open_client_refuses_to_create_a_missing_store(tmp_path: Path) -> None:
    db = tmp_path / "mlruns" / "mlflow.db"
    with pytest.raises(InputProblem, match=r"no MLflow store at .*train a model first"):
        open_client(tracking_uri=f"sqlite:///{db}", tracking_db=db)
    assert not db.exists()


def test_read_frame_reads_parquet_and_csv_only(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2]})
    frame.to_csv(tmp_path / "f.csv", index=False)
    frame.to_parquet(tmp_path / "f.parquet", index=False)
    pd.testing.assert_frame_equal(read_frame(path=tmp_path / "f.csv"), frame)
    pd.testing.assert_frame_equal(read_frame(path=tmp_path / "f.parquet"), frame)
    (tmp_path / "f.txt").write_text("a\n1\n")
    with pytest.raises(InputProblem, match=r"expected a \.parquet or \.csv file"):
        read_frame(path=tmp_path / "f.txt")
    with pytest.raises(InputProblem, match="does not exist"):
        read_frame(path=tmp_path / "missing.csv")


def _move(
    db: Path, *, after: str, decision: str = "promoted", reason: str | None = None, model: str = "churn-model"
) -> int:
    from churnops.monitoring.audit import begin_decision

    record = AuditRecord(
        time=datetime(2026, 6, 1, tzinfo=UTC),
        user="u",
        action="rollback" if decision == "rolled_back" else "promote",
        model=model,
        challenger_version=None if decision == "rolled_back" else after,
        champion_before=None,
        champion_after=after,
        decision=decision,
        reason=reason,
    )
    return begin_decision(db_path=db, record=record)


def test_serving_may_follow_only_the_audited_champion_and_pending_moves_after_it(tmp_path: Path) -> None:
    from churnops.monitoring.audit import ABANDONED, DONE, authorized_champions, finish_decision

    db = tmp_path / "audit.db"

    def allowed() -> frozenset[str]:
        return authorized_champions(db_path=db, model="churn-model")

    assert allowed() == frozenset()
    assert not db.exists()  # read-only: nothing created
    finish_decision(db_path=db, decision_id=_move(db, after="1"), state=DONE)
    assert allowed() == {"1"}
    pending = _move(db, after="2")
    assert allowed() == {"1", "2"}  # mid-transaction: the old and the new champion
    finish_decision(db_path=db, decision_id=pending, state=ABANDONED)
    assert allowed() == {"1"}
    for decision, reason in (("refused", None), ("unchanged", None), ("forced", "  ")):
        finish_decision(
            db_path=db, decision_id=_move(db, after="3", decision=decision, reason=reason), state=DONE
        )
    finish_decision(db_path=db, decision_id=_move(db, after="4", model="other-model"), state=DONE)
    assert allowed() == {"1"}
    finish_decision(
        db_path=db, decision_id=_move(db, after="3", decision="forced", reason="hotfix"), state=DONE
    )
    assert allowed() == {"3"}
    finish_decision(db_path=db, decision_id=_move(db, after="1", decision="rolled_back"), state=DONE)
    assert allowed() == {"1"}  # an older promotion of 3 no longer allows it


def test_the_gate_paragraph_of_a_version_description_is_replaced_not_appended() -> None:
    from churnops.monitoring.gate import gate_paragraph, with_gate_paragraph

    found = [
        GateCheck("drift", True, 0.04, 0.2, "max PSI 0.04 (tenure_days excluded)"),
        GateCheck("model", False, -0.02, 0.01, "challenger PR AUC 0.30 vs champion 0.32"),
    ]
    decision = decide(
        versions=versions(champion="1"), checks=found, dry_run=False, force=True, reason="hotfix 12"
    )
    paragraph = gate_paragraph(decision=decision, user="ana", now=datetime(2026, 6, 1, 9, 30, tzinfo=UTC))
    assert paragraph == (
        "**Gate** 2026-06-01 09:30 UTC, ana: forced (champion 1 → 2). Reason: hotfix 12. "
        "drift passed: max PSI 0.04 (tenure_days excluded); "
        "model FAILED: challenger PR AUC 0.30 vs champion 0.32."
    )
    trained = "`hist_gradient_boosting` trained on ...\n\nTest window ..."
    once = with_gate_paragraph(description=trained, paragraph=paragraph)
    assert once == trained + "\n\n" + paragraph
    assert with_gate_paragraph(description=once, paragraph="**Gate** later") == trained + "\n\n**Gate** later"
    assert with_gate_paragraph(description=None, paragraph=paragraph) == paragraph
