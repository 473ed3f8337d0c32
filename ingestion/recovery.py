"""Recovery at the start of every `ingest`: finish or undo what a killed run left behind.

For each batch the ingestion log shows unfinished (`running` or `committing`) whose process is
gone (see `ingestion.batch` for the commit protocol):

- `committing`: it was killed after its commit point. The renames are finished from the commit
  record (roll forward) and the row gets the status the batch had decided (`ok` or `failed`), so
  a re-run of the file skips it by its content hash.
- `running`: it was killed before its commit point, so nothing of it reached the lake. The row
  becomes `interrupted` (kept as `<source>/<batch>@<run>`); a re-run ingests the file afresh.

Then every hidden temporary (`.*.tmp`) under the lake and the quarantine is deleted: those of
interrupted batches and those of any atomic write cut short. When an unfinished batch belongs to a
process that is still alive, another run is writing: its batch and every temporary are left alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from churnops.ingestion.log import interrupt_batch, settle_batch, unsettled_batches
from churnops.storage.staging import StagedFiles, remove_orphans


@dataclass(frozen=True)
class Recovery:
    """What recovery found and did.

    Attributes:
        rolled_forward: Log ids of batches whose commit recovery finished.
        interrupted: Log ids (before re-keying) of batches killed before their commit point.
        live: Log ids of unfinished batches whose process is still running (left alone).
        orphans: Temporary files deleted.
    """

    rolled_forward: tuple[str, ...] = ()
    interrupted: tuple[str, ...] = ()
    live: tuple[str, ...] = ()
    orphans: tuple[Path, ...] = ()

    def messages(self) -> list[str]:
        """One sentence per thing recovery did, for the command line."""
        lines = [
            f"{row_id}: killed after its commit point; recovery finished the commit"
            for row_id in self.rolled_forward
        ]
        lines += [
            f"{row_id}: killed before its commit point, nothing of it reached the lake; logged as interrupted"
            for row_id in self.interrupted
        ]
        lines += [f"{row_id}: still being written by another process; left alone" for row_id in self.live]
        if self.orphans:
            lines.append(f"removed {len(self.orphans)} temporary file(s) left by a killed writer")
        return lines


def recover(*, lake_dir: Path, quarantine_dir: Path, log_db: Path) -> Recovery:
    """Finish the commits of killed runs, mark their uncommitted batches, delete orphan temporaries.

    Idempotent: a crash during recovery is recovered by the next one.

    Args:
        lake_dir: The lake's root folder.
        quarantine_dir: Root of the quarantine.
        log_db: The SQLite ingestion log.

    Returns:
        What was done.
    """
    rolled, interrupted, live = [], [], []
    for row in unsettled_batches(log_db):
        if not _process_gone(row["pid"]):
            live.append(row["id"])
        elif row["status"] == "committing":
            _roll_forward(log_db, row)
            rolled.append(row["id"])
        else:
            note = (
                f"interrupted: process {row['pid']} ended before the commit point; nothing of it "
                f"reached the lake (found by recovery at {datetime.now(UTC).isoformat()})"
            )
            interrupt_batch(log_db, row["id"], run=row["run"], note=note)
            interrupted.append(row["id"])
    # Only with no writer alive does a temporary belong to nobody.
    orphans = [] if live else remove_orphans([lake_dir, quarantine_dir])
    return Recovery(
        rolled_forward=tuple(rolled), interrupted=tuple(interrupted), live=tuple(live), orphans=tuple(orphans)
    )


def _roll_forward(log_db: Path, row: dict[str, Any]) -> None:
    """Finish a commit whose record is in the log, then give its row the batch's own status."""
    pending = json.loads(row["pending"])
    StagedFiles.from_record(pending["files"]).apply()
    note = (
        f"committed by recovery at {datetime.now(UTC).isoformat()}: process {row['pid']} ended after "
        f"the commit point"
    )
    settle_batch(log_db, row["id"], status=pending["status"], note=note)


def _process_gone(pid: int | None) -> bool:
    """True when no process `pid` runs (or it is this one: a run earlier in this process that raised)."""
    if pid is None or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, under another user
    return False
