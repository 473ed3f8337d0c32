"""One error family: every bad-input error is a `ChurnopsError`, and the command line prints it as one
paragraph with its exit status instead of a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from churnops.cli import app
from churnops.config import ConfigError
from churnops.contracts.errors import ContractError
from churnops.errors import BAD_INPUT, REFUSED, ChurnopsError
from churnops.ingestion.readers import IngestError
from churnops.monitoring.drift import DriftInputError
from churnops.monitoring.gate import GateError
from churnops.monitoring.inputs import InputProblem
from churnops.monitoring.quality import QualityInputError
from churnops.serving.models import ModelLoadError
from churnops.storage.lock import WorkspaceLockedError

runner = CliRunner()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError, BAD_INPUT),
        (ContractError, BAD_INPUT),
        (IngestError, BAD_INPUT),
        (InputProblem, BAD_INPUT),
        (DriftInputError, BAD_INPUT),
        (GateError, BAD_INPUT),
        (QualityInputError, BAD_INPUT),
        (ModelLoadError, REFUSED),
    ],
)
def test_every_bad_input_error_is_one_family(error: type[Exception], code: int) -> None:
    assert issubclass(error, ChurnopsError)
    assert error.exit_code == code


def test_a_locked_workspace_is_bad_input() -> None:
    assert issubclass(WorkspaceLockedError, ChurnopsError)
    assert WorkspaceLockedError.exit_code == BAD_INPUT


def test_the_old_bases_still_catch_them() -> None:
    # Callers that caught ValueError / RuntimeError before the family existed keep working.
    assert issubclass(ContractError, ValueError) and issubclass(IngestError, ValueError)
    assert issubclass(GateError, RuntimeError) and issubclass(ModelLoadError, RuntimeError)


def test_an_error_no_command_catches_ends_as_one_paragraph(tmp_path: Path, monkeypatch) -> None:
    # A backend variable that cannot be used is raised by the workspace every command opens; the
    # command group alone turns it into the error line and the exit status.
    monkeypatch.setenv("CHURNOPS_TRACKING_URI", "mlruns")
    result = runner.invoke(app, ["contracts", "check", "--home", str(tmp_path)])
    assert result.exit_code == BAD_INPUT
    assert result.output.startswith("error: CHURNOPS_TRACKING_URI='mlruns' is not a database URI")
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_a_command_keeps_its_own_exit_status(tmp_path: Path) -> None:
    # `contracts check --source` of a source no contract describes: refused by the lake check (1).
    result = runner.invoke(app, ["contracts", "check", "--home", str(tmp_path), "--source", "nope"])
    assert result.exit_code == 1
    assert "unknown source 'nope'" in result.output
