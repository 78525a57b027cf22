"""The chaos suite's faults that disturb the whole broker (run in the separate, disruptive pass)."""

from __future__ import annotations

import asyncio

import pytest

from tests.services.conftest import MODES, System
from tests.services.test_chaos import LOAD_SECONDS, Load, check_nothing_lost_or_doubled, target_of, wishers

pytestmark = [
    pytest.mark.amqp,
    pytest.mark.disruptive,
    pytest.mark.parametrize("stack", ["production"], indirect=True),
    pytest.mark.parametrize("mode", MODES),
]


async def test_broker_restart_mid_load(patient: None, system: System, rabbitmqctl):
    target = target_of(system)
    wishes = await wishers(target)
    load = Load(target)
    async with load.running():
        await asyncio.sleep(LOAD_SECONDS / 3)
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        await asyncio.sleep(1)
        await asyncio.to_thread(rabbitmqctl, "start_app")
    await check_nothing_lost_or_doubled(target, load, wishes)


async def test_postgresql_restart_mid_load(patient: None, system: System, restart_postgresql):
    target = target_of(system)
    wishes = await wishers(target)
    load = Load(target)
    async with load.running():
        await asyncio.sleep(LOAD_SECONDS / 3)
        await asyncio.to_thread(restart_postgresql)
    assert load.resent > 0, "the restart was felt"
    await check_nothing_lost_or_doubled(target, load, wishes)
