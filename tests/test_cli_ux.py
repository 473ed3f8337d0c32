"""The command line as used from a terminal and from CI: progress, flags, exit codes, clean stderr.

One small workspace (200 customers, 100 days) serves every test; the long commands run once in a
pseudo-terminal and once with plain pipes, each in a single process, so Feast and MLflow load once.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from churnops.cli import app
from churnops.ingestion.ingest import ingest
from churnops.synthetic.generate import generate

runner = CliRunner()
START = datetime(2026, 6, 1, tzinfo=UTC)
DAYS = 100

# Runs `churnops` commands one after another in one process; prints each one's exit status.
_DRIVER = """
import sys
from churnops.cli import app
for line in sys.argv[1:]:
    try:
        app(line.split(), prog_name="churnops")
    except SystemExit as exc:
        print(f"=== exit {exc.code} {line}", file=sys.stderr, flush=True)
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("ux")
    data = home / "data"
    generate(out_dir=data / "landing", customers=200, days=DAYS, seed=3, start=START, fmt="parquet")
    ingest(
        landing_dir=data / "landing",
        lake_dir=data / "lake",
        quarantine_dir=data / "quarantine",
        log_db=data / "ingestion_log.db",
        backfill=True,
        now=START + timedelta(days=DAYS + 1),
    )
    return home


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CHURNOPS_HOME"}
    return {**env, "COLUMNS": "100", "TERM": "xterm"}


def _in_terminal(commands: list[str]) -> str:
    """Run the commands with stdout and stderr on a pseudo-terminal; everything it showed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, *commands], stdout=follower, stderr=follower, env=_env()
    )
    os.close(follower)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 900)
            if not ready:
                pytest.fail("the commands showed nothing for 15 minutes")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closes when the process ends
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        proc.wait(timeout=60)
        os.close(leader)
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def terminal_run(home: Path) -> str:
    h = f"--home {home}"
    until = (START + timedelta(days=DAYS)).isoformat()
    return _in_terminal(
        [f"features build {h} --until {until}", f"train {h}", f"drift {h}", f"promote {h} --dry-run"]
    )


@pytest.fixture(scope="module")
def piped_run(home: Path, terminal_run: str) -> subprocess.CompletedProcess[str]:
    # After `terminal_run`: the workspace has a challenger by now.
    h = f"--home {home}"
    return subprocess.run(
        [sys.executable, "-c", _DRIVER, f"promote {h} --dry-run --json", f"contracts check {h}"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=900,
        check=False,
    )


@pytest.mark.parametrize(
    "step",
    [
        "computing customer_profile snapshots from the lake",
        "loading Feast, MLflow and scikit-learn",
        "labels, point-in-time training set, two models, MLflow run and registration",
        "reading the reference and current frames",
        "PSI per feature (Evidently)",
        "reading the challenger's datasets and the current features",
        "PSI drift per feature (Evidently)",
    ],
)
def test_long_commands_show_each_step_ticked_in_a_terminal(terminal_run: str, step: str) -> None:
    assert f"✓ {step}" in terminal_run or f"✓\x1b[0m {step}" in terminal_run, terminal_run[-3000:]


def test_the_long_commands_succeed_in_a_terminal(terminal_run: str) -> None:
    exits = [line for line in terminal_run.splitlines() if line.startswith("=== exit")]
    assert [e.split()[2] for e in exits[:2]] == ["0", "0"], exits
    # drift and the dry run may refuse on 200 customers (exit 1), but never fail on input (2).
    assert all(e.split()[2] in ("0", "1") for e in exits[2:]), exits


def test_without_a_terminal_progress_is_plain_lines_on_stderr_and_json_on_stdout(
    piped_run: subprocess.CompletedProcess[str],
) -> None:
    # stdout is the JSON document, then the contract table: the document parses on its own.
    document, _ = json.JSONDecoder().raw_decode(piped_run.stdout)
    assert document["decision"] in ("promoted", "refused", "unchanged")
    assert document["dry_run"] is True
    failed = [c for c in document["checks"] if not c["passed"]]
    assert document["reasons"] == [f"{c['name']}: {c['detail']}" for c in failed]
    assert document["passed"] is (not failed)
    assert {f["feature"] for f in document["drift"]["features"]} >= {"active_days_30d"}
    assert document["audit_id"] is None
    assert "promote: PSI drift per feature (Evidently) …" in piped_run.stderr
    assert "promote: PSI drift per feature (Evidently) done in " in piped_run.stderr
    assert "\x1b[" not in piped_run.stderr


def test_library_warnings_do_not_reach_stderr(piped_run: subprocess.CompletedProcess[str]) -> None:
    assert [line for line in piped_run.stderr.splitlines() if "Warning" in line] == []


def test_tables_are_not_cut_without_a_terminal(piped_run: subprocess.CompletedProcess[str]) -> None:
    rows = [
        line for line in piped_run.stdout.splitlines() if "accepted_values" in line and "plan_type" in line
    ]
    assert rows and all("pass" in row or "FAIL" in row for row in rows)
    assert "…" not in piped_run.stdout


def _commands(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under a Click group (Typer's own copy of Click)."""
    found = []
    for name, command in getattr(group, "commands", {}).items():
        found.append((*prefix, name))
        found.extend(_commands(command, (*prefix, name)))
    return found


def test_no_help_shows_a_type_after_a_flag() -> None:
    from typer.main import get_command

    paths = [(), *_commands(get_command(app))]
    assert ("promote",) in paths and ("features", "build") in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "<bool>" not in result.output, (path, result.output)
    promote = runner.invoke(app, ["promote", "--help"]).output
    assert "--dry-run" in promote and "--json" in promote


def test_root_help_documents_the_exit_codes_and_version_comes_from_the_package() -> None:
    from importlib.metadata import version

    assert "Exit status: 0 done" in " ".join(runner.invoke(app, ["--help"]).output.split())
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"churnops {version('churnops')}"


def test_a_mistyped_home_fails_without_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    for args in (["drift"], ["contracts", "check"], ["features", "build"], ["materialize"]):
        result = runner.invoke(app, [*args, "--home", str(missing)])
        assert result.exit_code == 2, (args, result.output)
        assert "does not exist" in " ".join(result.output.split())
        assert not missing.exists()


def test_contracts_check_on_an_empty_lake_is_bad_input_naming_the_lake(tmp_path: Path) -> None:
    result = runner.invoke(app, ["contracts", "check", "--home", str(tmp_path)])
    assert result.exit_code == 2
    text = "".join(result.output.split())
    assert "".join(str(tmp_path / "data" / "lake").split()) in text
    assert "holdsnodata" in text


def test_a_bad_time_is_bad_input(tmp_path: Path) -> None:
    result = runner.invoke(app, ["materialize", "--home", str(tmp_path), "--at", "yesterday"])
    assert result.exit_code == 2
    assert "'yesterday' is not an ISO-8601 time" in result.output
