"""The typed model of a feature-set contract (`contracts/features/*.yaml`).

Every stage that needs a feature name, type, window, default, threshold or tolerance
reads it from here, so the YAML stays the single source of truth.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from churnops.contracts.dtypes import TYPES, TypeFacts
from churnops.contracts.durations import Duration
from churnops.contracts.errors import ContractError, parse_contract_file

FEATURES_DIR = Path(__file__).resolve().parent / "features"
DEFAULT_FEATURE_CONTRACT = FEATURES_DIR / "customer_profile.v1.yaml"

Dtype = Literal["int64", "float64", "string", "bool", "timestamp"]
Aggregation = Literal["count", "count_distinct_days", "sum", "mean", "days_since_last", "as_of"]


class _Strict(BaseModel):
    # A typo'd key must fail loudly rather than be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Owner(_Strict):
    team: str
    email: str
    role: Literal["producer", "consumer"]


class Overview(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: int = Field(ge=1)
    status: Literal["draft", "active", "deprecated"]
    description: str
    owners: list[Owner] = Field(min_length=1)
    tags: dict[str, str] = {}


class JoinPolicy(_Strict):
    type: Literal["left", "inner"]
    on_failure: Literal["default", "drop", "error"]
    default_flag: str
    match_rate_min: float = Field(ge=0, le=1)
    fanout_max: float = Field(ge=1)
    dedup: Literal["latest_record_wins"]


class Entity(_Strict):
    name: str
    join_key: str
    dtype: Literal["string", "int64"]
    description: str
    cardinality: Literal["one_to_one"]
    join: JoinPolicy

    @property
    def types(self) -> TypeFacts:
        """The join key's type in every system (`contracts.dtypes.TYPES`)."""
        return TYPES[self.dtype]


class TimeSemantics(_Strict):
    timezone: Literal["UTC"]
    point_in_time: Literal["required"]
    lookback: Duration
    grain: Duration
    ttl: Duration
    allowed_lateness: Duration
    leakage_guardrail: str


class SourceRef(_Strict):
    name: str
    timestamp: str


class PopulationEnd(_Strict):
    """Where a customer's snapshots stop: the earliest value of a source's date column."""

    source: str
    column: str


class Population(_Strict):
    """Who has a snapshot at a boundary.

    Every customer from its first boundary at or after its start (the entity source's timestamp),
    activity or not, until the earliest `ends_at` date when there is one.
    """

    description: str
    ends_at: PopulationEnd | None = None


class Feature(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    dtype: Dtype
    description: str
    source: str
    aggregation: Aggregation
    window: Duration | None = None
    column: str | None = None
    filter: str | None = None
    default: int | float | str | bool
    cap: int | float | None = None
    # Sums and means add whole multiples of 10^-decimals (each value rounded half away from
    # zero), so the total is exact whatever the engine, plan or summation order.
    decimals: int = Field(default=6, ge=0, le=9)
    min: float | None = None
    max: float | None = None
    allowed_values: list[str] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.aggregation != "as_of" and self.window is None:
            raise ValueError(f"feature {self.name!r}: a {self.aggregation} aggregation needs a window")
        if self.aggregation in ("sum", "mean", "as_of") and self.column is None:
            raise ValueError(f"feature {self.name!r}: a {self.aggregation} aggregation needs a column")
        if self.dtype == "string" and not isinstance(self.default, str):
            raise ValueError(f"feature {self.name!r}: a string feature needs a string default")
        if self.dtype in ("int64", "float64") and (
            isinstance(self.default, bool) or not isinstance(self.default, int | float)
        ):
            raise ValueError(f"feature {self.name!r}: a numeric feature needs a numeric default")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} is above max {self.max}")
        return self

    @property
    def is_numeric(self) -> bool:
        return self.dtype in ("int64", "float64")

    @property
    def types(self) -> TypeFacts:
        """The feature's type in every system (`contracts.dtypes.TYPES`)."""
        return TYPES[self.dtype]


class ConsistencyRule(_Strict):
    name: str
    rule: str


class Outliers(_Strict):
    percentile: float = Field(gt=0, lt=1)
    action: Literal["flag", "fail"]


class DataQuality(_Strict):
    null_rate_max: float = Field(ge=0, le=1)
    unique_key: list[str]
    consistency: list[ConsistencyRule] = []
    outliers: Outliers
    freshness_max: Duration


class DriftExclusion(_Strict):
    feature: str
    reason: str = Field(min_length=1)


class Drift(_Strict):
    method: Literal["psi"]
    warn: float = Field(gt=0)
    block: float = Field(gt=0)
    baseline: str
    features: Literal["all"] | list[str]
    exclude: list[DriftExclusion] = []

    @model_validator(mode="after")
    def _ordered(self) -> Drift:
        if self.warn >= self.block:
            raise ValueError(f"drift.warn ({self.warn}) must be below drift.block ({self.block})")
        return self


class Promotion(_Strict):
    metric: Literal["pr_auc"]
    tolerance: float = Field(ge=0, le=1)


