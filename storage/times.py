"""Time conversions, stated once: every timestamp in the project is a UTC instant.

A naive value is read as UTC (never as the machine's local time). Instants as numbers are
microseconds since the epoch, the resolution of every timestamp in the lake; the functions differ
only in what they take (a datetime, a pandas Series, an Arrow column, an online store's raw value)
and what they give back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_DAY = 86_400_000_000


def as_utc(value: datetime) -> datetime:
    """The same instant as an aware UTC datetime.

    Args:
        value: A datetime (or pandas Timestamp, which stays one); naive is taken as UTC.

    Returns:
        The instant with `tzinfo` UTC.
    """
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def timestamp_utc(value: object) -> pd.Timestamp:
    """Anything pandas reads as a point in time, as a UTC pandas Timestamp (nanoseconds kept).

    Args:
        value: A datetime, date, pandas Timestamp, `numpy.datetime64` or ISO text; naive is UTC.

    Returns:
        The UTC Timestamp.
    """
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def to_us(value: datetime) -> int:
    """A datetime as whole microseconds since the epoch, in exact integer arithmetic.

    Args:
        value: A datetime or pandas Timestamp; naive is taken as UTC. Nanoseconds round down.

    Returns:
        Microseconds since 1970-01-01 00:00 UTC.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int) -> datetime:
    """Microseconds since the epoch as an aware UTC datetime.

    Args:
        value: Microseconds since 1970-01-01 00:00 UTC.

    Returns:
        The instant, `tzinfo` UTC.
    """
    return _EPOCH + np.timedelta64(value, "us").item()


def seconds_to_us(seconds: float) -> int:
    """A duration in seconds as whole microseconds (nearest).

    Args:
        seconds: The duration, e.g. `timedelta.total_seconds()`.

    Returns:
        The duration in microseconds.
    """
    return round(seconds * 1_000_000)


def series_to_us(values: pd.Series) -> np.ndarray:
    """A pandas column of points in time as int64 microseconds since the epoch.

    Args:
        values: Timestamps, datetimes, dates or ISO text; naive is taken as UTC. Finer than a
            microsecond rounds down.

    Returns:
        The microseconds; a missing value becomes NaT's int64 (the smallest int64).
    """
    stamps = pd.to_datetime(values, utc=True)
    return stamps.dt.tz_localize(None).astype("datetime64[us]").to_numpy().view("int64")


def epoch_micros(values: pa.ChunkedArray) -> np.ndarray:
    """An Arrow timestamp or date column as float microseconds since the epoch, NaN for null.

    Args:
        values: A `date32` column, or a timestamp column in microseconds (the lake's types; the
            stored integers are read as they are, so other units are not converted).

    Returns:
        The microseconds as float64.
    """
    if pa.types.is_date32(values.type):
        days = values.cast(pa.int32()).to_numpy(zero_copy_only=False)
        return days.astype("float64") * _US_PER_DAY
    return values.cast(pa.int64()).to_numpy(zero_copy_only=False).astype("float64")


def parse_utc(value: Any) -> datetime | None:
    """Read a timestamp in any form an online store returns one (datetime, Timestamp, epoch, ISO).

    Args:
        value: The raw value; an int or float is seconds since the epoch.

    Returns:
        A timezone-aware UTC datetime, or None when the value is missing (None or NaN).

    Raises:
        ValueError: When the value is of a type no online store returns for a timestamp.
    """
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, datetime):
        # Feast's SQLite store may hand back naive datetimes; they are UTC by contract.
        return as_utc(value)
    raise ValueError(f"snapshot_ts value {value!r} ({type(value).__name__}) is not a timestamp")
