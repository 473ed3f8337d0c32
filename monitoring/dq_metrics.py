"""Data-quality figures of a home as Prometheus gauges, computed when they are scraped.

Per source, from its latest settled batch (`ok` or `failed`) in the ingestion log and that batch's
quarantine file (each quarantined row carries its first violated rule):

- `freshness_hours`: hours since the newest `ok` batch of the source was committed (+Inf when it
  never had one): how long the source has gone without a delivery reaching the lake. Its score is
  100 when within the source contract's `quality.freshness.max_delay`, else 0.
- `completeness_percent`: 100 * (received - rows quarantined for a missing value: rules
  `missing_column`, `null_key`, `not_null`) / received.
- `validity_percent`: 100 * accepted / received (rows that reached the lake).
- `uniqueness_percent`: 100 * (1 - duplicate ratio); `duplicate_ratio` = duplicates / received.
- `consistency_percent`: 100 * (received - rows quarantined for breaking a relation to other
  records: `unknown_<reference>`, `future_timestamp`) / received.
- `quarantine_ratio`: quarantined / received.
- `score_percent`: the mean of the five dimension scores (freshness, completeness, validity,
  uniqueness, consistency); the sources' target is above 95.

A batch with no rows scores 100 on every row-based dimension. Features: the age of the newest
snapshot in the offline table (each refresh appends exactly the rows it loads online, so this is
also the age of the online store's last materialization), and the results `churnops quality
--json <home>/reports/quality.json` left: failed checks per scope, and each check's figure.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from churnops.contracts.feature_contract import FeatureContract, load_feature_contract
from churnops.contracts.source_contract import SourceContract, load_source_contracts
from churnops.features.table import SNAPSHOT_TS, list_partitions, partition_path, table_name
from churnops.ingestion.log import read_log
from churnops.storage import layout

log = logging.getLogger(__name__)

COMPLETENESS_RULES = frozenset({"missing_column", "null_key", "not_null"})
CONSISTENCY_RULES = frozenset({"future_timestamp"})
REFERENCE_RULE_PREFIX = "unknown_"
SETTLED = frozenset({"ok", "failed"})
QUALITY_RESULTS = layout.REPORTS_DIR / "quality.json"
PREFIX = "churnops_dq_"


@dataclass(frozen=True)
class SourceQuality:
    """The data-quality figures of one source's latest batch.

    Attributes:
        source: The source.
        batch: The latest settled batch.
        status: Its status (`ok` or `failed`).
        finished_at: When it finished.
        received: Its data rows.
        accepted: Rows it wrote to the lake.
        quarantined: Rows it quarantined.
        duplicates: Rows it dropped as duplicates.
        incomplete: Quarantined rows whose first violation is a missing value.
        inconsistent: Quarantined rows whose first violation breaks a relation to other records.
        freshness_hours: Hours since the newest `ok` batch was committed (inf when none).
        freshness_max_hours: The contract's `quality.freshness.max_delay`, in hours.
    """

    source: str
    batch: str
    status: str
    finished_at: datetime
    received: int
    accepted: int
    quarantined: int
    duplicates: int
    incomplete: int
    inconsistent: int
    freshness_hours: float
    freshness_max_hours: float

    def _share(self, rows: int) -> float:
        return rows / self.received if self.received else 0.0

    @property
    def completeness_percent(self) -> float:
        """Share of received rows with every required value present, in percent."""
        return 100.0 * (1.0 - self._share(self.incomplete))

    @property
    def validity_percent(self) -> float:
        """Accepted / received, in percent."""
        return 100.0 * self._share(self.accepted) if self.received else 100.0

    @property
    def duplicate_ratio(self) -> float:
        """Duplicates / received."""
        return self._share(self.duplicates)

    @property
    def uniqueness_percent(self) -> float:
        """100 * (1 - duplicate ratio)."""
        return 100.0 * (1.0 - self.duplicate_ratio)

    @property
    def consistency_percent(self) -> float:
        """Share of received rows consistent with other records, in percent."""
        return 100.0 * (1.0 - self._share(self.inconsistent))

    @property
    def quarantine_ratio(self) -> float:
        """Quarantined / received."""
        return self._share(self.quarantined)

    @property
    def freshness_percent(self) -> float:
        """100 when the source delivered within its contract's max delay, else 0."""
        return 100.0 if self.freshness_hours <= self.freshness_max_hours else 0.0

    @property
    def score_percent(self) -> float:
        """The mean of the freshness, completeness, validity, uniqueness and consistency scores."""
        dimensions = (
            self.freshness_percent,
            self.completeness_percent,
            self.validity_percent,
            self.uniqueness_percent,
            self.consistency_percent,
        )
        return sum(dimensions) / len(dimensions)


def quarantine_rules(quarantine_file: str | None) -> Counter[str]:
    """Quarantined rows per first violated rule.

    Args:
        quarantine_file: The batch's quarantine file (None when nothing was quarantined).

    Returns:
        Rule → rows; empty when there is no file.
    """
    if not quarantine_file or not Path(quarantine_file).is_file():
        return Counter()
    rules = pq.read_table(quarantine_file, columns=["_rule"]).column("_rule").to_pylist()
    return Counter(rules)


