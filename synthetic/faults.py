"""Fault injection: realistic bad rows added to the clean sources, and the manifest that lists them.

Faults come from their own random streams, so with `dirty_rate > 0` the clean rows are exactly
those of `dirty_rate = 0`, and the faulty rows are extra rows interleaved with them (late
arrivals, which stay valid rows, are the one in-place change).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from churnops.synthetic.columns import ids, timestamps
from churnops.synthetic.customers import customer_ids
from churnops.synthetic.schemas import SOURCES, column_types, id_format, key_column
from churnops.synthetic.text import iso_strings, stringify_times
from churnops.synthetic.world import DAY, US, Population, Window, to_datetime

FAULT_KINDS: tuple[str, ...] = (
    "duplicate_row",
    "null_key",
    "unknown_enum",
    "negative_amount",
    "malformed_timestamp",
    "unknown_customer",
    "late_arrival",
    "future_timestamp",
)

# Which faults each source can carry, and the column each one damages (None: the whole row).
# future_timestamp is limited to facts that cannot lie ahead (an event, a ticket); an invoice
# or a churn date may legitimately be scheduled, so a future one would not be a fault.
FAULT_PLAN: dict[str, tuple[tuple[str, str | None], ...]] = {
    "customers": (
        ("duplicate_row", None),
        ("null_key", "customer_id"),
        ("unknown_enum", "plan_type"),
        ("malformed_timestamp", "signup_date"),
    ),
    "usage_events": (
        ("duplicate_row", None),
        ("null_key", "event_id"),
        ("unknown_enum", "event_type"),
        ("malformed_timestamp", "event_timestamp"),
        ("unknown_customer", "customer_id"),
        ("late_arrival", "ingested_at"),
        ("future_timestamp", "event_timestamp"),
    ),
    "support_tickets": (
        ("duplicate_row", None),
        ("null_key", "ticket_id"),
        ("unknown_enum", "priority"),
        ("malformed_timestamp", "created_at"),
        ("unknown_customer", "customer_id"),
        ("future_timestamp", "created_at"),
    ),
    "billing": (
        ("duplicate_row", None),
        ("null_key", "invoice_id"),
        ("unknown_enum", "payment_status"),
        ("negative_amount", "amount"),
        ("malformed_timestamp", "invoice_date"),
        ("unknown_customer", "customer_id"),
    ),
    "churn_labels": (
        ("duplicate_row", None),
        ("null_key", "customer_id"),
        ("unknown_enum", "churn_reason"),
        ("malformed_timestamp", "churn_date"),
    ),
}

# Values outside each enum, the kind a feed starts sending before anyone updates the contract.
UNKNOWN_ENUM_VALUES: dict[str, str] = {
    "plan_type": "platinum",
    "event_type": "teleport",
    "priority": "critical",
    "payment_status": "pending",
    "churn_reason": "acquired",
}

# Pandas reads "NA", "null", "N/A" and "" as missing, so none of these may look like a null.
_MALFORMED_TIMESTAMPS: tuple[str, ...] = (
    "{y}-13-45T99:00:00Z",
    "yesterday",
    "0000-00-00T00:00:00Z",
    "{y}-02-30T25:61:00Z",
)
_MALFORMED_DATES: tuple[str, ...] = ("{y}-13-45", "yesterday", "0000-00-00", "{y}-02-30")

# Kinds that keep the copied row's key: an exact repeat, or a copy whose key is the damage.
_KEEPS_KEY = ("duplicate_row", "null_key")


@dataclass
class _Damage:
    """What one source's faulty copies draw on; `next_id` and `spare` are used up as keys are minted."""

    source: str
    rng: np.random.Generator
    window: Window
    year: int
    next_id: int
    ghost_ids: np.ndarray
    spare: np.ndarray


def fault_count(rows: int, rate: float) -> int:
    """How many rows of one fault kind a source of `rows` clean rows gets.

    At least one when both are positive, so a small dirty sample still shows every kind.

    Args:
        rows: Clean rows in the source.
        rate: The dirty rate.

    Returns:
        The count.
    """
    if rows <= 0 or rate <= 0.0:
        return 0
    return max(1, math.floor(rate * rows + 0.5))


