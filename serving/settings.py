"""Every tunable of the prediction service in one validated, immutable object."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from churnops.training.names import CHALLENGER, CHAMPION, REGISTERED_MODEL


class ServingSettings(BaseModel):
    """Settings of one prediction service.

    Attributes:
        predictions_dir: Folder of the prediction log (`predictions.db` is written inside).
        audit_db: The promotion audit table (`churnops promote` / `rollback` write it): a move of
            the champion alias is followed only when it holds the decision behind it.
        keys_file: The hashed API keys file; read only when `require_keys` is on.
        require_keys: Refuse prediction requests without a valid `X-API-Key` (401).
        keys_reload_interval_s: Longest time a change to the keys file (a revoked or new key)
            goes unnoticed; 0 checks the file on every request.
        shadow: Score the `@challenger` too (off the request path) and log both predictions.
        model_name: The registered MLflow model.
        champion_alias: The alias whose version answers requests.
        challenger_alias: The alias scored in shadow mode.
        feature_service: The Feast feature service the model was trained on.
        risk_medium: Probabilities at or above this are `medium` risk.
        risk_high: Probabilities at or above this are `high` risk.
        poll_interval_s: Seconds between checks of where the aliases point.
        max_batch: Most customer ids one `/predict/batch` request may carry.
        log_flush_interval_s: Longest time a prediction waits in memory before it is written.
        log_batch_rows: Most predictions written in one transaction.
        body_timeout_s: Longest time a request body may take to arrive (408 past it).
        data_quality_home: The workspace whose data-quality figures `/metrics` also exports
            (`churnops.monitoring.dq_metrics`, read on each scrape); None exports none.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    predictions_dir: Path
    audit_db: Path
    keys_file: Path | None = None
    require_keys: bool = False
    keys_reload_interval_s: float = Field(default=1.0, ge=0, le=60)
    shadow: bool = True
    model_name: str = REGISTERED_MODEL
    champion_alias: str = CHAMPION
    challenger_alias: str = CHALLENGER
    feature_service: str = "customer_profile_v1"
    risk_medium: float = Field(default=0.3, gt=0, lt=1)
    risk_high: float = Field(default=0.6, gt=0, lt=1)
    poll_interval_s: float = Field(default=5.0, gt=0)
    max_batch: int = Field(default=1000, ge=1, le=10_000)
    log_flush_interval_s: float = Field(default=0.5, gt=0)
    log_batch_rows: int = Field(default=2000, ge=1)
    body_timeout_s: float = Field(default=10.0, gt=0)
    data_quality_home: Path | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ServingSettings:
        if self.risk_medium >= self.risk_high:
            raise ValueError(f"risk_medium ({self.risk_medium}) must be below risk_high ({self.risk_high})")
        if self.require_keys and self.keys_file is None:
            raise ValueError("require_keys is on but no keys_file is set")
        return self

    def risk_band(self, probability: float) -> str:
        """Name the risk band of a churn probability.

        Args:
            probability: The champion's churn probability.

        Returns:
            `low`, `medium` or `high`.
        """
        if probability >= self.risk_high:
            return "high"
        if probability >= self.risk_medium:
            return "medium"
        return "low"
