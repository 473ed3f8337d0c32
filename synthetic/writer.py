"""Writing the sources and the fault manifest: CSV or Parquet, each file atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from churnops.storage.atomic import write_atomic
from churnops.synthetic.text import to_csv_table

MANIFEST_NAME = "_manifest.json"


def _write_csv(table: pa.Table, path: Path) -> None:
    # Arrow quotes every string and the header unless told not to; plain values keep readers'
    # type sniffing simple. Our values never hold a comma, quote or newline, but should one
    # ever appear, quoting where needed keeps the file valid.
    header = (",".join(table.column_names) + "\n").encode()
    for style in ("none", "needed"):
        try:
            with path.open("wb") as sink:
                sink.write(header)
                pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style=style))
            return
        except pa.ArrowInvalid:
            if style == "needed":
                raise


def write_source(source: str, table: pa.Table, path: Path, fmt: str) -> None:
    """Write one source table as CSV (ISO text times, empty = null) or Parquet, atomically.

    Args:
        source: The source name.
        table: Its table (typed, or with string time columns when dirty).
        path: Destination file.
        fmt: "csv" or "parquet".
    """
    if fmt == "csv":
        text = to_csv_table(source, table)
        write_atomic(path, lambda tmp: _write_csv(text, tmp))
    else:
        write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def write_manifest(path: Path, *, seed: int, dirty_rate: float, faults: list[dict[str, object]]) -> None:
    """Write the fault manifest atomically.

    Args:
        path: Destination file.
        seed: The run's seed.
        dirty_rate: The run's dirty rate.
        faults: One entry per faulty row, in file order.
    """
    # One fault per line keeps a large manifest diffable and greppable while staying plain JSON.
    head = f'{{"seed": {json.dumps(seed)}, "dirty_rate": {json.dumps(dirty_rate)}, "faults": ['
    lines = ",\n".join("  " + json.dumps(f) for f in faults)
    body = head + ("\n" + lines + "\n" if faults else "") + "]}\n"
    write_atomic(path, lambda tmp: tmp.write_text(body, encoding="utf-8"))
