"""Route helpers without a running service: request ids, readiness checks, API-key dependency."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import Request

from churnops.serving.auth import authorize
from churnops.serving.errors import ServiceError
from churnops.serving.metrics import ServingMetrics
from churnops.serving.models import NO_CHAMPION_HINT, LoadedModel, ModelSet, UnauditedChampion
from churnops.serving.routers import model_check, online_store_check, ready, request_id
from churnops.serving.settings import ServingSettings
from churnops.serving.state import ServiceState
from churnops.storage.keys import KeyRing, hash_key


def _request(*, state: ServiceState | None = None, headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    app = SimpleNamespace(state=SimpleNamespace(service=state))
    return Request({"type": "http", "headers": raw, "app": app})


def test_a_client_request_id_is_kept_only_when_1_to_128_characters() -> None:
    assert request_id(_request(headers={"X-Request-ID": "abc-1"})) == "abc-1"
    assert request_id(_request(headers={"X-Request-ID": "r" * 128})) == "r" * 128
    for given in ({"X-Request-ID": "r" * 129}, {"X-Request-ID": ""}, {}):
        generated = request_id(_request(headers=given))
        assert len(generated) == 32
        assert generated != request_id(_request(headers=given))


class _Watcher:
    def __init__(
        self,
        champion: LoadedModel | None,
        error: str | None = None,
        unaudited: UnauditedChampion | None = None,
    ) -> None:
        self.current = ModelSet(champion=champion, challenger=None, unaudited=unaudited)
        self.last_error = error


def _model(*, note: str | None = None) -> LoadedModel:
    return LoadedModel(name="churn-model", version="7", model=None, input_columns=("x",), fast_path_note=note)


def test_model_check_names_the_champion_its_scoring_path_and_refresh_errors() -> None:
    assert model_check(_Watcher(None)) == {"ok": False, "detail": f"no champion: {NO_CHAMPION_HINT}"}
    assert model_check(_Watcher(_model(note="unsupported step"), error="version 8 needs input columns")) == {
        "ok": True,
        "version": "7",
        "scoring": "predict_proba",
        "scoring_note": "unsupported step",
        "refresh_error": "version 8 needs input columns",
    }


def test_model_check_names_an_unaudited_champion_and_is_not_ok_without_an_earlier_one() -> None:
    moved = UnauditedChampion(version="9", reason="churn-model@champion points at version 9, but ...")
    assert model_check(_Watcher(_model(note="n"), unaudited=moved)) == {
        "ok": True,
        "version": "7",
        "scoring": "predict_proba",
        "scoring_note": "n",
        "unaudited": {"version": "9", "reason": moved.reason},
    }
    assert model_check(_Watcher(None, unaudited=moved)) == {"ok": False, "detail": moved.reason}


def test_online_store_check_reports_the_store_error() -> None:
    class _Broken:
        def ping(self) -> None:
            raise OSError("unable to open database file")

    class _Fine:
        def ping(self) -> None:
            return None

    assert online_store_check(SimpleNamespace(reader=_Broken())) == {  # type: ignore[arg-type]
        "ok": False,
        "detail": "unable to open database file",
    }
    assert online_store_check(SimpleNamespace(reader=_Fine())) == {"ok": True}  # type: ignore[arg-type]


def _state(tmp_path: Path, *, require_keys: bool, runtime: Any = None) -> ServiceState:
    settings = ServingSettings(
        predictions_dir=tmp_path,
        audit_db=tmp_path / "audit.db",
        require_keys=require_keys,
        keys_file=tmp_path / "keys.json",
    )
    return ServiceState(settings=settings, metrics=ServingMetrics(endpoints=set()), runtime=runtime)


def test_before_start_up_ready_is_503_and_scoring_routes_say_starting(tmp_path: Path) -> None:
    state = _state(tmp_path, require_keys=False)
    response = asyncio.run(ready(_request(state=state)))
    assert response.status_code == 503
    assert json.loads(response.body) == {"ready": False, "checks": {"started": False}}
    with pytest.raises(ServiceError) as caught:
        state.running()
    assert (caught.value.status, caught.value.error) == (503, "starting")


def test_authorize_checks_keys_only_when_required(tmp_path: Path) -> None:
    asyncio.run(authorize(_request(state=_state(tmp_path, require_keys=False)), None))
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"keys": [{"consumer": "dashboard", "sha256": hash_key("good-key")}]}))
    runtime = SimpleNamespace(keys=KeyRing(keys_file=keys_file, interval_s=0))
    state = _state(tmp_path, require_keys=True, runtime=runtime)
    asyncio.run(authorize(_request(state=state), "good-key"))
    for key, says in ((None, "requires an API key"), ("bad-key", "does not hold a valid API key")):
        with pytest.raises(ServiceError) as caught:
            asyncio.run(authorize(_request(state=state), key))
        assert (caught.value.status, caught.value.error) == (401, "unauthorized")
        assert says in caught.value.detail
        assert caught.value.headers == {"WWW-Authenticate": "X-API-Key"}
