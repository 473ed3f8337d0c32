"""Serving pieces that need no server: settings, the log queue, the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from churnops.cli import app as cli
from churnops.serving.models import LoadedModel
from churnops.serving.prediction_log import LogEntry, PredictionLog
from churnops.serving.settings import ServingSettings
from churnops.storage.keys import KEY_PREFIX, hash_key, load_key_hashes


def test_risk_bands_cut_at_the_settings(tmp_path: Path) -> None:
    s = ServingSettings(
        predictions_dir=tmp_path, audit_db=tmp_path / "audit.db", risk_medium=0.25, risk_high=0.7
    )
    assert [s.risk_band(p) for p in (0.0, 0.2499, 0.25, 0.6999, 0.7, 1.0)] == [
        "low",
        "low",
        "medium",
        "medium",
        "high",
        "high",
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"risk_medium": 0.6, "risk_high": 0.6}, "risk_medium (0.6) must be below risk_high (0.6)"),
        ({"require_keys": True}, "require_keys is on but no keys_file is set"),
        ({"max_batch": 0}, "greater than or equal to 1"),
        ({"poll_intervall_s": 1}, "Extra inputs are not permitted"),
    ],
)
def test_settings_refuse_inconsistent_values(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ServingSettings(predictions_dir=tmp_path, audit_db=tmp_path / "audit.db", **overrides)


class _NeverScored:
    def predict_proba(self, frame: pd.DataFrame) -> list[list[float]]:
        raise AssertionError("a full queue must drop entries, not score them")


def test_full_log_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    log = PredictionLog(
        folder=tmp_path,
        feature_columns=["sessions_30d"],
        feature_dtypes={"sessions_30d": "int64"},
        flush_interval_s=0.05,
        batch_rows=10,
        max_queue=1,
    )
    model = LoadedModel(name="m", version="1", model=_NeverScored(), input_columns=("sessions_30d",))
    entry = LogEntry(
        request_ids=["r"],
        items=[0],
        predicted_at=datetime(2026, 11, 21, tzinfo=UTC),
        customer_ids=["CUST-000001"],
        features={"sessions_30d": [3]},
        statuses=["present"],
        snapshot_ts=[None],
        champion=model,
        probabilities=[0.5],
        risk_bands=["medium"],
    )
    for _ in range(3):
        log.submit(entry)
    assert log.queue_size() == 1
    assert log.stats.entries_dropped == 2
    log.start()
    log.stop()
    assert log.stats.rows_written == 1
    assert log.queue_size() == 0


def test_cli_creates_lists_and_requires_keys(tmp_path: Path) -> None:
    runner = CliRunner()
    home = str(tmp_path)
    refused = runner.invoke(cli, ["serve", "--home", home, "--require-keys"])
    assert refused.exit_code == 1
    assert "churnops keys create CONSUMER" in refused.output
    created = runner.invoke(cli, ["keys", "create", "cs-analytics-dashboard", "--home", home])
    assert created.exit_code == 0, created.output
    key = next(w for w in created.output.split() if w.startswith(KEY_PREFIX))
    stored = load_key_hashes(keys_file=tmp_path / "data" / "serving" / "api_keys.json")
    assert stored == {hash_key(key): "cs-analytics-dashboard"}
    listed = runner.invoke(cli, ["keys", "list", "--home", home])
    assert "cs-analytics-dashboard" in listed.output and hash_key(key)[:16] in listed.output
    assert listed.output.splitlines()[1].endswith("active")
    revoked = runner.invoke(cli, ["keys", "revoke", "cs-analytics-dashboard", "--home", home])
    assert revoked.exit_code == 0, revoked.output
    assert "revoked the key of cs-analytics-dashboard" in revoked.output
    assert load_key_hashes(keys_file=tmp_path / "data" / "serving" / "api_keys.json") == {}
    relisted = runner.invoke(cli, ["keys", "list", "--home", home])
    assert " revoked 20" in relisted.output.splitlines()[1]
    again = runner.invoke(cli, ["keys", "revoke", "cs-analytics-dashboard", "--home", home])
    assert again.exit_code == 1 and "no active API key" in again.output
    unapproved = runner.invoke(cli, ["keys", "create", "intruder", "--home", home])
    assert unapproved.exit_code == 1
    assert "not approved" in unapproved.output
