"""Synthetic landing zone: the five churn sources as CSV or Parquet files, from one seed.

The data comes from one latent world per seed (`churnops.synthetic.world`). Each source has a
small pure function that turns the world into a typed Arrow table (`customers`, `usage`,
`tickets`, `billing`, `labels`), its columns as the source contract lists them
(`churnops.synthetic.schemas`); `generate` wires them together, optionally injects faults
(`churnops.synthetic.faults`) and writes the files (`churnops.synthetic.writer`). Everything is
vectorised with NumPy: there is no Python loop over customers, days or events.

Randomness comes from one ``numpy.random.SeedSequence(seed)`` split into one independent
stream per purpose, so a change in one source (or turning fault injection on) never shifts
the numbers another source draws: with ``dirty_rate > 0`` the clean rows are exactly those of
``dirty_rate = 0``, and the faulty rows are extra rows interleaved with them (late arrivals,
which stay valid rows, are the one in-place change).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from churnops.synthetic.billing import build_billing
from churnops.synthetic.customers import build_customers
from churnops.synthetic.faults import add_faults
from churnops.synthetic.labels import build_churn_labels
from churnops.synthetic.schemas import SOURCES
from churnops.synthetic.tickets import build_support_tickets
from churnops.synthetic.usage import build_usage_events
from churnops.synthetic.world import Population, Window, build_population, resolve_window, to_datetime
from churnops.synthetic.writer import MANIFEST_NAME, write_manifest, write_source


@dataclass(frozen=True)
class GenerateResult:
    """What `generate` wrote.

    Attributes:
        out_dir: The folder holding the files.
        start: First instant of the window (UTC-aware).
        end: End of the window (UTC-aware); nothing is dated or ingested after it, except
            injected `future_timestamp` faults.
        files: Source name to the file written for it, in `SOURCES` order.
        rows: Source name to the number of data rows in its file (injected faults included).
        manifest: The fault manifest, or None when `dirty_rate` was 0.
    """

    out_dir: Path
    start: datetime
    end: datetime
    files: dict[str, Path]
    rows: dict[str, int]
    manifest: Path | None


def generate(
    *,
    out_dir: Path,
    customers: int = 2000,
    days: int = 120,
    seed: int = 42,
    churn_base_rate: float = 0.35,
    paid_ratio: float = 0.35,
    start: datetime | date | None = None,
    fmt: Literal["csv", "parquet"] = "csv",
    dirty_rate: float = 0.0,
) -> GenerateResult:
    """Generate the five landing sources into `out_dir`.

    With an explicit `start`, the same arguments always give byte-identical files.

    Args:
        out_dir: Folder for `<source>.csv` / `<source>.parquet` (created if missing).
        customers: Number of customers (>= 1).
        days: Window length in days (>= 1).
        seed: Random seed (>= 0).
        churn_base_rate: Base churn probability in [0, 1]: the chance that a customer decides to
            leave within the window's last three quarters (scaled by seat utilization and plan). An
            annual-contract customer (65% of paid customers) can only act on it when a signup
            anniversary falls in that part of the window, which happens for a share `r` of them
            (90/371 for 120 days, from signups spread evenly over 30-400 days before the window).
            The realised rate is about
            `churn_base_rate * 0.986 * (1 - 0.25 * paid_ratio - 0.4875 * paid_ratio * (1 - r))`.
        paid_ratio: Share of customers on paid plans (pro or enterprise) in [0, 1].
        start: Window start: a datetime (naive means UTC), a date (00:00 UTC), or None for a
            window of `days` ending at the current UTC hour.
        fmt: "csv" or "parquet".
        dirty_rate: In [0, 1]; when positive, about this share of each source's rows per
            applicable fault kind is injected and `_manifest.json` lists every faulty row.
            At 0 no faults are injected and a stale manifest is removed.

    Returns:
        What was written.

    Raises:
        ValueError: If an argument is out of range.
    """
    customers = _check_int("customers", customers, 1)
    days = _check_int("days", days, 1)
    seed = _check_int("seed", seed, 0)
    churn_base_rate = _check_rate("churn_base_rate", churn_base_rate)
    paid_ratio = _check_rate("paid_ratio", paid_ratio)
    dirty_rate = _check_rate("dirty_rate", dirty_rate)
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}.")
    window = resolve_window(start=start, days=days)

    # One independent stream per purpose: fixed order, so adding a purpose means appending.
    population_stream, *source_streams, faults_stream = np.random.SeedSequence(seed).spawn(7)
    pop = build_population(
        customers=customers,
        window=window,
        churn_base_rate=churn_base_rate,
        paid_ratio=paid_ratio,
        rng=np.random.default_rng(population_stream),
    )
    tables = build_sources(pop, window=window, streams=source_streams)
    faults: list[dict[str, object]] = []
    if dirty_rate > 0:
        tables, faults = add_faults(tables, pop=pop, rate=dirty_rate, window=window, stream=faults_stream)
    out_dir = Path(out_dir)
    files, manifest = _write_files(
        tables, out_dir=out_dir, fmt=fmt, seed=seed, dirty_rate=dirty_rate, faults=faults
    )
    return GenerateResult(
        out_dir=out_dir,
        start=to_datetime(window.start_s),
        end=to_datetime(window.end_s),
        files=files,
        rows={source: tables[source].num_rows for source in SOURCES},
        manifest=manifest,
    )


def build_sources(
    pop: Population, *, window: Window, streams: list[np.random.SeedSequence]
) -> dict[str, pa.Table]:
    """Draw the five clean source tables from the world.

    Args:
        pop: The population.
        window: The generation window.
        streams: One seed sequence per source, in `SOURCES` order.

    Returns:
        The typed tables, by source, in `SOURCES` order.
    """
    rngs = {s: np.random.default_rng(ss) for s, ss in zip(SOURCES, streams, strict=True)}
    # Billing goes first: a plan change it draws is the customers row's last change.
    billing, plan_change_s = build_billing(pop, window, rngs["billing"])
    return {
        "customers": build_customers(pop, window, rngs["customers"], plan_change_s=plan_change_s),
        "usage_events": build_usage_events(pop, window, rngs["usage_events"]),
        "support_tickets": build_support_tickets(pop, window, rngs["support_tickets"]),
        "billing": billing,
        "churn_labels": build_churn_labels(pop, window, rngs["churn_labels"]),
    }


def _write_files(
    tables: dict[str, pa.Table],
    *,
    out_dir: Path,
    fmt: str,
    seed: int,
    dirty_rate: float,
    faults: list[dict[str, object]],
) -> tuple[dict[str, Path], Path | None]:
    """Write every source, and the manifest when dirty (removing a stale one when clean)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for source in SOURCES:
        files[source] = out_dir / f"{source}.{fmt}"
        write_source(source, tables[source], files[source], fmt)
    manifest_path = out_dir / MANIFEST_NAME
    if dirty_rate > 0:
        write_manifest(manifest_path, seed=seed, dirty_rate=dirty_rate, faults=faults)
        return files, manifest_path
    manifest_path.unlink(missing_ok=True)
    return files, None


def _check_int(name: str, value: object, minimum: int) -> int:
    # bool is an int subclass, and True customers is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}; pass an int.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}; pass {minimum} or more.")
    return int(value)


def _check_rate(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}.")
    rate = float(value)
    if not 0.0 <= rate <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be between 0 and 1 (a fraction, not a percentage), got {value!r}.")
    return rate
