"""The request and response bodies of the prediction service (they are its OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from churnops.contracts.entity import entity_id_format
from churnops.contracts.feature_contract import load_feature_contract

# The id format the source contracts give the entity: a malformed id is refused (422 naming the
# pattern) instead of being scored with defaults and logged beside real customers.
CUSTOMER_ID_FORMAT = entity_id_format(load_feature_contract())
CustomerId = Annotated[
    StrictStr,
    Field(min_length=1, max_length=128, pattern=CUSTOMER_ID_FORMAT, examples=["CUST-000001"]),
]


class PredictRequest(BaseModel):
    """One customer to score."""

    model_config = ConfigDict(extra="forbid")
    customer_id: CustomerId


class BatchRequest(BaseModel):
    """Customers to score in one request (1 to the service's `max_batch`)."""

    model_config = ConfigDict(extra="forbid")
    customer_ids: list[CustomerId]


class Prediction(BaseModel):
    """The champion's prediction for one customer."""

    customer_id: str
    churn_probability: float = Field(ge=0, le=1)
    risk_band: Literal["low", "medium", "high"]
    model_version: str
    snapshot_ts: datetime | None = Field(description="The online snapshot used; null when none exists.")
    feature_status: Literal["present", "default", "stale"] = Field(
        description="present: fresh online features; stale: older than the contract's freshness bound; "
        "default: no usable snapshot, the contract's defaults were used."
    )


class PredictResponse(Prediction):
    """A single prediction and the id it is logged under."""

    request_id: str


class BatchResponse(BaseModel):
    """Predictions in request order, and the id they are logged under."""

    request_id: str
    model_version: str
    predictions: list[Prediction]


class ErrorBody(BaseModel):
    """Every error response: a short code and a sentence saying what to do."""

    error: str
    detail: str
