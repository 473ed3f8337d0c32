"""A fresh clone builds a wheel with one top-level name, and the installed wheel runs the pipeline.

The clone holds committed files only; the wheel is installed (not editable) into its own virtual
environment, which borrows the third-party packages of the running one, so the code under test is
the wheel's alone and nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from churnops.settings import HOME_ENV, REPO_ROOT, Workspace

# Folder in the checkout → the package it installs as.
STAGE_FOLDERS = {
    "churnops": "churnops",
    "contracts": "churnops.contracts",
    "synthetic": "churnops.synthetic",
    "storage": "churnops.storage",
    "ingestion": "churnops.ingestion",
    "features": "churnops.features",
    "training": "churnops.training",
    "monitoring": "churnops.monitoring",
    "serving": "churnops.serving",
    "feature_repo": "churnops.feature_repo",
}


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of churnops to clone")
    target = tmp_path_factory.mktemp("fresh") / "churnops"
    _run(["git", "clone", "--quiet", str(REPO_ROOT), str(target)], timeout=120)
    return target


@pytest.fixture(scope="module")
def wheel(clone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # A copy, so the build's own files (build/, *.egg-info) never touch the clone.
    source = tmp_path_factory.mktemp("build") / "churnops"
    shutil.copytree(clone, source, ignore=shutil.ignore_patterns(".git"))
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        timeout=300,
    )
    (built,) = out.glob("churnops-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment holding the wheel; returns its `bin/` folder."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    python = str(venv / "bin" / "python")
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([python, "-c", purelib]).stdout.strip())
    # A plain path line: the running environment's packages become importable, but its .pth files
    # (among them the editable install of the checkout) are not executed.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    _run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        timeout=300,
    )
    return venv / "bin"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (HOME_ENV, "PYTHONPATH")}
    env["COLUMNS"] = "200"
    return env


def test_the_wheel_installs_one_top_level_name(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = (n for n in names if n.endswith(".dist-info/top_level.txt"))
        declared = archive.read(top_level).decode().split()
    roots = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert roots == {"churnops"}
    assert declared == ["churnops"]


def test_the_wheel_holds_every_module_and_contract(wheel: Path, clone: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = set()
    for folder, package in STAGE_FOLDERS.items():
        prefix = package.replace(".", "/")
        for path in (clone / folder).rglob("*"):
            if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
                expected.add(f"{prefix}/{path.relative_to(clone / folder).as_posix()}")
    assert expected, "no source files found in the clone"
    assert sorted(expected - names) == []


def test_the_installed_wheel_answers_help_without_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = _run(
        [
            str(installed / "python"),
            "-c",
            "import churnops.features, churnops.feature_repo as r; "
            "print(churnops.features.__file__); print(r.FEATURE_REPO)",
        ],
        cwd=tmp_path,
        env=_env(),
    ).stdout.split()
    assert all(str(installed.parent) in path for path in where), where
    result = _run([str(installed / "churnops"), "--help"], cwd=tmp_path, env=_env(), timeout=120)
    for command in ("generate", "ingest", "train", "promote", "serve", "demo"):
        assert command in result.stdout


def test_the_installed_wheel_runs_the_demo_from_a_fresh_clone(
    installed: Path, clone: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    args = ["demo", "--home", str(home), "--customers", "400", "--days", "100", "--seed", "7"]
    result = _run([str(installed / "churnops"), *args], cwd=clone, env=_env(), timeout=900)
    assert "gate: promoted" in result.stdout

    # Nothing was written into the repository: everything lives under the home.
    status = _run(["git", "status", "--porcelain", "--ignored"], cwd=clone)
    assert [line for line in status.stdout.splitlines() if "__pycache__" not in line] == []

    ws = Workspace(home)
    for path in (
        ws.lake / "customers",
        ws.features,
        ws.feast / "registry.db",
        ws.feast / "online.db",
        ws.mlruns / "mlflow.db",
        ws.audit_db,
        ws.ingestion_log,
    ):
        assert path.exists(), path

    with sqlite3.connect(ws.mlruns / "mlflow.db") as db:
        aliases = dict(db.execute("SELECT alias, version FROM registered_model_aliases").fetchall())
    assert aliases == {"challenger": 1, "champion": 1}
    with sqlite3.connect(ws.audit_db) as db:
        decisions = db.execute("SELECT decision FROM decisions").fetchall()
    assert decisions == [("promoted",)]
