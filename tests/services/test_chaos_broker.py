"""The chaos suite's faults that disturb the whole broker (run in the separate, disruptive pass)."""

from __future__ import annotations

import asyncio

import pytest

from tests.messaging.test_broker_restart import rabbitmqctl  # noqa: F401 (a fixture)
from tests.services.conftest import MODES, System
from tests.services.test_chaos import LOAD_SECONDS, Load, check_nothing_lost_or_doubled, patient, wishers  # noqa: F401

pytestmark = [
    pytest.mark.amqp,
    pytest.mark.disruptive,
    pytest.mark.parametrize("stack", ["production"], indirect=True),
    pytest.mark.parametrize("mode", MODES),
]


async def test_broker_restart_mid_load(patient: None, system: System, rabbitmqctl):  # noqa: F811
    wishes = await wishers(system)
    load = Load(system)
    async with load.running():
        await asyncio.sleep(LOAD_SECONDS / 3)
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        await asyncio.sleep(1)
        await asyncio.to_thread(rabbitmqctl, "start_app")
    await check_nothing_lost_or_doubled(system, load, wishes)
