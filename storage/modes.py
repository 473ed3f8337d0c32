"""File modes: what churnops writes is private to the account that runs it.

Files are created 0600 and folders 0700. One mechanism covers every writer, including the
libraries that create their own files (SQLite for the audit, prediction and ingestion logs,
MLflow's store, Feast's registry and online store, Parquet and HTML writers): the command line
runs with umask 0o077 (`private_umask`). `write_atomic` also gives its files 0600 explicitly, so a
library user who calls the stages without the command line still gets private lake partitions,
quarantine files and key files.

Nothing under a home is shared by default: the landing files, lake and quarantine hold personal
data (`company_name`), the stores and MLflow hold the features and models, the key file and the
audit are security records, and the reports describe customers' feature distributions. CI uploads
reports as the account that wrote them, which 0600 does not hinder; publish them deliberately
(`chmod -R go+rX reports`). Folders churnops did not create keep their modes, so a landing folder
that another account delivers into can be prepared with the group permissions it needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

PRIVATE_FILE_MODE = 0o600
PRIVATE_UMASK = 0o077


@contextmanager
def private_umask() -> Iterator[None]:
    """Create every file 0600 and every folder 0700 (umask 0o077) until the block ends.

    The umask is process-wide; the command line sets it for one command and restores it after,
    so a test that runs commands in-process leaves the process as it found it.

    Yields:
        Nothing; the previous umask is back when the block ends.
    """
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)