class Performance(_Strict):
    """Realised performance of served predictions (`churnops monitor`).

    Attributes:
        metric: The metric graded (`roc_auc` or `pr_auc`).
        floor: Below this the latest graded week blocks.
        max_drop: A graded week trailing the model's test figure by more than this warns.
        min_rows: Weeks with fewer matured predictions (or one class only) are reported, not graded.
    """

    metric: Literal["roc_auc", "pr_auc"] = "roc_auc"
    floor: float = Field(default=0.6, gt=0, le=1)
    max_drop: float = Field(default=0.05, ge=0, le=1)
    min_rows: int = Field(default=200, ge=1)


class AlertRouting(_Strict):
    """Where alerts go and how often one condition may repeat.

    Attributes:
        route_to: The owning team alerts are addressed to (one of `overview.owners`).
        dedup_window: One alert per condition per this long.
    """

    route_to: str = "ml-platform"
    dedup_window: Duration = timedelta(hours=1)


class Monitoring(_Strict):
    """Monitoring of what was served.

    Attributes:
        windows: The trailing windows whose served features and scores are compared with the
            champion's training and test sets.
        lookback: How far back (before the outcome window) matured predictions are evaluated.
        performance: The realised-performance grade.
        alerts: Alert routing.
    """

    windows: list[Duration] = Field(default=[timedelta(hours=24), timedelta(days=7)], min_length=1)
    lookback: Duration = timedelta(days=30)
    performance: Performance = Performance()
    alerts: AlertRouting = AlertRouting()


class Parity(_Strict):
    tolerance: float = Field(ge=0)
    sample_size: int = Field(ge=1)


class Serving(_Strict):
    freshness_max: Duration
    latency_p95_ms: float = Field(gt=0)
    shadow_reads: bool


class Privacy(_Strict):
    hash_entity_in_training_sets: bool
    pii_columns: list[str]
    retention_days: int = Field(ge=1)
    approved_consumers: list[str]


class ChangelogEntry(_Strict):
    version: int
    date: date
    change: str


class Versioning(_Strict):
    immutable_when_served: bool
    breaking_change_policy: Literal["new_major_version"]
    changelog: list[ChangelogEntry]


class FeatureContract(_Strict):
    """A feature set's contract: one row per entity per snapshot boundary."""

    overview: Overview
    entity: Entity
    time: TimeSemantics
    sources: list[SourceRef]
    population: Population | None = None
    features: list[Feature] = Field(min_length=1)
    data_quality: DataQuality
    drift: Drift
    promotion: Promotion
    parity: Parity
    serving: Serving
    monitoring: Monitoring = Monitoring()
    privacy: Privacy
    versioning: Versioning
    test_plan: list[str]

    @model_validator(mode="after")
    def _cross_checks(self) -> FeatureContract:
        names = [f.name for f in self.features]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"features: duplicated names {duplicated}")
        known_sources = {s.name for s in self.sources}
        for feature in self.features:
            if feature.source not in known_sources:
                raise ValueError(
                    f"feature {feature.name!r}: source {feature.source!r} is not listed under sources"
                )
        excluded = [x.feature for x in self.drift.exclude if x.feature not in names]
        if excluded:
            raise ValueError(f"drift.exclude names unknown features {excluded}")
        teams = [o.team for o in self.overview.owners]
        if self.monitoring.alerts.route_to not in teams:
            raise ValueError(
                f"monitoring.alerts.route_to is {self.monitoring.alerts.route_to!r}; expected one of the "
                f"owners {teams}"
            )
        if self.time.ttl < self.time.grain:
            raise ValueError("time.ttl must be at least one grain, or rows between boundaries get defaults")
        return self

    @property
    def name(self) -> str:
        return self.overview.name

    @property
    def version(self) -> int:
        return self.overview.version

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.features if f.is_numeric]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if f.dtype == "string"]

    @property
    def defaults(self) -> dict[str, int | float | str | bool]:
        return {f.name: f.default for f in self.features}

    @property
    def lookback(self) -> timedelta:
        return self.time.lookback

    def feature(self, name: str) -> Feature:
        """Look up one feature by name.

        Args:
            name: The feature's name.

        Returns:
            Its definition.

        Raises:
            KeyError: When the contract has no such feature.
        """
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"feature {name!r} is not in contract {self.name} v{self.version}")


def load_feature_contract(path: Path | str = DEFAULT_FEATURE_CONTRACT) -> FeatureContract:
    """Load and validate a feature contract.

    Args:
        path: The YAML file (default: `customer_profile.v1.yaml`).

    Returns:
        The validated contract.

    Raises:
        ContractError: When the file is missing, is not YAML, or breaks the schema; the message
            names the file, the key path and what was expected.
    """
    return _load(Path(path).resolve())


@cache
def _load(path: Path) -> FeatureContract:
    if not path.is_file():
        raise ContractError(f"contract {path} does not exist")
    return parse_contract_file(path, FeatureContract)
