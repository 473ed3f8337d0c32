"""Run the churnops command line, pausing at its first file write under a folder until told to go on.

Usage: python paused_cli.py WATCHED HELD GO -- <churnops arguments>

A deterministic interleaving point for `tests/test_lock.py`: when the command first writes a file
under WATCHED, through `write_atomic` or by staging it for a batch's commit (`StagedFiles.write`;
the lock's own holder record aside), it creates HELD and waits until GO exists. The test then
starts a second command while the first is inside the workspace lock in the middle of its writes,
instead of hoping that two processes overlap.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import churnops.storage.atomic as atomic
import churnops.storage.staging as staging
from churnops.storage.layout import LOCK_HOLDER_FILE

# Bounds a hang only (a test that never says "go"); the test normally says it within seconds.
_GIVE_UP_SECONDS = 600

watched, held, go = (Path(arg).resolve() for arg in sys.argv[1:4])
if sys.argv[4] != "--":
    raise SystemExit("usage: paused_cli.py WATCHED HELD GO -- <churnops arguments>")
_real_write_atomic = atomic.write_atomic
_real_stage = staging.StagedFiles.write


def _pause_if_watched(path: Path) -> None:
    target = Path(path).resolve()
    if target.is_relative_to(watched) and target.name != LOCK_HOLDER_FILE.name and not held.exists():
        held.write_text("held\n", encoding="utf-8")
        deadline = time.monotonic() + _GIVE_UP_SECONDS
        while not go.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"paused_cli: {go} never appeared")
            time.sleep(0.05)


def _paused_write_atomic(path: Path, write: Callable[[Path], object], **kwargs: int) -> Path:
    _pause_if_watched(path)
    return _real_write_atomic(path, write, **kwargs)


def _paused_stage(self: staging.StagedFiles, path: Path, write: Callable[[Path], object]) -> Path:
    _pause_if_watched(path)
    return _real_stage(self, path, write)


# Before the command line is imported: the modules that write bind `write_atomic` when imported.
atomic.write_atomic = _paused_write_atomic
staging.StagedFiles.write = _paused_stage  # type: ignore[method-assign]

from churnops.cli import app  # noqa: E402

app(args=sys.argv[5:], prog_name="churnops")
