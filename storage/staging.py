"""Several files committed as one: stage every file under a temporary name, then rename them all.

`StagedFiles` collects the writes (and removals) of one commit. Each file is written to a hidden
temporary beside its final path (`.<name>.<tag>.tmp`, same folder, so the rename cannot cross a
file system) and flushed to disk. The caller then durably records the commit (`to_record`) — that
record is the commit point — and calls `apply`, which renames every temporary into place. `apply`
is idempotent: a temporary that is gone was renamed already, so a restart that finds the record
finishes the commit by calling `apply` again (roll forward). Without a record the temporaries are
orphans and `remove_orphans` deletes them (roll back): readers glob `date=*/data.parquet` and
never see a hidden temporary, so until `apply` they see only the old files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnops.storage.crash import crash_point

TMP_SUFFIX = ".tmp"


@dataclass
class StagedFiles:
    """The files of one commit, written under temporary names until `apply`.

    Attributes:
        name: What is being committed (e.g. the source); prefixes the crash points.
        tag: Unique to the writing run; part of every temporary's name.
        renames: (temporary, final) pairs, in the order they were staged.
        removals: Final paths the commit deletes.
    """

    name: str
    tag: str
    renames: list[tuple[Path, Path]] = field(default_factory=list)
    removals: list[Path] = field(default_factory=list)

    def write(self, path: Path, write: Callable[[Path], object]) -> Path:
        """Let `write` fill this file's temporary and flush it; `path` changes only at `apply`.

        The signature of `write_atomic`, so any writer that takes one can stage instead.

        Args:
            path: The final file (parent folders are created).
            write: Writes the content to the temporary path it is given.

        Returns:
            The final path.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{self.tag}{TMP_SUFFIX}")
        write(tmp)
        _fsync(tmp)
        self.renames.append((tmp, path))
        crash_point(f"{self.name}:staged-{len(self.renames)}")
        return path

    def remove(self, path: Path) -> None:
        """Delete `path` (when it exists) as part of the commit.

        Args:
            path: The final file to remove at `apply`.
        """
        self.removals.append(Path(path))

    def apply(self) -> None:
        """Rename every temporary into place and delete the removals; safe to repeat after a crash."""
        for done, (tmp, final) in enumerate(self.renames, start=1):
            if tmp.exists():
                os.replace(tmp, final)
            crash_point(f"{self.name}:renamed-{done}")
        for path in self.removals:
            path.unlink(missing_ok=True)
        # The renames must be on disk before the caller marks the commit done.
        for folder in sorted({final.parent for _, final in self.renames} | {p.parent for p in self.removals}):
            if folder.is_dir():
                _fsync(folder)

    def discard(self) -> None:
        """Delete every temporary: the commit will not happen."""
        for tmp, _ in self.renames:
            tmp.unlink(missing_ok=True)
            _remove_empty(tmp.parent)

    def to_record(self) -> dict[str, Any]:
        """The commit record (JSON-ready): everything `from_record` needs to finish the commit."""
        return {
            "name": self.name,
            "tag": self.tag,
            "renames": [[str(tmp), str(final)] for tmp, final in self.renames],
            "removals": [str(p) for p in self.removals],
        }

    @classmethod
    def from_record(cls, body: dict[str, Any]) -> StagedFiles:
        """Read a commit record written by `to_record`.

        Args:
            body: The record.

        Returns:
            The staged commit, ready to `apply`.
        """
        return cls(
            name=body["name"],
            tag=body["tag"],
            renames=[(Path(tmp), Path(final)) for tmp, final in body["renames"]],
            removals=[Path(p) for p in body["removals"]],
        )


def remove_orphans(roots: Iterable[Path]) -> list[Path]:
    """Delete every hidden temporary (`.*.tmp`) below `roots`, left by a writer that was killed.

    Call it only when no writer is running and every recorded commit has been applied: then a
    temporary belongs to no commit (staged without a record, or a `write_atomic` cut short).
    A partition folder left empty is removed too, so a rolled-back batch leaves no trace.

    Args:
        roots: Folders to clean (missing ones are skipped).

    Returns:
        The files deleted.
    """
    removed = []
    for root in roots:
        if not root.is_dir():
            continue
        for tmp in sorted(root.rglob(f".*{TMP_SUFFIX}")):
            if tmp.is_file():
                tmp.unlink()
                removed.append(tmp)
                _remove_empty(tmp.parent)
    return removed


def _remove_empty(folder: Path) -> None:
    # Only an empty folder goes (a new partition's, made for its temporary); any other stays.
    with contextlib.suppress(OSError):
        folder.rmdir()


def _fsync(path: Path) -> None:
    # A kill -9 cannot lose written bytes, a power cut can: flush before the commit point counts on them.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
