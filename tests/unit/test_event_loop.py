"""`SKUFLOW_EVENT_LOOP`: the loop the services run in."""

from __future__ import annotations

import asyncio

import pytest

from skuflow.platform.event_loop import run_in
from skuflow.platform.settings import SettingsError, load_settings


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_each_kind_runs_the_coroutine_in_its_own_loop():
    assert run_in("uvloop", _loop_module()).startswith("uvloop")
    assert run_in("asyncio", _loop_module()).startswith("asyncio")


def test_an_unknown_loop_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SKUFLOW_EVENT_LOOP", "trio")
    with pytest.raises(SettingsError, match="SKUFLOW_EVENT_LOOP"):
        load_settings()
