"""The GitHub workflows are valid workflow files and run the steps the README promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from churnops.settings import REPO_ROOT

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))


def _steps(path: Path) -> list[dict]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [step for job in document["jobs"].values() for step in job["steps"]]


def test_every_workflow_matches_the_github_workflow_schema() -> None:
    assert WORKFLOWS, "no workflow files found"
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_feast_plan_compares_the_pull_request_with_the_base_registry() -> None:
    runs = [step.get("run", "") for step in _steps(REPO_ROOT / ".github" / "workflows" / "feast-plan.yml")]
    apply = next(i for i, run in enumerate(runs) if "feast apply" in run)
    plan = next(i for i, run in enumerate(runs) if "feast plan" in run)
    assert apply < plan
    assert "cd base/feature_repo" in runs[apply]
    assert "cd head/feature_repo" in runs[plan]
