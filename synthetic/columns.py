"""Vectorised builders of typed Arrow columns and the categorical draws the sources share."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from churnops.synthetic.world import US, Window


def ids(prefix: str, width: int, numbers: np.ndarray) -> pa.Array:
    """Identifiers: `prefix` + zero-padded numbers, e.g. CUST-000042.

    Args:
        prefix: The literal prefix.
        width: Digits to pad to (wider numbers are never truncated).
        numbers: The numbers.

    Returns:
        A string array.
    """
    digits = pc.utf8_lpad(pa.array(numbers, type=pa.int64()).cast(pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def labels(values: tuple[str, ...], codes: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Strings from integer codes.

    Args:
        values: The vocabulary; code i is `values[i]`.
        codes: The codes.
        valid: Where False, the row becomes null; None keeps every row.

    Returns:
        A string array.
    """
    dictionary = pa.array(values, type=pa.string())
    out = pc.take(dictionary, pa.array(codes, type=pa.int64()))
    if valid is not None:
        out = pc.if_else(pa.array(valid), out, pa.nulls(len(out), pa.string()))
    return out


def timestamps(seconds: np.ndarray) -> pa.Array:
    """Epoch seconds as microsecond UTC timestamps.

    Args:
        seconds: Whole seconds since the epoch.

    Returns:
        A `timestamp[us, UTC]` array.
    """
    return pa.array(np.asarray(seconds, dtype=np.int64) * US, type=pa.timestamp("us", tz="UTC"))


def floats(values: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """A float64 column.

    Args:
        values: The values.
        valid: Where False, the row becomes null; None keeps every row.

    Returns:
        A `double` array.
    """
    mask = None if valid is None else ~valid
    return pa.array(np.asarray(values, dtype=np.float64), type=pa.float64(), mask=mask)


def ints(values: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """An int64 column.

    Args:
        values: The values.
        valid: Where False, the row becomes null; None keeps every row.

    Returns:
        An `int64` array.
    """
    mask = None if valid is None else ~valid
    return pa.array(np.asarray(values, dtype=np.int64), type=pa.int64(), mask=mask)


def pick(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """Category codes drawn with fixed weights (inverse CDF, one uniform per row).

    Args:
        rng: The random stream.
        weights: One weight per category (need not sum to 1).
        size: How many codes to draw.

    Returns:
        The codes.
    """
    cdf = np.cumsum(weights / weights.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(weights) - 1)


def pick_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One category code per row of a weight matrix.

    Args:
        rng: The random stream.
        weights: A (rows, categories) matrix of weights.

    Returns:
        One code per row.
    """
    cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    draws = rng.random(weights.shape[0])[:, None]
    return np.minimum((cdf <= draws).sum(axis=1), weights.shape[1] - 1)


def ingested(rng: np.random.Generator, event_s: np.ndarray, window: Window) -> np.ndarray:
    """Landing times: a few minutes after each event, but never after the window end.

    Args:
        rng: The random stream.
        event_s: Event instants (epoch seconds).
        window: The generation window.

    Returns:
        The landing instants (epoch seconds).
    """
    return np.minimum(event_s + rng.integers(60, 15 * 60 + 1, event_s.size), window.end_s)
