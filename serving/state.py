"""What a service holds at run time, kept on `app.state` for the routes to find."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from churnops.serving.batcher import MicroBatcher
from churnops.serving.errors import ServiceError
from churnops.serving.features import OnlineFeatureReader
from churnops.serving.metrics import ServingMetrics
from churnops.serving.models import ModelWatcher
from churnops.serving.prediction_log import PredictionLog
from churnops.serving.schemas import Prediction
from churnops.serving.scorer import Scorer, SingleRequest
from churnops.serving.settings import ServingSettings
from churnops.storage.keys import KeyRing


@dataclass(frozen=True)
class Runtime:
    """What start-up opened; it exists only while the app runs (between start-up and shutdown).

    Attributes:
        reader: The online feature reader.
        watcher: The champion/challenger watcher.
        log: The prediction log.
        keys: The valid API keys, re-read when the file changes (None when keys are not required).
        scorer: Scores lists of customers.
        batcher: Gathers concurrent single predictions into one scoring call.
    """

    reader: OnlineFeatureReader
    watcher: ModelWatcher
    log: PredictionLog
    keys: KeyRing | None
    scorer: Scorer
    batcher: MicroBatcher[SingleRequest, Prediction]


@dataclass
class ServiceState:
    """One app's settings, metrics and (while it runs) runtime.

    Attributes:
        settings: The service's settings.
        metrics: The service's Prometheus metrics.
        runtime: What start-up opened, or None before start-up and after shutdown.
    """

    settings: ServingSettings
    metrics: ServingMetrics
    runtime: Runtime | None = None

    def running(self) -> Runtime:
        """The runtime, for a request that needs the models or the online store.

        Returns:
            The runtime.

        Raises:
            ServiceError: 503 `starting` when the app has not started (or has shut down).
        """
        if self.runtime is None:
            raise ServiceError(503, "starting", "the service is starting; retry shortly")
        return self.runtime


def service_state(request: Request) -> ServiceState:
    """The state of the app serving a request.

    Args:
        request: The request.

    Returns:
        The `ServiceState` that `create_app` stored on `app.state.service`.
    """
    state: ServiceState = request.app.state.service
    return state