def add_faults(
    tables: dict[str, pa.Table],
    *,
    pop: Population,
    rate: float,
    window: Window,
    stream: np.random.SeedSequence,
) -> tuple[dict[str, pa.Table], list[dict[str, object]]]:
    """Inject faults into every source, each from its own stream.

    Args:
        tables: The clean typed tables, by source.
        pop: The population the tables were drawn from.
        rate: The dirty rate (positive).
        window: The generation window.
        stream: The seed sequence for faults; one child stream per source.

    Returns:
        The tables with string time columns and faults in place, and every source's manifest
        entries in `SOURCES` order.
    """
    customers = pop.size
    # Ghosts are numbered past every customer id the customers file can contain.
    customer_extras = sum(fault_count(customers, rate) for _ in FAULT_PLAN["customers"])
    ghost_start = customers + customer_extras + 1
    ghosts = np.array(
        customer_ids(np.arange(ghost_start, ghost_start + max(1, customers // 20))).to_pylist(), dtype=str
    )
    unlabeled = np.array(customer_ids(np.flatnonzero(~pop.churned) + 1).to_pylist(), dtype=str)
    out = dict(tables)
    faults: list[dict[str, object]] = []
    fault_rngs = [np.random.default_rng(ss) for ss in stream.spawn(len(SOURCES))]
    for source, frng in zip(SOURCES, fault_rngs, strict=True):
        out[source], found = inject_faults(
            source,
            out[source],
            rate=rate,
            window=window,
            rng=frng,
            next_id=out[source].num_rows + 1 if source != "customers" else customers + 1,
            ghost_ids=ghosts,
            spare_label_ids=unlabeled,
        )
        faults += found
    return out, faults


def inject_faults(
    source: str,
    table: pa.Table,
    *,
    rate: float,
    window: Window,
    rng: np.random.Generator,
    next_id: int,
    ghost_ids: np.ndarray,
    spare_label_ids: np.ndarray,
) -> tuple[pa.Table, list[dict[str, object]]]:
    """Add faulty rows to one source's clean table and say where they landed.

    Every fault except `late_arrival` is an extra row: a copy of a random clean row with one
    thing broken and, unless the key is the broken thing or the row is an exact duplicate, a
    fresh key (so valid rows keep unique keys). Late arrivals are clean event rows whose
    `ingested_at` is moved 2-10 days after the event (never past the window end). Extra rows
    are scattered through the file; a duplicate always lands after its original.

    Args:
        source: The source name.
        table: Its clean typed table.
        rate: The dirty rate.
        window: The generation window.
        rng: This source's fault stream.
        next_id: The first unused number of the source's own id sequence.
        ghost_ids: Customer ids that exist nowhere in `customers`, for `unknown_customer`.
        spare_label_ids: Ids of customers without a churn label, the fresh keys of faulty
            `churn_labels` rows.

    Returns:
        The table with string time columns and the faults in place, and one manifest entry per
        faulty row (1-based row of the final file).
    """
    n = table.num_rows
    plan = [(kind, col, fault_count(n, rate)) for kind, col in FAULT_PLAN[source]]
    # Without replacement, so two null-key copies of one row never make an unlisted duplicate.
    sources = {
        kind: np.sort(rng.choice(n, size=count, replace=False))
        for kind, _, count in plan
        if kind != "late_arrival"
    }
    late_count = next((count for kind, _, count in plan if kind == "late_arrival"), 0)
    table, late_rows = _delay_late_arrivals(table, rng=rng, window=window, sources=sources, count=late_count)

    table = stringify_times(source, table)
    damage = _Damage(
        source=source,
        rng=rng,
        window=window,
        year=to_datetime(window.end_s).year,
        next_id=next_id,
        ghost_ids=ghost_ids,
        spare=rng.permutation(spare_label_ids),
    )
    extras: list[pa.Table] = []
    anchors: list[np.ndarray] = []
    kinds = ["late_arrival"] * late_rows.size
    cols: list[str | None] = ["ingested_at"] * late_rows.size
    for kind, col, _ in plan:
        if kind == "late_arrival":
            continue
        part, anchor = _faulty_copies(table, kind=kind, col=col, rows=sources[kind], damage=damage)
        extras.append(part)
        anchors.append(anchor)
        kinds += [kind] * part.num_rows
        cols += [col] * part.num_rows
    final, position = _interleave(table, extras=extras, anchors=anchors, rng=rng)

    rows = np.concatenate([position[late_rows], position[n:]]) + 1
    return final, _manifest_entries(source, final, rows=rows, kinds=kinds, cols=cols)


def _delay_late_arrivals(
    table: pa.Table, *, rng: np.random.Generator, window: Window, sources: dict[str, np.ndarray], count: int
) -> tuple[pa.Table, np.ndarray]:
    """Move `count` clean rows' `ingested_at` 2-10 days after their event; return the table and rows."""
    if not count:
        return table, np.zeros(0, dtype=np.int64)
    n = table.num_rows
    event_s = _seconds(table.column("event_timestamp"))
    # Extra rows are copies taken after this step: a late original would hand its late
    # ingested_at to a copy, giving that row a second fault (or breaking a duplicate).
    taken = np.zeros(n, dtype=bool)
    for src in sources.values():
        taken[src] = True
    eligible = np.flatnonzero(~taken & (event_s + 2 * DAY <= window.end_s))
    late_rows = np.sort(rng.permutation(eligible)[:count])
    room = np.minimum(10 * DAY, window.end_s - event_s[late_rows])
    delay = 2 * DAY + np.floor(rng.random(late_rows.size) * (room - 2 * DAY + 1)).astype(np.int64)
    ingested = _seconds(table.column("ingested_at"))
    ingested[late_rows] = event_s[late_rows] + delay
    i = table.schema.get_field_index("ingested_at")
    return table.set_column(i, "ingested_at", timestamps(ingested)), late_rows


def _faulty_copies(
    table: pa.Table, *, kind: str, col: str | None, rows: np.ndarray, damage: _Damage
) -> tuple[pa.Table, np.ndarray]:
    """Copies of `rows` with one fault of `kind`, and the clean row each one lands after."""
    source, rng = damage.source, damage.rng
    n = table.num_rows
    if kind not in _KEEPS_KEY and source == "churn_labels":
        # Labels have no id of their own: borrow unlabeled customers, while they last.
        rows = rows[: damage.spare.size]
    part = table.take(pa.array(rows, type=pa.int64()))
    count = part.num_rows
    if kind not in _KEEPS_KEY:
        key = key_column(source)
        part = part.set_column(part.schema.get_field_index(key), key, _fresh_keys(count, damage))
    if col is not None and kind != "duplicate_row":
        i = part.schema.get_field_index(col)
        part = part.set_column(i, col, _broken(kind, col, part.column(i), damage))
    if kind == "duplicate_row":
        anchor = rng.integers(rows, n) if count else np.zeros(0, dtype=np.int64)
    else:
        anchor = rng.integers(-1, n, count)
    return part, anchor


def _fresh_keys(count: int, damage: _Damage) -> pa.Array:
    """Unused keys for `count` faulty copies: new ids, or unlabeled customers for `churn_labels`."""
    if damage.source == "churn_labels":
        fresh, damage.spare = pa.array(damage.spare[:count], type=pa.string()), damage.spare[count:]
        return fresh
    fresh = ids(*id_format(damage.source), np.arange(damage.next_id, damage.next_id + count))
    damage.next_id += count
    return fresh


def _broken(kind: str, col: str, values: pa.ChunkedArray, damage: _Damage) -> pa.Array:
    """The damaged replacement of one column for the faulty rows of one kind."""
    count = len(values)
    rng = damage.rng
    if kind == "null_key":
        return pa.nulls(count, pa.string())
    if kind == "unknown_enum":
        return pa.array([UNKNOWN_ENUM_VALUES[col]] * count, type=pa.string())
    if kind == "negative_amount":
        return pc.negate(values.combine_chunks())
    if kind == "malformed_timestamp":
        is_date = column_types(damage.source)[col] == "date"
        return _bad_times(rng, count, _MALFORMED_DATES if is_date else _MALFORMED_TIMESTAMPS, damage.year)
    if kind == "unknown_customer":
        return pa.array(damage.ghost_ids[rng.integers(0, damage.ghost_ids.size, count)], type=pa.string())
    if kind == "future_timestamp":
        ahead = damage.window.end_s + rng.integers(DAY, 30 * DAY, count)
        return iso_strings(timestamps(ahead), "timestamp")
    raise ValueError(f"no column damage is defined for fault kind {kind!r}")


def _interleave(
    table: pa.Table, *, extras: list[pa.Table], anchors: list[np.ndarray], rng: np.random.Generator
) -> tuple[pa.Table, np.ndarray]:
    """Scatter the extra rows through the clean ones; return the file and each input row's position."""
    n = table.num_rows
    extra_anchor = np.concatenate(anchors) if anchors else np.zeros(0, dtype=np.int64)
    m = extra_anchor.size
    # Clean rows keep their order; each extra row lands right after its anchor row (-1: first).
    anchor = np.concatenate([np.arange(n), extra_anchor])
    after = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(m, dtype=np.int64)])
    tiebreak = np.concatenate([np.zeros(n), rng.random(m)])
    order = np.lexsort((tiebreak, after, anchor))
    final = pa.concat_tables([table, *extras]).take(pa.array(order, type=pa.int64()))
    position = np.empty(n + m, dtype=np.int64)
    position[order] = np.arange(n + m)
    return final, position


def _manifest_entries(
    source: str, final: pa.Table, *, rows: np.ndarray, kinds: list[str], cols: list[str | None]
) -> list[dict[str, object]]:
    """One manifest entry per faulty row (1-based `rows` of the final file), in file order."""
    keys = final.column(key_column(source)).take(pa.array(rows - 1, type=pa.int64())).to_pylist()
    faults = [
        {"source": source, "kind": kind, "row": int(row), "key": k, "column": col}
        for row, kind, k, col in zip(rows.tolist(), kinds, keys, cols, strict=True)
    ]
    faults.sort(key=lambda f: f["row"])
    return faults


def _seconds(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(pa.int64()).to_numpy() // US


def _bad_times(rng: np.random.Generator, size: int, patterns: tuple[str, ...], year: int) -> pa.Array:
    values = np.array([p.format(y=year) for p in patterns])
    return pa.array(values[rng.integers(0, len(values), size)], type=pa.string())
