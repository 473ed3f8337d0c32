"""One writer per workspace, and private files: real processes contending for one home.

Every interleaving is forced by an event, never by timing: a holder process stays inside the lock
until the test writes a line to its stdin, and a paused `churnops ingest` (`tests/paused_cli.py`)
stays inside its first lake write until the test creates a file. Waits poll with deadlines that
only bound a hang.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from churnops.cli import app
from churnops.commands.common import console, err_console
from churnops.storage.atomic import write_atomic
from churnops.storage.layout import HOME_ENV, LOCK_FILE, LOCK_HOLDER_FILE
from churnops.storage.lock import LOCK_WAIT_ENV, WorkspaceLockedError, read_holder, workspace_lock

HANG_BOUND = 300  # seconds; bounds a hang, never decides a pass
CONSUMER = "cs-analytics-dashboard"
PAUSED_CLI = Path(__file__).with_name("paused_cli.py")
CLI = [sys.executable, "-m", "churnops.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (HOME_ENV, LOCK_WAIT_ENV)}
    return {**env, "COLUMNS": "400", **extra}


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env or _env(), timeout=HANG_BOUND, check=False
    )


def _wait_until(done: Callable[[], bool], *, what: str, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + HANG_BOUND
    while not done():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def _locked(home: Path) -> bool:
    """Whether someone holds the workspace lock (a second open file is refused even in this process)."""
    fd = os.open(home / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# ---------------------------------------------------------------- a holder process


@dataclass
class HolderProcess:
    proc: subprocess.Popen[str]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.wait(timeout=HANG_BOUND) == 0


HOLDER_CODE = """
import sys
from pathlib import Path
from churnops.storage.lock import workspace_lock
with workspace_lock(home=Path(sys.argv[1]), command="test holder"):
    print("held", flush=True)
    sys.stdin.readline()
"""


@contextmanager
def holding(home: Path) -> Iterator[HolderProcess]:
    """A process inside the workspace lock until `release()` (or the end of the block)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER_CODE, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], HANG_BOUND)
        assert ready and proc.stdout.readline().strip() == "held", "the holder never took the lock"
        yield HolderProcess(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=HANG_BOUND)


# ---------------------------------------------------------------- the lock between commands


def test_second_writer_fails_fast_naming_the_holder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with holding(home) as holder:
        second = _run("keys", "create", CONSUMER, "--home", str(home))
        assert second.returncode == 2, second.stderr
        message = " ".join(second.stderr.split())
        assert f"pid {holder.pid} (`test holder`)" in message
        assert "since " in message and "--wait SECONDS" in message and f"kill {holder.pid}" in message
        assert not (home / "data" / "serving" / "api_keys.json").exists()
        # A reading command does not take the lock.
        reader = _run("keys", "list", "--home", str(home))
        assert reader.returncode == 0, reader.stderr
        holder.release()
    assert _run("keys", "create", CONSUMER, "--home", str(home)).returncode == 0


@pytest.mark.parametrize("how", ["option", "env"])
def test_waiting_writer_proceeds_after_release(tmp_path: Path, how: str) -> None:
    home = tmp_path / "home"
    stderr = tmp_path / "stderr.txt"
    args = [*CLI, "keys", "create", CONSUMER, "--home", str(home)]
    env = _env()
    if how == "option":
        args += ["--wait", str(HANG_BOUND)]
    else:
        env[LOCK_WAIT_ENV] = str(HANG_BOUND)
    with holding(home) as holder, stderr.open("w") as err:
        waiter = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        _wait_until(lambda: "waiting" in stderr.read_text(), what="the waiting message", proc=waiter)
        assert f"pid {holder.pid}" in " ".join(stderr.read_text().split())
        assert not (home / "data" / "serving" / "api_keys.json").exists()
        holder.release()
        assert waiter.wait(timeout=HANG_BOUND) == 0, stderr.read_text()
    assert "chk_" in (waiter.stdout.read() if waiter.stdout else "")
    assert (home / "data" / "serving" / "api_keys.json").is_file()


