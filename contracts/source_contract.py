"""The typed model of a source (landing-file) contract: `contracts/sources/<source>.yaml`.

A source contract says what a delivery of one source must look like (schema, types, formats,
enums, ranges, PII), how good a batch must be to be accepted (quality: completeness,
uniqueness, freshness, the share of rows that may be quarantined), how it is delivered and
kept (delivery: formats, partitioning, retention), what the producer promises (SLA) and the
executable checks (`testing:`) run in DuckDB on every batch and on the lake.

Ingestion reads every name, type, rule and threshold from here; nothing is written twice.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from churnops.contracts.durations import Duration
from churnops.contracts.errors import ContractError, parse_contract_file

SOURCES_DIR = Path(__file__).resolve().parent / "sources"

# Ingestion order matters: every other source refers to customers, so customers load first.
SOURCE_NAMES: tuple[str, ...] = ("customers", "usage_events", "support_tickets", "billing", "churn_labels")

ColumnType = Literal["string", "int", "float", "bool", "date", "timestamp"]
_NAME = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    # A typo'd key must fail loudly rather than be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Party(_Strict):
    team: str
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")


class Column(_Strict):
    """One column of the landing file and of the lake table."""

    name: str = Field(pattern=_NAME)
    type: ColumnType
    description: str
    nullable: bool = True
    format: str | None = None
    enum: list[str] | None = None
    normalize: Literal["trim", "trim_lower"] | None = None
    minimum: float | None = None
    maximum: float | None = None
    pii: bool = False
    references: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")

    @model_validator(mode="after")
    def _consistent(self) -> Column:
        if self.type != "string" and (self.format or self.enum or self.normalize):
            raise ValueError(f"column {self.name!r}: format, enum and normalize apply to string columns only")
        if self.type not in ("int", "float") and (self.minimum is not None or self.maximum is not None):
            raise ValueError(f"column {self.name!r}: minimum and maximum apply to int and float columns only")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"column {self.name!r}: minimum {self.minimum} is above maximum {self.maximum}")
        if self.enum is not None and not self.enum:
            raise ValueError(f"column {self.name!r}: enum must list at least one value")
        if self.format is not None:
            try:
                re.compile(self.format)
            except re.error as exc:
                raise ValueError(
                    f"column {self.name!r}: format is not a valid regular expression: {exc}"
                ) from exc
        if self.enum and self.normalize == "trim_lower" and any(v != v.strip().lower() for v in self.enum):
            raise ValueError(
                f"column {self.name!r}: with normalize: trim_lower every enum value must be "
                "trimmed lower case"
            )
        return self


class Schema(_Strict):
    primary_key: list[str] = Field(min_length=1)
    event_time: str
    ingested_at: str
    columns: list[Column] = Field(min_length=1)


class Uniqueness(_Strict):
    columns: list[str] = Field(min_length=1)
    min_percent: float = Field(ge=0, le=100)


class Freshness(_Strict):
    """Newest `column` at most `max_delay` old, for live batches.

    A batch whose `ingested_at` spans more than `backfill_span` is a historical load (backfill)
    and skips the rule.
    """

    column: str
    max_delay: Duration
    backfill_span: Duration


class Quality(_Strict):
    completeness: dict[str, Annotated[float, Field(ge=0, le=100)]] = {}
    uniqueness: Uniqueness
    freshness: Freshness
    max_quarantined_percent: float = Field(ge=0, le=100)
    clock_skew: Duration
    future_event_time: Literal["reject", "allow"]
    late_arrivals: Literal["flag", "ignore"]


class Partitioning(_Strict):
    column: str
    granularity: Literal["day"]


class Delivery(_Strict):
    formats: list[Literal["csv", "parquet"]] = Field(min_length=1)
    null_values: list[str] = Field(min_length=1)
    partitioning: Partitioning
    dedup: Literal["latest_ingested_at_wins"]
    retention: Duration


class Sla(_Strict):
    frequency: Literal["hourly", "daily", "weekly"]
    delivered_by: str
    support: str
    response_time: Duration


class _Check(_Strict):
    name: str | None = Field(default=None, pattern=_NAME)
    description: str | None = None
    threshold: float = Field(ge=0, le=1)


class NotNullCheck(_Check):
    """Share of rows whose `column` is present and parses; must be at least `threshold`."""

    type: Literal["not_null"]
    column: str


class AcceptedValuesCheck(_Check):
    """Share of present values of `column` that are in the schema's enum; at least `threshold`."""

    type: Literal["accepted_values"]
    column: str