def is_inconsistent(rule: str) -> bool:
    """Whether a quarantine rule is a broken relation to other records (a reference, time order)."""
    return rule in CONSISTENCY_RULES or rule.startswith(REFERENCE_RULE_PREFIX)


def source_quality(
    *,
    last: Mapping[str, Any],
    last_ok: Mapping[str, Any] | None,
    rules: Counter[str],
    contract: SourceContract,
    now: datetime,
) -> SourceQuality:
    """The figures of one source.

    Args:
        last: The log row of its latest settled batch.
        last_ok: The log row of its latest `ok` batch, if any.
        rules: Quarantined rows of `last` per first violated rule.
        contract: The source's contract.
        now: The reference time for freshness (timezone-aware).

    Returns:
        The figures.
    """
    if last_ok is None:
        freshness = math.inf
    else:
        freshness = (now - datetime.fromisoformat(last_ok["finished_at"])).total_seconds() / 3600
    return SourceQuality(
        source=last["source"],
        batch=last["batch"],
        status=last["status"],
        finished_at=datetime.fromisoformat(last["finished_at"]),
        received=int(last["received"] or 0),
        accepted=int(last["accepted"] or 0),
        quarantined=int(last["quarantined"] or 0),
        duplicates=int(last["duplicates"] or 0),
        incomplete=sum(n for rule, n in rules.items() if rule in COMPLETENESS_RULES),
        inconsistent=sum(n for rule, n in rules.items() if is_inconsistent(rule)),
        freshness_hours=freshness,
        freshness_max_hours=contract.quality.freshness.max_delay.total_seconds() / 3600,
    )


def latest_batches(
    rows: list[dict[str, Any]],
) -> dict[str, tuple[dict[str, Any], dict[str, Any] | None]]:
    """Each source's latest settled batch and latest `ok` batch.

    Args:
        rows: Ingestion-log rows, in any order.

    Returns:
        Source → (latest settled row, latest `ok` row or None); sources without a settled batch
        are left out.
    """
    settled = sorted((r for r in rows if r["status"] in SETTLED), key=lambda r: (r["finished_at"], r["id"]))
    latest: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {}
    for row in settled:
        _, ok = latest.get(row["source"], (row, None))
        latest[row["source"]] = (row, row if row["status"] == "ok" else ok)
    return latest


def read_source_quality(
    *, log_db: Path, contracts: Mapping[str, SourceContract], now: datetime
) -> list[SourceQuality]:
    """The figures of every source with a settled batch, in contract order.

    Args:
        log_db: The ingestion log.
        contracts: Source name → contract.
        now: The reference time for freshness (timezone-aware).

    Returns:
        One entry per source the log knows and a contract describes.
    """
    latest = latest_batches(read_log(log_db))
    return [
        source_quality(
            last=latest[name][0],
            last_ok=latest[name][1],
            rules=quarantine_rules(latest[name][0]["quarantine_file"]),
            contract=contract,
            now=now,
        )
        for name, contract in contracts.items()
        if name in latest
    ]


def newest_snapshot(*, features_dir: Path, contract: FeatureContract) -> datetime | None:
    """The newest `snapshot_ts` of the offline feature table (its newest partition holds it).

    Args:
        features_dir: The features folder.
        contract: The feature contract.

    Returns:
        The time (UTC), or None when nothing was built.
    """
    days = list_partitions(features_dir, contract)
    if not days:
        return None
    column = pq.read_table(partition_path(features_dir, contract, days[-1]), columns=[SNAPSHOT_TS])
    values = [v for v in column.column(SNAPSHOT_TS).to_pylist() if v is not None]
    return max(values).astimezone(UTC) if values else None


def read_quality_results(path: Path) -> dict[str, Any] | None:
    """The document `churnops quality --json` wrote, or None when there is none.

    Args:
        path: The JSON file.

    Returns:
        The parsed document.
    """
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, labels=labels or [])