def test_wait_that_runs_out_fails_with_exit_2(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with holding(home) as holder:
        late = _run("keys", "create", CONSUMER, "--home", str(home), "--wait", "0.5")
        holder.release()
    assert late.returncode == 2
    message = " ".join(late.stderr.split())
    assert "did not release it within 0.5 s" in message and f"pid {holder.pid}" in message


def test_killed_holder_leaves_a_lock_the_next_command_takes_over(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with holding(home) as holder:
        dead = holder.pid
        os.kill(dead, signal.SIGKILL)
        holder.proc.wait(timeout=HANG_BOUND)
        stale = read_holder(home)
        assert stale is not None and stale.pid == dead, "SIGKILL leaves the record behind"
        assert not _locked(home), "the kernel frees a dead holder's lock"
        after = _run("keys", "create", CONSUMER, "--home", str(home))
    assert after.returncode == 0, after.stderr
    message = " ".join(after.stderr.split())
    assert "took over the workspace lock" in message and "stale record" in message
    assert f"pid {dead} (`test holder`)" in message
    assert read_holder(home) is None and not _locked(home)


# ---------------------------------------------------------------- the library


def test_lock_is_reentrant_and_released_with_its_record(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with workspace_lock(home=home, command="outer") as outer:
        assert _locked(home) and read_holder(home) == outer.holder
        assert outer.holder.pid == os.getpid() and outer.stale is None and outer.waited_for is None
        with workspace_lock(home=home, command="inner") as inner:
            assert inner is outer
        assert _locked(home), "leaving the inner block keeps the outer one's lock"
    assert not _locked(home) and read_holder(home) is None
    with pytest.raises(RuntimeError), workspace_lock(home=home, command="failing"):
        raise RuntimeError("boom")
    assert not _locked(home) and read_holder(home) is None


def test_library_error_names_the_holder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with holding(home) as holder:
        with pytest.raises(WorkspaceLockedError) as caught, workspace_lock(home=home, command="second"):
            pass
        holder.release()
    assert caught.value.holder is not None and caught.value.holder.pid == holder.pid
    assert caught.value.waited == 0


def _invoke(*args: str) -> tuple[int, str]:
    saved = [(c, c._width) for c in (console, err_console)]
    for c, _ in saved:
        c.width = 400
    try:
        result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400", LOCK_WAIT_ENV: "0"})
    finally:
        for c, width in saved:
            c._width = width
    return result.exit_code, " ".join(result.output.split())


WRITERS = [
    ["generate", "--customers", "5", "--days", "2"],
    ["ingest"],
    ["features", "build"],
    ["features", "apply"],
    ["materialize"],
    ["parity"],
    ["train"],
    ["promote"],
    ["rollback"],
    ["keys", "create", CONSUMER],
    ["keys", "revoke", CONSUMER],
    ["demo"],
]
READERS = [["contracts", "check"], ["audit"], ["keys", "list"], ["promote", "--dry-run"]]


def test_every_writing_command_takes_the_lock_and_no_reading_one_does(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with holding(home) as holder:
        for args in WRITERS:
            code, output = _invoke(*args, "--home", str(home))
            assert code == 2 and f"pid {holder.pid}" in output, (args, output)
        for args in READERS:
            _, output = _invoke(*args, "--home", str(home))
            assert "locked by another writer" not in output, (args, output)
        # `generate --out` outside the home writes nothing the home's commands read.
        code, output = _invoke(*WRITERS[0], "--home", str(home), "--out", str(tmp_path / "elsewhere"))
        assert code == 0, output
        holder.release()


# ---------------------------------------------------------------- two concurrent ingests


@pytest.fixture(scope="module")
def landings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Landing folders: `whole` (customers + all usage events) and its two disjoint halves."""
    root = tmp_path_factory.mktemp("landings")
    generated = root / "generated"
    args = ["generate", "--customers", "12", "--days", "4", "--seed", "11", "--start", "2026-01-01"]
    done = _run(*args, "--out", str(generated), "--home", str(root / "unused"))
    assert done.returncode == 0, done.stderr
    lines = (generated / "usage_events.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    assert 100 <= len(rows) <= 1000, "keep the data tiny"
    parts = {"whole": rows, "first": rows[::2], "second": rows[1::2]}
    folders = {}
    for name, part in parts.items():
        folder = root / name
        folder.mkdir()
        (folder / "customers.csv").write_bytes((generated / "customers.csv").read_bytes())
        (folder / "usage_events.csv").write_text(header + "".join(part), encoding="utf-8")
        folders[name] = folder
    return folders


SCENARIOS = {"disjoint halves": ("first", "second"), "same file twice": ("whole", "whole")}


def _ingest_args(home: Path, landing: Path) -> list[str]:
    return ["ingest", "--home", str(home), "--source", str(landing), "--backfill"]


def _lake_rows(home: Path) -> dict[str, pd.DataFrame]:
    """Every row of every lake partition, by partition, in a canonical order."""
    lake = home / "data" / "lake"
    rows = {}
    for path in sorted(lake.glob("*/date=*/data.parquet")):
        frame = pq.read_table(path).to_pandas()
        rows[str(path.relative_to(lake))] = frame.sort_values(list(frame.columns), ignore_index=True)
    return rows


def _assert_same_lake(home: Path, control: Path) -> None:
    got, want = _lake_rows(home), _lake_rows(control)
    assert got.keys() == want.keys()
    for partition, frame in want.items():
        pd.testing.assert_frame_equal(got[partition], frame, obj=partition)


@pytest.fixture(scope="module")
def controls(landings: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each scenario's lake when its two ingests run one after the other."""
    homes = {}
    for scenario, (first, second) in SCENARIOS.items():
        home = tmp_path_factory.mktemp("control")
        for name in (first, second):
            done = _run(*_ingest_args(home, landings[name]))
            assert done.returncode == 0, done.stderr
        homes[scenario] = home
    lake = _lake_rows(homes["disjoint halves"])
    events = sum(len(frame) for key, frame in lake.items() if key.startswith("usage_events/"))
    source_rows = len((landings["whole"] / "usage_events.csv").read_text().splitlines()) - 1
    assert events == source_rows, "the control itself lost or doubled rows"
    return homes


@contextmanager
def paused_ingest(home: Path, landing: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """`churnops ingest` stopped inside the lock at its first lake write; create the yielded file to go on."""
    held, go = tmp_path / "held", tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, str(PAUSED_CLI), str(home / "data" / "lake"), str(held), str(go), "--",
         *_ingest_args(home, landing)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        _wait_until(held.exists, what="the first ingest to pause inside its lake writes", proc=proc)
        yield proc, go
    finally:
        go.touch()
        if proc.poll() is None:
            proc.wait(timeout=HANG_BOUND)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_concurrent_ingest_fails_fast_and_its_rerun_gives_the_control_lake(
    scenario: str, landings: dict[str, Path], controls: dict[str, Path], tmp_path: Path
) -> None:
    first, second = (landings[name] for name in SCENARIOS[scenario])
    home = tmp_path / "home"
    with paused_ingest(home, first, tmp_path) as (paused, go):
        refused = _run(*_ingest_args(home, second))
        assert refused.returncode == 2, refused.stderr
        assert f"pid {paused.pid}" in " ".join(refused.stderr.split())
        go.touch()
        _, err = paused.communicate(timeout=HANG_BOUND)
        assert paused.returncode == 0, err
    rerun = _run(*_ingest_args(home, second))
    assert rerun.returncode == 0, rerun.stderr
    _assert_same_lake(home, controls[scenario])


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_concurrent_ingest_with_wait_gives_the_control_lake(
    scenario: str, landings: dict[str, Path], controls: dict[str, Path], tmp_path: Path
) -> None:
    first, second = (landings[name] for name in SCENARIOS[scenario])
    home = tmp_path / "home"
    stderr = tmp_path / "second.stderr"
    with paused_ingest(home, first, tmp_path) as (paused, go), stderr.open("w") as err:
        waiter = subprocess.Popen(
            [*CLI, *_ingest_args(home, second), "--wait", str(HANG_BOUND)],
            stdout=subprocess.DEVNULL, stderr=err, text=True, env=_env(),
        )  # fmt: skip
        _wait_until(lambda: "waiting" in stderr.read_text(), what="the second ingest to wait", proc=waiter)
        assert f"pid {paused.pid}" in " ".join(stderr.read_text().split())
        go.touch()
        _, first_err = paused.communicate(timeout=HANG_BOUND)
        assert paused.returncode == 0, first_err
        assert waiter.wait(timeout=HANG_BOUND) == 0, stderr.read_text()
    _assert_same_lake(home, controls[scenario])


# ---------------------------------------------------------------- file modes


def _modes(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    files, folders = {}, {}
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        (folders if path.is_dir() else files)[str(path.relative_to(root))] = oct(mode)
    return files, folders


def test_everything_a_command_writes_is_private(landings: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "home"

    def loose_umask() -> None:
        os.umask(0o022)  # what the commands must not rely on

    for args in (
        ["generate", "--customers", "5", "--days", "2", "--home", str(home)],
        _ingest_args(home, landings["whole"]),
        ["keys", "create", CONSUMER, "--home", str(home)],
    ):
        done = subprocess.run(
            [*CLI, *args], capture_output=True, text=True, env=_env(), timeout=HANG_BOUND,
            preexec_fn=loose_umask, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    files, folders = _modes(home)
    expected = {"data/landing/customers.csv", "data/ingestion_log.db", "data/serving/api_keys.json"}
    assert expected | {LOCK_FILE.as_posix()} <= files.keys()
    assert any(name.startswith("data/lake/usage_events/") for name in files)
    assert {name: mode for name, mode in files.items() if mode != oct(0o600)} == {}
    assert {name: mode for name, mode in folders.items() if mode != oct(0o700)} == {}


def test_write_atomic_is_private_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "f.txt", lambda tmp: tmp.write_text("x"))
        shared = write_atomic(tmp_path / "g.txt", lambda tmp: tmp.write_text("x"), mode=0o644)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644


def test_the_command_line_restores_the_umask_it_set(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        code, output = _invoke("keys", "list", "--home", str(tmp_path))
        assert code == 0, output
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(previous)


def test_holder_record_is_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with workspace_lock(home=home, command="t"):
        assert stat.S_IMODE((home / LOCK_HOLDER_FILE).stat().st_mode) == 0o600
