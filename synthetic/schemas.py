"""The five sources' columns as the generator writes them, read from the source contracts.

Names, order, types and keys come from `contracts/sources/<source>.yaml`; nothing here restates
them; the Arrow type of each contract type is the lake's (`contracts.dtypes.source_arrow_type`).
One thing the contracts do not say is decided here, once: how many decimals a float gets in CSV
text (`csv_decimals`).
"""

from __future__ import annotations

import re

import pyarrow as pa

from churnops.contracts.dtypes import source_arrow_type
from churnops.contracts.source_contract import SOURCE_NAMES, ColumnType, load_source_contract

# The generator writes the sources in ingestion order (customers first), as the contracts list them.
SOURCES: tuple[str, ...] = SOURCE_NAMES

# Floats are rounded to two decimals when drawn and written with exactly that many in CSV; quiz
# scores are drawn to one decimal. The contracts state no precision, so the generator keeps it.
_DEFAULT_CSV_DECIMALS = 2
_CSV_DECIMALS: dict[tuple[str, str], int] = {("usage_events", "quiz_score"): 1}

# The identifier formats the generator can mint: a literal prefix and a fixed number of digits.
_ID_PATTERN = re.compile(r"^\^(?P<prefix>[A-Z]+-)\[0-9\]\{(?P<width>[0-9]+)\}\$$")


def column_types(source: str) -> dict[str, ColumnType]:
    """The source's columns and their contract types, in landing-file order.

    Args:
        source: The source name.

    Returns:
        Column name to contract type (`string`, `int`, `float`, `bool`, `date`, `timestamp`).
    """
    return {column.name: column.type for column in load_source_contract(source).columns}


def column_names(source: str) -> list[str]:
    """The source's column names, in landing-file order.

    Args:
        source: The source name.

    Returns:
        The names, as the contract lists them.
    """
    return load_source_contract(source).column_names


def key_column(source: str) -> str:
    """The column that identifies a row of the source.

    Args:
        source: The source name.

    Returns:
        The contract's primary key column.

    Raises:
        ValueError: When the contract's key spans several columns; the generator mints one key.
    """
    key = load_source_contract(source).primary_key
    if len(key) != 1:
        raise ValueError(
            f"source {source!r} has a composite primary key {key}; the generator needs one column"
        )
    return key[0]


def arrow_schema(source: str) -> pa.Schema:
    """The Arrow schema of the source's clean table.

    Args:
        source: The source name.

    Returns:
        One field per contract column, typed as the lake types them (`contracts.dtypes.source_arrow_type`).
    """
    return pa.schema([(name, source_arrow_type(kind)) for name, kind in column_types(source).items()])


def id_format(source: str) -> tuple[str, int]:
    """The prefix and zero-padded width of the identifiers a source mints for its key.

    Args:
        source: The source name.

    Returns:
        `(prefix, width)` read from the key column's `format`, e.g. `("CUST-", 6)` for
        `^CUST-[0-9]{6}$`.

    Raises:
        ValueError: When the key has no format of that shape.
    """
    key = key_column(source)
    pattern = load_source_contract(source).column(key).format or ""
    match = _ID_PATTERN.match(pattern)
    if match is None:
        raise ValueError(
            f"{source}.{key}: format {pattern!r} is not a prefix and fixed digits such as ^CUST-[0-9]{{6}}$"
        )
    return match["prefix"], int(match["width"])


def csv_decimals(source: str, column: str) -> int:
    """How many decimals a float column of the source is written with in CSV.

    Args:
        source: The source name.
        column: A float column of it.

    Returns:
        The number of decimals.
    """
    return _CSV_DECIMALS.get((source, column), _DEFAULT_CSV_DECIMALS)


def make_table(source: str, columns: dict[str, pa.Array]) -> pa.Table:
    """Assemble a source's clean table in contract order, with the contract's types.

    Args:
        source: The source name.
        columns: Every contract column's values, by name.

    Returns:
        The table.

    Raises:
        ValueError: When a column is missing or extra, or its values are not of the contract's type.
    """
    schema = arrow_schema(source)
    if set(columns) != set(schema.names):
        raise ValueError(
            f"{source}: built columns {sorted(columns)} differ from the contract's {sorted(schema.names)}"
        )
    for field in schema:
        if columns[field.name].type != field.type:
            raise ValueError(
                f"{source}.{field.name}: built as {columns[field.name].type}, the contract says {field.type}"
            )
    return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)
