"""Landing files → raw text frames, and the garbage check that comes before any parsing.

Every value is read as text (or None for a Parquet null) so that a bad value can be quarantined
exactly as it was delivered; typing happens in `ingestion.validate`. A file that cannot be read
as a table at all (empty, binary, no header, wrong delimiter, ragged rows, not Parquet) raises
`IngestError` with one paragraph naming the file and what was expected.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from churnops.contracts.source_contract import SourceContract
from churnops.errors import ChurnopsError

EXTENSIONS: tuple[str, ...] = (".csv", ".parquet")
_SNIFF_BYTES = 64 * 1024
_PARQUET_MAGIC = b"PAR1"
_OTHER_DELIMITERS = (";", "\t", "|")
# What an error message shows instead of a value of a column the contract marks `pii: true`.
REDACTED = "[redacted: pii]"


class IngestError(ChurnopsError, ValueError):
    """A landing file (or folder) that cannot be read as a delivery of its source."""


def find_landing_files(landing_dir: Path, sources: list[str]) -> dict[str, list[Path]]:
    """The landing files of each source: `<landing>/<source>.csv|.parquet` and `<landing>/<source>/*`.

    Args:
        landing_dir: The landing folder.
        sources: The sources to look for.

    Returns:
        Source → its files, sorted by name (a source without files maps to an empty list).

    Raises:
        IngestError: When the landing folder does not exist.
    """
    if not landing_dir.is_dir():
        raise IngestError(
            f"landing folder {landing_dir} does not exist: expected a folder holding <source>.csv or "
            f"<source>.parquet files (run `churnops generate` to create one)."
        )
    found: dict[str, list[Path]] = {}
    for source in sources:
        files = [landing_dir / f"{source}{ext}" for ext in EXTENSIONS]
        folder = landing_dir / source
        if folder.is_dir():
            files += [
                p for p in folder.iterdir() if p.suffix in EXTENSIONS and not p.name.startswith((".", "_"))
            ]
        found[source] = sorted(p for p in files if p.is_file())
    return found


def content_hash(path: Path) -> str:
    """SHA-256 of a file's bytes, the identity of a delivery for idempotent re-ingestion.

    Args:
        path: The file.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _expected(contract: SourceContract) -> str:
    return (
        f"a {contract.name} delivery: a UTF-8, comma-separated CSV whose first line is the header "
        f"{','.join(contract.column_names)} (or a Parquet file with those columns)"
    )


def check_readable(path: Path, contract: SourceContract) -> list[str]:
    """Refuse a file that is not a table of this source before anything is ingested.

    Cheap: reads at most the first 64 KiB. A header that shares some but not all columns with
    the contract passes here and fails the batch later (a missing or renamed column).

    Args:
        path: The landing file.
        contract: Its source's contract.

    Returns:
        The CSV header's field names (empty for Parquet).

    Raises:
        IngestError: When the file is empty, binary, not UTF-8, has no header line, uses
            another delimiter than a comma or repeats a column, or a `.parquet` file is not Parquet.
    """
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    expected = _expected(contract)
    if path.suffix == ".parquet":
        if not head.startswith(_PARQUET_MAGIC):
            raise IngestError(
                f"landing file {path} is not a Parquet file (no PAR1 magic bytes): expected {expected}."
            )
        return []
    if not head.strip():
        raise IngestError(f"landing file {path} is empty: expected {expected}.")
    if head.startswith(_PARQUET_MAGIC) or b"\x00" in head:
        raise IngestError(f"landing file {path} is binary, not CSV text: expected {expected}.")
    text = _decode_head(path, head, expected)
    first_line = text.splitlines()[0] if text.splitlines() else ""
    header = next(csv.reader([first_line]), [])
    names = [h.strip() for h in header]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise IngestError(
            f"landing file {path} names the column(s) {repeated} more than once: expected {expected}."
        )
    known = set(contract.column_names)
    if len(names) == 1:
        for delimiter in _OTHER_DELIMITERS:
            if delimiter in names[0]:
                raise IngestError(
                    f"landing file {path} is separated by {delimiter!r}, not commas (its first line is one "
                    f"field: {_shown(first_line, contract, delimiter=delimiter)!r}): expected {expected}."
                )
    if not known.intersection(names):
        raise IngestError(
            f"landing file {path} has no header line (its first line is {_shown(first_line, contract)!r}, "
            "which names "
            f"none of the contract's columns): expected {expected}."
        )
    return header