class UniqueCheck(_Check):
    """Share of rows whose `columns` combination is unique; at least `threshold`."""

    type: Literal["unique"]
    columns: list[str] = Field(min_length=1)


class RangeCheck(_Check):
    """Share of present values of `column` inside the schema's minimum/maximum; at least `threshold`."""

    type: Literal["range"]
    column: str


class CustomCheck(_Check):
    """A DuckDB query returning one number, compared with `threshold` as `must_be` says.

    The rows under check are the view named after the source (e.g. `FROM billing`): the batch
    at ingestion time, the whole lake table in `churnops contracts check`.
    """

    type: Literal["custom"]
    name: str = Field(pattern=_NAME)
    sql: str
    must_be: Literal["at_least", "at_most"]
    threshold: float


Check = Annotated[
    NotNullCheck | AcceptedValuesCheck | UniqueCheck | RangeCheck | CustomCheck, Field(discriminator="type")
]


class SourceContract(_Strict):
    """A landing source's contract."""

    name: str = Field(pattern=_NAME)
    version: int = Field(ge=1)
    status: Literal["draft", "active", "deprecated"]
    description: str
    owner: Party
    consumers: list[Party] = Field(min_length=1)
    schema_: Schema = Field(alias="schema")
    quality: Quality
    delivery: Delivery
    sla: Sla
    testing: list[Check] = []

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> SourceContract:
        # In this order, so a contract breaking several rules reports the same one first.
        self._unique_column_names()
        self._key_and_time_columns()
        self._quality_and_delivery_columns()
        self._references_other_sources()
        not_null = self._testing_checks()
        self._completeness_or_not_null(not_null)
        self._unique_check_names()
        return self

    def _need(self, column: str, where: str, types: tuple[str, ...] | None = None) -> None:
        """Refuse a reference to a column the schema lacks or whose type is not one of `types`."""
        if column not in self.column_names:
            raise ValueError(f"{where}: {column!r} is not a column of schema.columns")
        if types and self.column(column).type not in types:
            raise ValueError(f"{where}: {column!r} must be a {' or '.join(types)} column")

    def _unique_column_names(self) -> None:
        """Refuse a schema naming a column twice."""
        names = self.column_names
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"schema.columns: duplicated names {duplicated}")

    def _key_and_time_columns(self) -> None:
        """The primary key is non-null columns; the event time and ingestion time have time types."""
        for key in self.schema_.primary_key:
            self._need(key, "schema.primary_key")
            if self.column(key).nullable:
                raise ValueError(f"schema.primary_key: key column {key!r} must be nullable: false")
        self._need(self.schema_.event_time, "schema.event_time", ("date", "timestamp"))
        self._need(self.schema_.ingested_at, "schema.ingested_at", ("timestamp",))

    def _quality_and_delivery_columns(self) -> None:
        """The quality rules and the partitioning name columns of the right types, never nullable ones."""
        for column in self.quality.completeness:
            self._need(column, "quality.completeness")
        for column in self.quality.uniqueness.columns:
            self._need(column, "quality.uniqueness.columns")
        self._need(self.quality.freshness.column, "quality.freshness.column", ("date", "timestamp"))
        self._need(self.delivery.partitioning.column, "delivery.partitioning.column", ("date", "timestamp"))
        for where, column in (
            ("schema.ingested_at", self.schema_.ingested_at),
            ("delivery.partitioning.column", self.delivery.partitioning.column),
        ):
            if self.column(column).nullable:
                raise ValueError(f"{where}: column {column!r} must be nullable: false")

    def _references_other_sources(self) -> None:
        """Refuse a column referencing this same source."""
        for col in self.schema_.columns:
            if col.references and col.references.split(".", 1)[0] == self.name:
                raise ValueError(f"column {col.name!r}: references must point at another source")

    def _testing_checks(self) -> set[str]:
        """Validate every check under `testing`.

        Returns:
            The columns a `not_null` check covers.
        """
        not_null: set[str] = set()
        for i, check in enumerate(self.testing):
            self._testing_check(check, f"testing.{i}")
            if isinstance(check, NotNullCheck):
                not_null.add(check.column)
        return not_null

    def _testing_check(self, check: Check, where: str) -> None:
        """A check names existing columns that have what it tests (an enum, a range, not the key)."""
        if isinstance(check, NotNullCheck):
            self._need(check.column, where)
        elif isinstance(check, AcceptedValuesCheck):
            self._need(check.column, where)
            if not self.column(check.column).enum:
                raise ValueError(f"{where}: column {check.column!r} has no enum in schema.columns")
        elif isinstance(check, RangeCheck):
            self._need(check.column, where)
            col = self.column(check.column)
            if col.minimum is None and col.maximum is None:
                raise ValueError(f"{where}: column {check.column!r} has no minimum or maximum")
        elif isinstance(check, UniqueCheck):
            for column in check.columns:
                self._need(column, where)
            if check.columns == self.schema_.primary_key:
                raise ValueError(f"{where}: the primary key's uniqueness belongs in quality.uniqueness")

    def _completeness_or_not_null(self, not_null: set[str]) -> None:
        """Refuse a column required both by `quality.completeness` and by a `not_null` check."""
        both = sorted(not_null & set(self.quality.completeness))
        if both:
            raise ValueError(
                f"columns {both} are in both quality.completeness and a not_null check: keep one"
            )

    def _unique_check_names(self) -> None:
        """Refuse two checks under `testing` with the same name."""
        check_names = [c.name for c in self.testing if c.name]
        repeated = sorted({n for n in check_names if check_names.count(n) > 1})
        if repeated:
            raise ValueError(f"testing: duplicated check names {repeated}")

    @property
    def columns(self) -> list[Column]:
        """The schema's columns, in landing-file order."""
        return list(self.schema_.columns)

    @property
    def column_names(self) -> list[str]:
        """The names of the schema's columns, in landing-file order."""
        return [c.name for c in self.schema_.columns]

    @property
    def primary_key(self) -> list[str]:
        """The columns that identify a record; duplicates by key are resolved on ingestion."""
        return list(self.schema_.primary_key)

    @property
    def pii_columns(self) -> list[str]:
        """Columns marked `pii: true`; they live only in this source's lake table."""
        return [c.name for c in self.schema_.columns if c.pii]

    @property
    def partition_column(self) -> str:
        """The date or timestamp column whose UTC day names the lake partition."""
        return self.delivery.partitioning.column

    def column(self, name: str) -> Column:
        """Look up one column by name.

        Args:
            name: The column's name.

        Returns:
            Its definition.

        Raises:
            KeyError: When the schema has no such column.
        """
        for col in self.schema_.columns:
            if col.name == name:
                return col
        raise KeyError(f"column {name!r} is not in source contract {self.name} v{self.version}")


