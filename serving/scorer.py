"""Scoring a list of customers: online features → feature status → champion → predictions → log.

It runs synchronously on the event loop (see `serving.routers` for why); everything that can
wait (writing the log, scoring the challenger in shadow) is handed to the prediction log's
background thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from churnops.serving.errors import ServiceError
from churnops.serving.features import OnlineFeatures
from churnops.serving.metrics import ServingMetrics
from churnops.serving.models import NO_CHAMPION_HINT, LoadedModel, ModelSet
from churnops.serving.prediction_log import LogEntry
from churnops.serving.schemas import Prediction
from churnops.serving.settings import ServingSettings

# The logger the service has always written under, so log filters set on it keep working.
log = logging.getLogger("churnops.serving.app")


class FeatureReader(Protocol):
    """Reads online features (`serving.features.OnlineFeatureReader`)."""

    def read(self, customer_ids: list[str], *, now: datetime) -> OnlineFeatures:
        """Read the customers' features, one row each, in order."""
        ...


class ModelSource(Protocol):
    """Holds the models currently served (`serving.models.ModelWatcher`)."""

    @property
    def current(self) -> ModelSet:
        """The models to use for one request."""
        ...

    @property
    def last_error(self) -> str | None:
        """Why the last refresh failed, or None."""
        ...


class LogSink(Protocol):
    """Takes predictions to log off the request path (`serving.prediction_log.PredictionLog`)."""

    def submit(self, entry: LogEntry) -> None:
        """Queue one entry without blocking."""
        ...


class SingleRequest(NamedTuple):
    """One `/predict` request waiting to be scored with others."""

    customer_id: str
    request_id: str


@dataclass(frozen=True)
class ScoredBatch:
    """The predictions of one scoring call and the champion that made them.

    Attributes:
        champion: The model version that scored every row.
        predictions: One prediction per customer, in request order.
    """

    champion: LoadedModel
    predictions: list[Prediction]


def _now() -> datetime:
    return datetime.now(UTC)


class Scorer:
    """Scores customers with the current champion and logs what it served.

    Args:
        reader: The online feature reader.
        models: Where the current champion (and challenger) are read, once per call.
        log: The prediction log.
        settings: The service's settings (risk bands, aliases, shadow mode).
        metrics: Where predictions and snapshot ages are counted.
        clock: The current time (timezone-aware); staleness is measured against it.
    """

    def __init__(
        self,
        *,
        reader: FeatureReader,
        models: ModelSource,
        log: LogSink,
        settings: ServingSettings,
        metrics: ServingMetrics,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._reader = reader
        self._models = models
        self._log = log
        self._settings = settings
        self._metrics = metrics
        self._clock = clock

    def score(self, *, customer_ids: list[str], request_ids: list[str], items: list[int]) -> ScoredBatch:
        """Read, score and log a list of customers.

        Args:
            customer_ids: The customers, in the order the predictions are wanted.
            request_ids: The request id each row is logged under (one per customer).
            items: Each row's position in its request (0 for single predictions).

        Returns:
            The champion and its predictions, in order.

        Raises:
            ServiceError: 503 `no_champion` when no model holds the champion alias yet (or the
                alias was moved without the gate and no earlier champion is loaded), 503
                `online_store_unavailable` when the online store cannot be read.
        """
        models = self._models.current
        champion = self._champion(models)
        now = self._clock()
        features = self._read(customer_ids, now=now)
        probabilities = [float(p) for p in champion.predict(features.columns)]
        bands = [self._settings.risk_band(p) for p in probabilities]
        predictions = self._predictions(
            customer_ids=customer_ids,
            features=features,
            champion=champion,
            probabilities=probabilities,
            bands=bands,
            now=now,
        )
        self._log.submit(
            LogEntry(
                request_ids=request_ids,
                items=items,
                predicted_at=now,
                customer_ids=customer_ids,
                features=features.columns,
                statuses=list(features.statuses),
                snapshot_ts=features.snapshot_ts,
                champion=champion,
                probabilities=probabilities,
                risk_bands=bands,
                challenger=models.challenger if self._settings.shadow else None,
            )
        )
        return ScoredBatch(champion=champion, predictions=predictions)

    def score_singles(self, requests: list[SingleRequest]) -> list[Prediction]:
        """Score single-customer requests together (the micro-batcher's scoring call).

        Args:
            requests: The queued requests, each logged under its own request id.

        Returns:
            One prediction per request, in order.
        """
        scored = self.score(
            customer_ids=[r.customer_id for r in requests],
            request_ids=[r.request_id for r in requests],
            items=[0] * len(requests),
        )
        return scored.predictions

    def _champion(self, models: ModelSet) -> LoadedModel:
        if models.champion is not None:
            return models.champion
        if models.unaudited is not None:
            raise ServiceError(503, "no_champion", models.unaudited.reason)
        problem = self._models.last_error
        settings = self._settings
        raise ServiceError(
            503,
            "no_champion",
            f"no model has alias {settings.model_name}@{settings.champion_alias} yet: {NO_CHAMPION_HINT}"
            + (f" (last registry error: {problem})" if problem else ""),
        )

    def _read(self, customer_ids: list[str], *, now: datetime) -> OnlineFeatures:
        try:
            return self._reader.read(customer_ids, now=now)
        except Exception as exc:
            log.exception("online store read failed")
            raise ServiceError(
                503, "online_store_unavailable", f"the online feature store cannot be read: {exc}"
            ) from exc

    def _predictions(
        self,
        *,
        customer_ids: list[str],
        features: OnlineFeatures,
        champion: LoadedModel,
        probabilities: list[float],
        bands: list[str],
        now: datetime,
    ) -> list[Prediction]:
        predictions = []
        for i, cid in enumerate(customer_ids):
            status = features.statuses[i]
            snapshot = features.snapshot_ts[i]
            self._metrics.predictions.labels(feature_status=status).inc()
            if snapshot is not None:
                self._metrics.snapshot_age.observe((now - snapshot).total_seconds())
            predictions.append(
                Prediction(
                    customer_id=cid,
                    churn_probability=probabilities[i],
                    risk_band=bands[i],  # type: ignore[arg-type]
                    model_version=champion.version,
                    snapshot_ts=snapshot,
                    feature_status=status,
                )
            )
        return predictions