def source_families(figures: list[SourceQuality]) -> list[Metric]:
    """The per-source gauges.

    Args:
        figures: One entry per source.

    Returns:
        The metric families (each labelled by `source`).
    """
    spec: list[tuple[str, str, Callable[[SourceQuality], float]]] = [
        ("source_freshness_hours", "Hours since the source's newest ok batch was committed.",
         lambda q: q.freshness_hours),
        ("source_freshness_max_hours", "The source contract's freshness bound (max_delay), in hours.",
         lambda q: q.freshness_max_hours),
        ("source_completeness_percent", "Received rows with every required value, last batch.",
         lambda q: q.completeness_percent),
        ("source_validity_percent", "Accepted / received rows of the last batch, in percent.",
         lambda q: q.validity_percent),
        ("source_uniqueness_percent", "100 x (1 - duplicate ratio) of the last batch.",
         lambda q: q.uniqueness_percent),
        ("source_consistency_percent", "Received rows with no broken reference or time order, last batch.",
         lambda q: q.consistency_percent),
        ("source_duplicate_ratio", "Duplicate / received rows of the last batch.",
         lambda q: q.duplicate_ratio),
        ("source_quarantine_ratio", "Quarantined / received rows of the last batch.",
         lambda q: q.quarantine_ratio),
        ("source_score_percent", "Mean of the freshness, completeness, validity, uniqueness and "
         "consistency scores.", lambda q: q.score_percent),
        ("source_last_batch_timestamp_seconds", "When the last settled batch finished (Unix time).",
         lambda q: q.finished_at.timestamp()),
    ]  # fmt: skip
    families = []
    for name, documentation, value in spec:
        family = _gauge(name, documentation, ["source"])
        for q in figures:
            family.add_metric([q.source], value(q))
        families.append(family)
    rows = _gauge("source_last_batch_rows", "Rows of the last settled batch, by outcome.", ["source", "rows"])
    for q in figures:
        for kind in ("received", "accepted", "quarantined", "duplicates"):
            rows.add_metric([q.source, kind], float(getattr(q, kind)))
    families.append(rows)
    return families


def feature_families(
    *, newest: datetime | None, table: str, results: dict[str, Any] | None, now: datetime
) -> list[Metric]:
    """The feature gauges: snapshot age, and the last `churnops quality` results.

    Args:
        newest: The newest snapshot time, or None when nothing was built.
        table: The feature table's name (the `table` label).
        results: The quality document, or None.
        now: The reference time.

    Returns:
        The metric families (only those with something to say).
    """
    families: list[Metric] = []
    if newest is not None:
        age = _gauge(
            "feature_snapshot_age_hours",
            "Hours since the newest snapshot of the offline table (also the online store's last refresh).",
            ["table"],
        )
        age.add_metric([table], (now - newest).total_seconds() / 3600)
        families.append(age)
    if results is None:
        return families
    failed = _gauge("feature_checks_failed", "Failed data-quality checks at the last quality run.", ["scope"])
    passed = _gauge("feature_check_passed", "1 when the check passed (or only flagged), 0 when it failed.",
                    ["scope", "rule", "target"])  # fmt: skip
    figure = _gauge("feature_check_figure", "The figure each check measured.", ["scope", "rule", "target"])
    for report in results.get("reports", []):
        checks = [c for c in report["checks"] if c["outcome"] != "skip"]
        failed.add_metric([report["scope"]], float(sum(c["outcome"] == "fail" for c in checks)))
        for c in checks:
            labels = [report["scope"], c["rule"], c["target"]]
            passed.add_metric(labels, 0.0 if c["outcome"] == "fail" else 1.0)
            figure.add_metric(labels, float("nan") if c["figure"] is None else float(c["figure"]))
    return [*families, failed, passed, figure]


class DataQualityCollector(Collector):
    """Reads a home's data-quality figures on every scrape (nothing is cached).

    Args:
        home: The workspace.
        source_contracts: Source name → contract (default: the shipped contracts).
        feature_contract: The feature contract (default: `customer_profile` v1).
        clock: The current time (timezone-aware).
    """

    def __init__(
        self,
        *,
        home: Path,
        source_contracts: Mapping[str, SourceContract] | None = None,
        feature_contract: FeatureContract | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.home = home
        self.source_contracts = source_contracts or load_source_contracts()
        self.feature_contract = feature_contract or load_feature_contract()
        self.clock = clock

    def describe(self) -> list[Metric]:
        # Registering must not read the home (it may not exist yet); names are known at scrape.
        return []

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        errors = _gauge("collect_errors", "1 when a part of the figures could not be read (see the log).",
                        ["part"])  # fmt: skip
        parts: list[tuple[str, Callable[[], list[Metric]]]] = [
            ("sources", lambda: source_families(self._sources(now))),
            ("features", lambda: self._features(now)),
        ]
        for part, read in parts:
            try:
                yield from read()
                errors.add_metric([part], 0.0)
            except (OSError, ValueError, KeyError, TypeError, sqlite3.Error) as exc:
                # One unreadable file must not take every other metric of the scrape with it.
                log.warning(
                    "data-quality metrics: cannot read the %s figures of %s: %s", part, self.home, exc
                )
                errors.add_metric([part], 1.0)
        yield errors

    def _sources(self, now: datetime) -> list[SourceQuality]:
        return read_source_quality(
            log_db=self.home / layout.INGESTION_LOG, contracts=self.source_contracts, now=now
        )

    def _features(self, now: datetime) -> list[Metric]:
        features_dir = self.home / layout.FEATURES_DIR
        return feature_families(
            newest=newest_snapshot(features_dir=features_dir, contract=self.feature_contract),
            table=table_name(self.feature_contract),
            results=read_quality_results(self.home / QUALITY_RESULTS),
            now=now,
        )