def _shown(line: str, contract: SourceContract, *, delimiter: str = ",") -> str:
    """A first line as an error message may quote it: no value of a PII column, ever.

    A line that may be a data row is shown with the values of the contract's PII columns
    redacted, by position; when its field count does not match the contract's columns, the
    positions mean nothing and only the header-like fields (column names) are shown.
    """
    pii = set(contract.pii_columns)
    if not pii:
        return _clip(line)
    fields = next(csv.reader([line], delimiter=delimiter), [])
    names = contract.column_names
    if len(fields) == len(names):
        shown = [REDACTED if name in pii and value.strip() not in names else value
                 for name, value in zip(names, fields, strict=True)]  # fmt: skip
    else:
        shown = [value if value.strip() in names else REDACTED for value in fields]
    return _clip(delimiter.join(shown))


def _decode_head(path: Path, head: bytes, expected: str) -> str:
    """The sniffed bytes as text; raises unless they are UTF-8."""
    try:
        return head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # A cut through a multi-byte character at the sniff boundary is not an encoding error.
        if len(head) < _SNIFF_BYTES or exc.start < len(head) - 4:
            raise IngestError(
                f"landing file {path} is not UTF-8 text (byte {exc.start} is invalid): expected {expected}."
            ) from exc
        return head[: exc.start].decode("utf-8-sig")


def read_landing_file(path: Path, contract: SourceContract) -> pa.Table:
    """Read a landing file as text, one column per header field, in file order.

    Args:
        path: A `.csv` or `.parquet` landing file.
        contract: Its source's contract (for error messages).

    Returns:
        A table of strings (null only for Parquet nulls; an empty CSV field is ""); row i is data
        row i + 1 of the file.

    Raises:
        IngestError: When the file is garbage (see `check_readable`) or its rows cannot be parsed
            (ragged CSV rows, invalid UTF-8, unreadable Parquet, a nested Parquet column).
    """
    header = check_readable(path, contract)
    expected = _expected(contract)
    if path.suffix == ".parquet":
        table = _read_parquet(path, expected)
        names = [n.strip() for n in table.column_names]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise IngestError(
                f"landing file {path} names the column(s) {repeated} more than once: expected {expected}."
            )
        return table.rename_columns(names)
    if _header_only(path):
        # pyarrow cannot skip a header without a line break after it; no rows is a valid source.
        return pa.table({h.strip(): pa.array([], pa.string()) for h in header})
    return _read_csv(path, header, expected)


def _header_only(path: Path) -> bool:
    """Whether a CSV file is one line, its header, with or without a final line break."""
    if path.stat().st_size > _SNIFF_BYTES:
        return False
    text = path.read_bytes().decode("utf-8-sig", errors="replace").rstrip("\r\n")
    return "\n" not in text and "\r" not in text


def _read_csv(path: Path, header: list[str], expected: str) -> pa.Table:
    bad_rows: list[str] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        # Name the row but never echo its text: it may hold PII.
        where = f"row {row.number}" if row.number is not None else "a row"
        bad_rows.append(f"{where} has {row.actual_columns} fields, the header has {row.expected_columns}")
        return "error"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc):
            detail = "it is not valid UTF-8 text"
        else:
            detail = _first_ragged_row(path, len(header)) or (bad_rows[0] if bad_rows else "unparseable")
        raise IngestError(f"landing file {path} has malformed rows ({detail}): expected {expected}.") from exc
    return table.rename_columns([h.strip() for h in header])


def _first_ragged_row(path: Path, width: int) -> str | None:
    """Find the first data row whose field count differs from the header's (error path only)."""
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for number, row in enumerate(reader, start=1):
            if row and len(row) != width:
                return f"data row {number} has {len(row)} fields, the header has {width}"
    return None


def _read_parquet(path: Path, expected: str) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(
            f"landing file {path} is not a readable Parquet file ({_one_line(exc)}): expected {expected}."
        ) from exc
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_nested(column.type) or pa.types.is_binary(column.type):
            raise IngestError(
                f"landing file {path}: column {name!r} has type {column.type}, which is not a scalar: "
                f"expected {expected}."
            )
        columns.append(column if pa.types.is_string(column.type) else pc.cast(column, pa.string()))
    return pa.table(columns, names=table.column_names)


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
