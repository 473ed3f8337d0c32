"""The text forms of typed columns: ISO-8601 times and fixed-decimal floats."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from churnops.synthetic.schemas import column_types, csv_decimals


def iso_strings(column: pa.ChunkedArray | pa.Array, kind: str) -> pa.Array:
    """ISO-8601 text of a timestamp (`2026-07-24T13:05:12Z`) or date (`2026-07-24`) column.

    Args:
        column: The column; a string column is returned as it is.
        kind: Its contract type, `timestamp` or `date`.

    Returns:
        The text.
    """
    if pa.types.is_string(column.type):
        return column
    if kind == "date":
        return pc.cast(column, pa.string())
    # Arrow renders "2026-07-24 13:05:12"; the text is ASCII, so a byte slice swap is safe.
    text = pc.binary_join_element_wise(pc.cast(pc.cast(column, pa.timestamp("s")), pa.string()), "Z", "")
    return pc.binary_replace_slice(text, 10, 11, "T")


def stringify_times(source: str, table: pa.Table) -> pa.Table:
    """Replace every timestamp and date column by its ISO-8601 text.

    Args:
        source: The source name.
        table: A table of that source.

    Returns:
        The table with string time columns.
    """
    for name, kind in column_types(source).items():
        if kind in ("timestamp", "date"):
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, iso_strings(table.column(i), kind))
    return table


def _fixed_decimals(column: pa.ChunkedArray, decimals: int) -> pa.Array:
    """Floats as text with exactly `decimals` decimals (Arrow would write 30.0 as `30`)."""
    values = column.to_numpy(zero_copy_only=False)
    valid = ~np.isnan(values)
    scaled = np.rint(np.abs(np.where(valid, values, 0.0)) * 10**decimals).astype(np.int64)
    whole = pa.array(scaled // 10**decimals).cast(pa.string())
    frac = pc.utf8_lpad(pa.array(scaled % 10**decimals).cast(pa.string()), decimals, "0")
    sign = pa.array(np.where(values < 0, "-", ""), type=pa.string())
    text = pc.binary_join_element_wise(sign, whole, ".", frac, "")
    return pc.if_else(pa.array(valid), text, pa.nulls(len(text), pa.string()))


def to_csv_table(source: str, table: pa.Table) -> pa.Table:
    """The table as CSV text columns: ISO times, fixed-decimal floats; other types as they are.

    Args:
        source: The source name.
        table: A table of that source.

    Returns:
        The table to hand to the CSV writer.
    """
    table = stringify_times(source, table)
    for name, kind in column_types(source).items():
        if kind == "float":
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, _fixed_decimals(table.column(i), csv_decimals(source, name)))
    return table
