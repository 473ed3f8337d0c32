"""The prediction log's write-ahead journal: answered predictions survive a killed process.

Before a request is answered, its log rows are appended to a journal segment with one
`write()` on an `O_APPEND` file. That costs microseconds and no `fsync`: once `write()` returns
the bytes belong to the kernel, so SIGKILL, an OOM kill or a crash of the process loses none of
them. (Only an operating-system crash or power loss can lose what the page cache had not yet
written back, typically the last few seconds.) The SQLite log stays the one place monitoring
reads; the journal only bridges the time until the background writer has committed the rows.

The writer records, in the same transaction as the rows, the journal position up to which the
log is complete; segments wholly before it are deleted. On start-up, whatever lies after that
position is replayed into the log (see `PredictionLog`). One line is one JSON array of rows.
One service owns a journal at a time (`JournalLock`): a second one would replay, and delete, the
segments the first is still writing.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

_SEGMENT = re.compile(r"^wal-(\d{8})\.jsonl$")


class Position(NamedTuple):
    """A point in the journal: a segment number and a byte offset inside it."""

    segment: int
    offset: int


class JournalInUse(RuntimeError):
    """Another live process owns the journal (and so the prediction log)."""


class JournalLock:
    """An exclusive `flock` on `<folder>/LOCK`, held while a service owns the journal.

    The kernel drops it when the process ends, however it ends, so a killed service never
    leaves a stale lock behind.

    Args:
        folder: The journal's folder (created when missing, mode 0700).

    Raises:
        JournalInUse: When another process holds the lock; the message names its pid.
    """

    def __init__(self, *, folder: Path) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / "LOCK"
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode("ascii", errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise JournalInUse(
                f"the prediction log in {folder.parent} is in use by another service (pid {holder}); "
                "give each service its own home (--home) or stop the other one"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode("ascii"), 0)

    def release(self) -> None:
        """Release the lock (closing the file drops the `flock`)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _plain(value: Any) -> Any:
    # NumPy scalars (a model's or a store's values) are not JSON; their Python value is.
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot journal a {type(value).__name__}")


def encode(rows: list[tuple[Any, ...]]) -> bytes:
    """One journal line holding rows.

    Args:
        rows: The rows, each a tuple of JSON-representable values.

    Returns:
        The line, newline-terminated.
    """
    # Rows hold no containers that could refer to themselves: skip the circularity bookkeeping.
    line = json.dumps(rows, default=_plain, separators=(",", ":"), check_circular=False)
    return line.encode("utf-8") + b"\n"


class Journal:
    """Append-only journal segments `wal-NNNNNNNN.jsonl` in one folder (mode 0700, files 0600).

    Args:
        folder: The journal's folder (created when missing).
        first_segment: The number of the first segment this process writes.
        segment_bytes: A segment at least this large is closed and the next one opened.
    """

    def __init__(self, *, folder: Path, first_segment: int, segment_bytes: int) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folder = folder
        self._segment_bytes = segment_bytes
        self._segment = first_segment - 1
        self._fd = -1
        self._offset = 0
        self._open_next()

    def path(self, segment: int) -> Path:
        """The file of a segment."""
        return self.folder / f"wal-{segment:08d}.jsonl"

    def _open_next(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._segment += 1
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self.path(self._segment), flags, 0o600)
        self._offset = os.fstat(self._fd).st_size

    def append(self, line: bytes) -> Position:
        """Append one line (one `write()`), rotating to a new segment when this one is full.

        Args:
            line: A line from `encode`.

        Returns:
            The position just after the line.
        """
        if self._offset >= self._segment_bytes:
            self._open_next()
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._offset += len(line)
        return Position(self._segment, self._offset)

    def close(self) -> None:
        """Close the current segment."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard_before(self, segment: int) -> None:
        """Delete the segments numbered below `segment` (the log holds all their rows).

        Args:
            segment: The segment of the last committed position.
        """
        for number, path in segments(self.folder):
            if number < segment:
                path.unlink(missing_ok=True)


def segments(folder: Path) -> list[tuple[int, Path]]:
    """The journal segments in a folder, oldest first.

    Args:
        folder: The journal's folder.

    Returns:
        (segment number, path) pairs in order; empty when the folder does not exist.
    """
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _SEGMENT.match(p.name))]
    return sorted(found)


def read_after(*, folder: Path, position: Position) -> Iterator[tuple[Position, list[list[Any]]]]:
    """Every complete line after a position, in journal order.

    A last line without its newline was cut off mid-write, so its request was never answered;
    it is skipped.

    Args:
        folder: The journal's folder.
        position: Where the committed part of the journal ends.

    Yields:
        The position after each line, and the rows the line holds.
    """
    for number, path in segments(folder):
        if number < position.segment:
            continue
        start = position.offset if number == position.segment else 0
        with path.open("rb") as handle:
            handle.seek(start)
            offset = start
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                yield Position(number, offset), json.loads(line)