def source_contract_path(name: str) -> Path:
    """The YAML file of a source's contract.

    Args:
        name: The source, e.g. `billing`.

    Returns:
        `contracts/sources/<name>.yaml`.
    """
    return SOURCES_DIR / f"{name}.yaml"


def load_source_contract(name: str, *, path: Path | str | None = None) -> SourceContract:
    """Load and validate one source contract.

    Args:
        name: The source, e.g. `usage_events`.
        path: Read this file instead of `contracts/sources/<name>.yaml`.

    Returns:
        The validated contract.

    Raises:
        ContractError: When the file is missing, is not YAML, breaks the schema, or names another
            source; the message names the file, the key path and what was expected.
    """
    return _load(name, Path(path or source_contract_path(name)).resolve())


def load_source_contracts(*, directory: Path | str | None = None) -> dict[str, SourceContract]:
    """Load the five source contracts, in ingestion order (customers first).

    Args:
        directory: Read `<directory>/<source>.yaml` instead of `contracts/sources/`.

    Returns:
        Source name → contract.

    Raises:
        ContractError: When any contract is missing or invalid.
    """
    folder = Path(directory) if directory is not None else SOURCES_DIR
    return {name: load_source_contract(name, path=folder / f"{name}.yaml") for name in SOURCE_NAMES}


def _load(name: str, path: Path) -> SourceContract:
    if not path.is_file():
        raise ContractError(
            f"source contract {path} does not exist: expected a YAML file for source {name!r}"
        )
    stat = path.stat()
    # Keyed on the file's mtime and size so an edited contract is re-read, an unchanged one is not.
    return _parse(name, path, stat.st_mtime_ns, stat.st_size)


@cache
def _parse(name: str, path: Path, mtime_ns: int, size: int) -> SourceContract:
    contract = parse_contract_file(path, SourceContract)
    if contract.name != name:
        raise ContractError(
            f"contract {path} is invalid:\n  - name: expected {name!r}, got {contract.name!r}"
        )
    return contract
