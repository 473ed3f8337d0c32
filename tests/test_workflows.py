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


def test_model_gate_uploads_every_result_and_fails_when_one_is_missing() -> None:
    steps = _steps(REPO_ROOT / ".github" / "workflows" / "model-gate.yml")
    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert {u["with"]["name"] for u in uploads} >= {"drift", "quality", "gate"}
    assert all(u["with"]["if-no-files-found"] == "error" for u in uploads)
    uploaded = {line.strip() for u in uploads for line in u["with"]["path"].splitlines() if line.strip()}
    written = {"reports/drift.html", "reports/drift.json", "reports/quality.json", "reports/gate.json"}
    assert written <= uploaded
    runs = " ".join(s.get("run", "") for s in steps)
    assert "promote --dry-run --json > reports/gate.json" in runs
    assert "quality --json reports/quality.json" in runs
    check = next(s for s in steps if s.get("name") == "every result is there")
    assert all(path in check["run"] for path in written)
    # Later gates and the uploads run after a failed gate, so a refused model still leaves its results.
    gates = [s for s in steps if s.get("name") in ("quality", "drift", "promote (dry run)")]
    assert all(s.get("if") == "${{ !cancelled() }}" for s in gates + uploads)
