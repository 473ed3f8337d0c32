"""Uploaded files: received as a stream under a size limit, then kept content-addressed.

A body is written chunk by chunk to a hidden temporary file beside its final place while its
SHA-256 is computed, and refused (the temporary file removed) as soon as it passes the limit:
nothing larger than the limit is ever held in memory or on disk. A readable upload is renamed
into `<uploads>/<source>/<sha256>.<ext>` in one step, so a reader (a replay) sees the whole
file or nothing, and the same content delivered twice is one file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from churnops.storage.modes import PRIVATE_FILE_MODE

TEMP_PREFIX = ".upload-"


class UploadTooLarge(ValueError):
    """The body passed the size limit while it was being received.

    Args:
        limit: The limit, in bytes.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"the upload is larger than this intake's limit of {limit:,} bytes")
        self.limit = limit


@dataclass(frozen=True)
class ReceivedFile:
    """A body written to its temporary file.

    Attributes:
        temp: The temporary file (same folder and extension as its final place).
        sha256: The hex SHA-256 of its bytes.
        size: Its size in bytes.
    """

    temp: Path
    sha256: str
    size: int


async def receive_file(
    chunks: AsyncIterator[bytes], *, folder: Path, extension: str, limit: int
) -> ReceivedFile:
    """Write a streamed body to a temporary file in `folder`, hashing it, within `limit` bytes.

    Args:
        chunks: The body, as the server receives it.
        folder: Where the file will be kept (created when missing).
        extension: The file's extension with its dot (`.csv`, `.parquet`): the readers go by it.
        limit: Most bytes accepted.

    Returns:
        The temporary file, its hash and size; flushed to disk.

    Raises:
        UploadTooLarge: The body passed `limit` (the temporary file is removed).
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=extension)
    temp = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(limit)
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return ReceivedFile(temp=temp, sha256=digest.hexdigest(), size=size)


def keep_file(received: ReceivedFile, *, folder: Path, extension: str) -> tuple[Path, bool]:
    """Put a received file in its content-addressed place, or drop it when that exists already.

    Args:
        received: The file `receive_file` wrote.
        folder: The source's uploads folder.
        extension: The file's extension with its dot.

    Returns:
        The kept file's path, and whether it is new (False: the same bytes were kept before).
    """
    final = folder / f"{received.sha256}{extension}"
    if final.exists():
        received.temp.unlink(missing_ok=True)
        return final, False
    os.chmod(received.temp, PRIVATE_FILE_MODE)
    os.replace(received.temp, final)
    return final, True
