"""The layout holds: imports flow the way the data flows, and every function fits in one's head."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from churnops.settings import REPO_ROOT

# Folder → the package it installs as (pyproject's package-dir).
PACKAGES = {
    "churnops": "churnops",
    "contracts": "churnops.contracts",
    "storage": "churnops.storage",
    "synthetic": "churnops.synthetic",
    "ingestion": "churnops.ingestion",
    "features": "churnops.features",
    "feature_repo": "churnops.feature_repo",
    "training": "churnops.training",
    "monitoring": "churnops.monitoring",
    "serving": "churnops.serving",
}
# The stages in the order the data flows; each may import the ones before it, never one after.
# `feature_repo/` is the features stage's Feast repository: the two share a rank.
RANK = {"ingestion": 0, "features": 1, "feature_repo": 1, "training": 2, "monitoring": 3, "serving": 4}
STAGES = list(RANK)
# What each part besides the stages may import from the project.
ALLOWED = {
    "errors": {"errors"},
    "storage": {"errors", "storage"},
    "contracts": {"errors", "storage", "contracts"},
    "synthetic": {"errors", "storage", "contracts", "synthetic"},
}
PLUMBING = {"errors", "storage", "contracts"}
COMMAND_LINE = {"cli", "commands", "pipeline", "settings", "config"}
MAX_FUNCTION_LINES = 80


def _part(module: str) -> str | None:
    """The part of the project a module name belongs to: a stage, plumbing or the command line."""
    parts = module.split(".")
    if parts[0] != "churnops":
        return None
    return parts[1] if len(parts) > 1 else "churnops"


def _sources() -> list[tuple[str, Path]]:
    files = []
    for folder, package in PACKAGES.items():
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            relative = path.relative_to(REPO_ROOT / folder).with_suffix("")
            module = ".".join([package, *relative.parts]).removesuffix(".__init__")
            files.append((module, path))
    return files


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if _part(name) is not None}


def _allowed(importer: str, imported: str) -> bool:
    if importer in ALLOWED:
        return imported in ALLOWED[importer]
    if importer in STAGES:
        if imported in PLUMBING:
            return True
        return imported in RANK and RANK[imported] <= RANK[importer]
    return True  # the command line may import everything


def test_imports_flow_the_way_the_data_flows() -> None:
    wrong = []
    for module, path in _sources():
        importer = _part(module)
        if importer in COMMAND_LINE or importer == "churnops":
            continue
        for name in sorted(_imports(path)):
            imported = _part(name)
            if imported == "churnops":
                continue
            if not _allowed(importer, imported):
                wrong.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert wrong == []


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_the_command_line(stage: str) -> None:
    for module, path in _sources():
        if _part(module) != stage:
            continue
        reached = {_part(name) for name in _imports(path)}
        assert not reached & COMMAND_LINE, f"{path.relative_to(REPO_ROOT)} imports the command line"


def test_every_function_fits_on_a_screen() -> None:
    long = []
    for _, path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_the_rule_sees_a_wrong_import(tmp_path: Path) -> None:
    # The checker itself: a storage module importing a stage, and a stage importing one to its right.
    wrong = tmp_path / "wrong.py"
    wrong.write_text("from churnops.features.compute import x\nimport churnops.serving.app\n")
    imported = {_part(name) for name in _imports(wrong)}
    assert imported == {"features", "serving"}
    assert not _allowed("storage", "features")
    assert not _allowed("training", "serving")
    assert _allowed("serving", "training") and _allowed("features", "storage")
