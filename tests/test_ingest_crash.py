"""kill -9 at every commit point of a multi-partition batch: after a normal re-run the lake is the
control lake, byte for byte, the log is consistent, and no temporary file is left anywhere.

The real `churnops ingest` runs in a subprocess with `CHURNOPS_CRASH_AT` naming the point where it
kills itself (SIGKILL, `storage.crash`), so nothing depends on timing. The batch under test
rewrites every partition of its source (each row comes again with a later `ingested_at`) and adds
two new day partitions, so a half-applied batch would show as missing or doubled keys.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from churnops.cli import app
from churnops.commands.common import console, err_console
from churnops.ingestion import ingest as ingest_module
from churnops.ingestion.ingest import IngestError, IngestReport, ingest
from churnops.ingestion.log import read_log
from churnops.storage import layout
from churnops.storage.crash import CRASH_ENV
from churnops.synthetic.generate import generate

CHURNOPS = Path(sys.executable).parent / "churnops"  # the venv's `churnops` command
FIGURES = ("status", "mode", "received", "accepted", "quarantined", "duplicates", "replaced", "late")
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def _later(stamps: pd.Series, delta: timedelta) -> pd.Series:
    return (pd.to_datetime(stamps, utc=True) + delta).dt.strftime(_STAMP)


def _second_delivery(first: Path, second: Path) -> None:
    """Every customer and event again, ingested a day later (so each replaces its lake row), plus
    20 events two and three days after the window's last (two new partitions)."""
    second.mkdir()
    customers = pd.read_csv(first / "customers.csv", dtype=str, keep_default_na=False)
    customers["ingested_at"] = _later(customers["ingested_at"], timedelta(days=1))
    customers["seat_count"] = (customers["seat_count"].astype(int) + 1).astype(str)
    customers.to_csv(second / "customers.csv", index=False)
    events = pd.read_csv(first / "usage_events.csv", dtype=str, keep_default_na=False)
    events["ingested_at"] = _later(events["ingested_at"], timedelta(days=1))
    extra = []
    for days in (2, 3):
        chunk = events.tail(10).copy()
        chunk["event_id"] = [f"EVT-9{days}{i:08d}" for i in range(10)]
        chunk["event_timestamp"] = _later(chunk["event_timestamp"], timedelta(days=days))
        chunk["ingested_at"] = _later(chunk["event_timestamp"], timedelta(minutes=5))
        extra.append(chunk)
    pd.concat([events, *extra]).to_csv(second / "usage_events.csv", index=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two landing folders and a control home that ingested both without a crash."""
    root = tmp_path_factory.mktemp("crash-world")
    first, second = root / "first", root / "second"
    generate(out_dir=first, customers=30, days=10, start=date(2026, 1, 1), seed=3)
    _second_delivery(first, second)
    control = root / "control"
    _ingest(control, first)
    report = _ingest(control, second)
    assert len(_partitions(control, "usage_events")) >= 12
    assert len(_partitions(control, "customers")) >= 20
    return {"first": first, "second": second, "control": control, "report": report}


def _ingest(home: Path, landing: Path) -> IngestReport:
    report = ingest(
        landing_dir=landing,
        lake_dir=home / layout.LAKE_DIR,
        quarantine_dir=home / layout.QUARANTINE_DIR,
        log_db=home / layout.INGESTION_LOG,
        backfill=True,
    )
    assert report.ok
    return report


def _crash(home: Path, landing: Path, point: str) -> None:
    """Run the real command until it kills itself at `point`."""
    env = os.environ | {CRASH_ENV: point}
    done = subprocess.run(
        [str(CHURNOPS), "ingest", "--home", str(home), "--source", str(landing), "--backfill"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr


def _partitions(home: Path, source: str) -> list[str]:
    return sorted(p.parent.name for p in (home / layout.LAKE_DIR / source).glob("date=*/data.parquet"))


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path below `folder` → its bytes (None for a folder)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def _readable(home: Path, source: str) -> dict[str, bytes]:
    """What a lake reader sees of a source: the partition files its glob matches."""
    lake = home / layout.LAKE_DIR / source
    return {str(p.relative_to(lake)): p.read_bytes() for p in sorted(lake.glob("date=*/data.parquet"))}


def _figures(home: Path) -> dict[str, tuple[Any, ...]]:
    return {row["id"]: tuple(row[k] for k in FIGURES) for row in read_log(home / layout.INGESTION_LOG)}


def _assert_like_control(home: Path, control: Path) -> None:
    """The lake byte-identical to the control's, the same quarantine files, no temporary anywhere."""
    assert _tree(home / layout.LAKE_DIR) == _tree(control / layout.LAKE_DIR)
    assert _tree(home / layout.QUARANTINE_DIR).keys() == _tree(control / layout.QUARANTINE_DIR).keys()
    assert not [p for p in home.rglob("*") if p.name.endswith(".tmp")]


# (point, the source killed, rolled back or forward). Each delivery of the second run has more
# than 12 files to rename (usage_events: 12 partitions and the load state; customers: one per
# signup day), so `renamed-6` is the middle of the renames.
POINTS = [
    ("usage_events:begun", "usage_events", "back"),
    ("usage_events:staged-1", "usage_events", "back"),
    ("usage_events:staged-6", "usage_events", "back"),
    ("usage_events:staged", "usage_events", "back"),
    ("usage_events:committed", "usage_events", "forward"),
    ("usage_events:renamed-1", "usage_events", "forward"),
    ("usage_events:renamed-6", "usage_events", "forward"),
    ("usage_events:renamed", "usage_events", "forward"),
    ("usage_events:done", "usage_events", "done"),
    ("customers:staged", "customers", "back"),
    ("customers:renamed-6", "customers", "forward"),
]


@pytest.mark.parametrize(("point", "source", "outcome"), POINTS, ids=[p[0] for p in POINTS])
def test_a_kill_at_any_commit_point_leaves_the_control_lake_after_a_rerun(
    tmp_path: Path, world: dict[str, Any], point: str, source: str, outcome: str
) -> None:
    home = tmp_path / "home"
    _ingest(home, world["first"])
    before = _readable(home, source)
    _crash(home, world["second"], point)
    if outcome == "back":
        # Before the commit point a reader sees exactly the source's old files, even before recovery.
        assert _readable(home, source) == before
    rerun = _ingest(home, world["second"])
    _assert_like_control(home, world["control"])

    control_figures = _figures(world["control"])
    figures = _figures(home)
    plain = {row_id: f for row_id, f in figures.items() if "@" not in row_id}
    assert plain == control_figures
    interrupted = [row for row in read_log(home / layout.INGESTION_LOG) if "@" in row["id"]]
    killed = {b.source: b for b in rerun.batches}[source]
    control_batch = {b.source: b for b in world["report"].batches}[source]
    killed_id = f"{source}/{control_batch.batch}"
    if outcome == "back":
        # Logged as interrupted; the re-run counts like a clean run (no "duplicates" of the killed run).
        (row,) = interrupted
        assert row["id"].startswith(f"{killed_id}@") and row["status"] == "interrupted"
        assert "nothing of it reached the lake" in row["note"]
        assert rerun.recovery.interrupted == (killed_id,)
        assert (killed.status, killed.accepted, killed.duplicates, killed.replaced) == (
            "ok",
            control_batch.accepted,
            control_batch.duplicates,
            control_batch.replaced,
        )
        assert killed.duplicates == 0
    else:
        # Past the commit point the batch is in: recovery finished it and the re-run skips the file.
        assert interrupted == []
        assert killed.status == "skipped" and "same content hash" in killed.message
        assert rerun.recovery.rolled_forward == ((killed_id,) if outcome == "forward" else ())
    assert not rerun.recovery.live


def test_a_kill_during_recovery_is_recovered_by_the_next_run(tmp_path: Path, world: dict[str, Any]) -> None:
    home = tmp_path / "home"
    _ingest(home, world["first"])
    _crash(home, world["second"], "usage_events:renamed-2")
    # The next run is killed while it rolls the first one forward, after it renamed the 6th file.
    _crash(home, world["second"], "usage_events:renamed-6")
    rerun = _ingest(home, world["second"])
    _assert_like_control(home, world["control"])
    assert _figures(home) == _figures(world["control"])
    assert {b.source: b.status for b in rerun.batches} == {"customers": "skipped", "usage_events": "skipped"}


def test_an_exception_before_the_commit_point_undoes_the_batch_and_logs_it(
    tmp_path: Path, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    _ingest(home, world["first"])
    before = _tree(home / layout.LAKE_DIR)
    real = ingest_module.write_load_state

    def fail_after_staging(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(ingest_module, "write_load_state", fail_after_staging)
    with pytest.raises(OSError, match="disk full"):
        _ingest(home, world["second"])
    assert _tree(home / layout.LAKE_DIR) == before
    (row,) = [r for r in read_log(home / layout.INGESTION_LOG) if r["status"] == "interrupted"]
    assert row["id"].startswith("customers/") and "OSError: disk full" in row["note"]
    monkeypatch.undo()
    _ingest(home, world["second"])
    _assert_like_control(home, world["control"])


def test_a_bad_byte_late_in_one_file_fails_the_run_before_any_source_is_committed(
    tmp_path: Path, world: dict[str, Any]
) -> None:
    landing = tmp_path / "landing"
    shutil.copytree(world["second"], landing)
    events = landing / "usage_events.csv"
    body = events.read_bytes()
    at = body.rindex(b",login,")
    assert at > 64 * 1024  # past the part of the file the garbage sniffer reads
    events.write_bytes(body[:at] + b",log\xffin," + body[at + len(b",login,") :])
    home = tmp_path / "home"
    _ingest(home, world["first"])
    before = _tree(home / layout.LAKE_DIR)
    log_before = read_log(home / layout.INGESTION_LOG)
    with pytest.raises(IngestError, match=r"usage_events.csv has malformed rows \(it is not valid UTF-8"):
        ingest(
            landing_dir=landing,
            lake_dir=home / layout.LAKE_DIR,
            quarantine_dir=home / layout.QUARANTINE_DIR,
            log_db=home / layout.INGESTION_LOG,
            backfill=True,
        )
    # customers.csv, first in the run and valid, was not committed either.
    assert _tree(home / layout.LAKE_DIR) == before
    assert read_log(home / layout.INGESTION_LOG) == log_before


def test_the_crash_hook_kills_only_at_its_point(tmp_path: Path) -> None:
    script = (
        "from churnops.storage.crash import crash_point\n"
        "crash_point('a:staged')\nprint('passed a:staged', flush=True)\n"
        "crash_point('a:committed')\nprint('no')"
    )
    env = os.environ | {CRASH_ENV: "a:committed"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == -signal.SIGKILL
    assert done.stdout == "passed a:staged\n"


def _cli(*args: str) -> tuple[int, str]:
    # Wide, so Rich wraps no sentence; the consoles are made once per process, hence pinned here.
    saved = [(c, c._width) for c in (console, err_console)]
    for c, _ in saved:
        c.width = 400
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        for c, width in saved:
            c._width = width
    return result.exit_code, " ".join(result.output.split())


def test_the_command_says_what_recovery_did_and_which_batches_were_committed(
    tmp_path: Path, world: dict[str, Any]
) -> None:
    home = tmp_path / "home"
    _ingest(home, world["first"])
    _crash(home, world["second"], "usage_events:staged")
    landing = tmp_path / "landing"
    shutil.copytree(world["second"], landing)
    shutil.copy(world["first"] / "billing.csv", landing / "billing.csv")
    billing = pd.read_csv(landing / "billing.csv", dtype=str, keep_default_na=False)
    billing["customer_id"] = "CUST-999999"  # unknown to the lake: every row is quarantined
    billing.to_csv(landing / "billing.csv", index=False)
    code, output = _cli("ingest", "--home", str(home), "--source", str(landing), "--backfill")
    assert code == 1
    usage_batch = {b.source: b for b in world["report"].batches}["usage_events"].batch
    assert f"recovery: usage_events/{usage_batch}: killed before its commit point" in output
    assert "recovery: removed 13 temporary file(s) left by a killed writer" in output  # 12 days + load state
    assert "billing (billing.csv): quarantine_rate" in output
    # customers.csv was committed by the killed run (it came first) and is skipped now.
    assert "customers: skipped: this exact file (same content hash)" in output
    assert output.endswith("Committed in this run: usage_events (usage_events.csv)")


def test_features_build_finishes_a_killed_commit_before_reading_the_lake(
    tmp_path: Path, world: dict[str, Any]
) -> None:
    # Killed half-way through its renames: a snapshot built now would read half a batch, so the
    # next writer of the features recovers the lake first.
    home = tmp_path / "home"
    _ingest(home, world["first"])
    _crash(home, world["second"], "usage_events:renamed-6")
    code, output = _cli("features", "build", "--home", str(home), "--until", "2026-01-12T00:00:00Z")
    assert code == 0, output
    usage_batch = {b.source: b for b in world["report"].batches}["usage_events"].batch
    assert f"recovery: usage_events/{usage_batch}: killed after its commit point" in output
    assert _readable(home, "usage_events") == _readable(world["control"], "usage_events")
    assert not [p for p in home.rglob("*") if p.name.endswith(".tmp")]


def test_contracts_check_says_when_a_killed_batch_is_not_settled(
    tmp_path: Path, world: dict[str, Any]
) -> None:
    home = tmp_path / "home"
    _ingest(home, world["first"])
    _crash(home, world["second"], "usage_events:renamed-6")
    usage_batch = {b.source: b for b in world["report"].batches}["usage_events"].batch
    _, output = _cli("contracts", "check", "--home", str(home))
    assert f"not settled (usage_events/{usage_batch})" in output
    _ingest(home, world["second"])  # a writer recovers the lake first
    _, output = _cli("contracts", "check", "--home", str(home))
    assert "not settled" not in output
