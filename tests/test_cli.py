"""The command line as a user meets it: fast help, every stage listed, workspaces kept apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from churnops.cli import app
from churnops.settings import HOME_ENV, REPO_ROOT, Workspace, resolve_home

runner = CliRunner()
HEAVY = ("feast", "mlflow", "evidently", "sklearn", "duckdb")


def test_help_imports_no_heavy_library() -> None:
    # `churnops --help` must stay fast: the slow libraries may load only inside commands.
    code = (
        "import sys, json; from churnops.cli import app; import typer.testing as t; "
        "t.CliRunner().invoke(app, ['--help']); "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("generate", "demo"):
        assert command in result.output


def test_home_resolution_order(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(HOME_ENV, raising=False)
    assert resolve_home(None) == REPO_ROOT
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "env-home"))
    assert resolve_home(None) == tmp_path / "env-home"
    assert resolve_home(tmp_path / "explicit") == tmp_path / "explicit"


def test_workspace_paths_stay_under_home(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    paths = [
        ws.landing,
        ws.lake,
        ws.quarantine,
        ws.ingestion_log,
        ws.features,
        ws.feast,
        ws.mlruns,
        ws.artifacts,
        ws.reports,
        ws.audit_db,
        ws.predictions,
    ]
    assert all(p.is_relative_to(tmp_path) for p in paths)
    assert ws.tracking_uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db"


def test_two_homes_share_no_files(tmp_path: Path) -> None:
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    env = {**os.environ}
    env.pop(HOME_ENV, None)
    for home, seed in ((home_a, "1"), (home_b, "2")):
        args = [
            "generate",
            "--home",
            str(home),
            "--customers",
            "30",
            "--days",
            "10",
            "--seed",
            seed,
            "--start",
            "2026-01-01",
        ]
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
    files_a = {p.relative_to(home_a) for p in home_a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(home_b) for p in home_b.rglob("*") if p.is_file()}
    assert files_a and files_a == files_b
    assert not list(REPO_ROOT.joinpath("data", "landing").glob("*.tmp"))
    differing = [rel for rel in files_a if (home_a / rel).read_bytes() != (home_b / rel).read_bytes()]
    assert differing, "different seeds in different homes should give different files"


def test_generate_rejects_bad_format(tmp_path: Path) -> None:
    result = runner.invoke(app, ["generate", "--home", str(tmp_path), "--format", "xlsx"])
    assert result.exit_code == 2
    assert "csv" in result.output and "parquet" in result.output
