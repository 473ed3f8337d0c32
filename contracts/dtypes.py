"""What a contract's type is in every system that holds it: one table for features, one for sources.

Frames (pandas/NumPy), the offline table (Arrow/Parquet), the generated SQL (DuckDB) and the
Feast definitions all read a feature's types from `TYPES`, so a contract type means the same
thing everywhere. The Arrow and Feast types are named, not imported: contracts stay free of
pyarrow and Feast, and each stage resolves the name where it already imports the library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class TypeFacts:
    """One contract type as each system spells it.

    Attributes:
        numpy: The NumPy dtype name of a frame column (strings are Python objects).
        arrow: The pyarrow type alias (`pyarrow.type_for_alias`) of the Arrow and Parquet column.
        sql: The DuckDB type the generated SQL casts the value to.
        feast: The name of the Feast type in `feast.types` (a feature's `Field` dtype).
        feast_value: The name of the Feast `ValueType` member (an entity's join key).
    """

    numpy: str
    arrow: str
    sql: str
    feast: str
    feast_value: str

    @property
    def arrow_type(self) -> pa.DataType:
        """The pyarrow type named by `arrow`."""
        import pyarrow as pa

        return pa.type_for_alias(self.arrow)


# The contract type `timestamp` has no entry: no contract's feature has it, and no stage
# computes or stores one.
TYPES: dict[str, TypeFacts] = {
    "int64": TypeFacts(numpy="int64", arrow="int64", sql="BIGINT", feast="Int64", feast_value="INT64"),
    "float64": TypeFacts(
        numpy="float64", arrow="float64", sql="DOUBLE", feast="Float64", feast_value="DOUBLE"
    ),
    "string": TypeFacts(numpy="object", arrow="string", sql="VARCHAR", feast="String", feast_value="STRING"),
    "bool": TypeFacts(numpy="bool", arrow="bool", sql="BOOLEAN", feast="Bool", feast_value="BOOL"),
}


def source_arrow_type(kind: str) -> pa.DataType:
    """The Arrow type of a source column of contract type `kind`, as the lake stores it.

    Ingestion writes the lake with these types, and the generator writes clean Parquet with the
    same ones, so a clean file needs no conversion on the way in.

    Args:
        kind: A source contract's column type (`string`, `int`, `float`, `bool`, `date`, `timestamp`).

    Returns:
        The Arrow type; timestamps are microseconds in UTC.
    """
    import pyarrow as pa

    return {
        "string": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }[kind]
