"""Scoring without HTTP: fake online reader, registry and log around the real `Scorer`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnops.serving.errors import ServiceError
from churnops.serving.features import OnlineFeatures
from churnops.serving.metrics import ServingMetrics
from churnops.serving.models import LoadedModel, ModelSet
from churnops.serving.prediction_log import LogEntry
from churnops.serving.scorer import Scorer, SingleRequest
from churnops.serving.settings import ServingSettings

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
FLAG = "is_default"


class _SessionsModel:
    """A 'fitted model' whose churn probability is sessions_30d / 100."""

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        p = frame["sessions_30d"].to_numpy() / 100
        return np.column_stack([1 - p, p])


def _model(version: str) -> LoadedModel:
    return LoadedModel(
        name="churn-model", version=version, model=_SessionsModel(), input_columns=("sessions_30d",)
    )


class _Reader:
    """Online rows keyed by customer: (sessions_30d, status, snapshot age or None)."""

    def __init__(
        self, rows: dict[str, tuple[int, str, timedelta | None]], error: Exception | None = None
    ) -> None:
        self.rows = rows
        self.error = error
        self.calls: list[tuple[list[str], datetime]] = []

    def read(self, customer_ids: list[str], *, now: datetime) -> OnlineFeatures:
        self.calls.append((list(customer_ids), now))
        if self.error is not None:
            raise self.error
        rows = [self.rows[c] for c in customer_ids]
        return OnlineFeatures(
            customer_ids=list(customer_ids),
            columns={"sessions_30d": [r[0] for r in rows], FLAG: [int(r[1] == "default") for r in rows]},
            statuses=[r[1] for r in rows],  # type: ignore[misc]
            snapshot_ts=[None if r[2] is None else now - r[2] for r in rows],
        )


class _Models:
    def __init__(
        self, champion: LoadedModel | None, challenger: LoadedModel | None, error: str | None = None
    ) -> None:
        self.current = ModelSet(champion=champion, challenger=challenger)
        self.last_error = error


class _Log:
    def __init__(self) -> None:
        self.entries: list[LogEntry] = []

    def submit(self, entry: LogEntry) -> None:
        self.entries.append(entry)


ROWS = {
    "CUST-A": (10, "present", timedelta(minutes=30)),
    "CUST-B": (45, "stale", timedelta(hours=5)),
    "CUST-C": (90, "default", None),
}


def _scorer(
    tmp_path: Path, *, reader: _Reader, models: _Models, shadow: bool = True
) -> tuple[Scorer, _Log, ServingMetrics]:
    log = _Log()
    metrics = ServingMetrics(endpoints=set())
    scorer = Scorer(
        reader=reader,
        models=models,
        log=log,
        settings=ServingSettings(predictions_dir=tmp_path, audit_db=tmp_path / "audit.db", shadow=shadow),
        metrics=metrics,
        clock=lambda: NOW,
    )
    return scorer, log, metrics


def test_a_batch_is_scored_in_order_with_statuses_bands_and_one_log_entry(tmp_path: Path) -> None:
    reader = _Reader(ROWS)
    champion, challenger = _model("3"), _model("4")
    scorer, log, metrics = _scorer(tmp_path, reader=reader, models=_Models(champion, challenger))
    ids = ["CUST-C", "CUST-A", "CUST-B"]

    scored = scorer.score(customer_ids=ids, request_ids=["r1"] * 3, items=[0, 1, 2])

    assert scored.champion is champion
    got = [(p.customer_id, p.churn_probability, p.risk_band, p.feature_status) for p in scored.predictions]
    assert got == [
        ("CUST-C", pytest.approx(0.9), "high", "default"),
        ("CUST-A", pytest.approx(0.1), "low", "present"),
        ("CUST-B", pytest.approx(0.45), "medium", "stale"),
    ]
    assert {p.model_version for p in scored.predictions} == {"3"}
    assert [p.snapshot_ts for p in scored.predictions] == [
        None,
        NOW - timedelta(minutes=30),
        NOW - timedelta(hours=5),
    ]
    assert reader.calls == [(ids, NOW)]
    (entry,) = log.entries
    assert entry.request_ids == ["r1"] * 3
    assert entry.items == [0, 1, 2]
    assert entry.customer_ids == ids
    assert entry.predicted_at == NOW
    assert entry.statuses == ["default", "present", "stale"]
    assert entry.features["sessions_30d"] == [90, 10, 45]
    assert entry.probabilities == pytest.approx([0.9, 0.1, 0.45])
    assert entry.risk_bands == ["high", "low", "medium"]
    assert entry.champion is champion
    assert entry.challenger is challenger
    sample = metrics.registry.get_sample_value
    for status in ("present", "stale", "default"):
        assert sample("churnops_predictions_total", {"feature_status": status}) == 1
    assert sample("churnops_feature_snapshot_age_seconds_count") == 2
    assert sample("churnops_feature_snapshot_age_seconds_sum") == 30 * 60 + 5 * 3600


def test_without_shadow_the_challenger_is_not_logged(tmp_path: Path) -> None:
    scorer, log, _ = _scorer(
        tmp_path, reader=_Reader(ROWS), models=_Models(_model("3"), _model("4")), shadow=False
    )
    scorer.score(customer_ids=["CUST-A"], request_ids=["r"], items=[0])
    assert log.entries[0].challenger is None


def test_single_requests_are_logged_each_under_its_own_id_as_item_zero(tmp_path: Path) -> None:
    scorer, log, _ = _scorer(tmp_path, reader=_Reader(ROWS), models=_Models(_model("3"), None))
    predictions = scorer.score_singles(
        [
            SingleRequest(customer_id="CUST-B", request_id="rb"),
            SingleRequest(customer_id="CUST-A", request_id="ra"),
        ]
    )
    assert [p.customer_id for p in predictions] == ["CUST-B", "CUST-A"]
    assert [p.churn_probability for p in predictions] == pytest.approx([0.45, 0.1])
    (entry,) = log.entries
    assert entry.request_ids == ["rb", "ra"]
    assert entry.items == [0, 0]


def test_no_champion_is_a_503_naming_the_alias_the_fix_and_the_last_registry_error(tmp_path: Path) -> None:
    reader = _Reader(ROWS)
    scorer, log, _ = _scorer(
        tmp_path, reader=reader, models=_Models(None, None, error="registry unreachable")
    )
    with pytest.raises(ServiceError) as caught:
        scorer.score(customer_ids=["CUST-A"], request_ids=["r"], items=[0])
    assert (caught.value.status, caught.value.error) == (503, "no_champion")
    assert caught.value.detail.startswith("no model has alias churn-model@champion yet: run `churnops train`")
    assert caught.value.detail.endswith(" (last registry error: registry unreachable)")
    assert reader.calls == []
    assert log.entries == []


def test_an_unreadable_online_store_is_a_503_and_nothing_is_logged(tmp_path: Path) -> None:
    reader = _Reader(ROWS, error=OSError("database is locked"))
    scorer, log, metrics = _scorer(tmp_path, reader=reader, models=_Models(_model("3"), None))
    with pytest.raises(ServiceError) as caught:
        scorer.score(customer_ids=["CUST-A"], request_ids=["r"], items=[0])
    assert (caught.value.status, caught.value.error) == (503, "online_store_unavailable")
    assert caught.value.detail == "the online feature store cannot be read: database is locked"
    assert log.entries == []
    assert (
        metrics.registry.get_sample_value("churnops_predictions_total", {"feature_status": "present"}) is None
    )
