"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every stage writes through this one function (lake partitions, quarantine, feature table,
reports, key files), so the write-then-rename rule lives in one place.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from churnops.storage.modes import PRIVATE_FILE_MODE

# Writes a file's content to the path it is given, then puts it in place: `write_atomic`, or
# `StagedFiles.write` to hold it back until a multi-file commit.
FileWriter = Callable[[Path, Callable[[Path], object]], Path]


def write_atomic(path: Path, write: Callable[[Path], object], *, mode: int = PRIVATE_FILE_MODE) -> Path:
    """Let `write` fill a temporary file beside `path`, then rename it into place in one step.

    Args:
        path: The final file (parent folders are created).
        write: Writes the content to the temporary path it is given.
        mode: Permission bits to give the file before it becomes visible; private (0600) unless a
            caller means the file to be shared (see `churnops.storage.modes`).

    Returns:
        The final path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        # Explicit, whatever the umask: a writer may replace the temporary file with its own.
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
