"""The wakeable loop the outbox relay and the mailer run in: passes again at once while more is waiting, on a
wake otherwise, a growing pause after a failure, and a stop that lets the pass in progress end."""

from __future__ import annotations

import asyncio

from skuflow.platform.background import Wakeable
from tests.support.waiting import wait_until

LONG = 60.0  # a poll interval no test waits for: a pass that starts did so because it was told to


async def test_passes_follow_at_once_while_more_is_waiting_then_wait_for_a_wake():
    passes: list[int] = []

    async def work() -> bool:
        passes.append(len(passes))
        return len(passes) < 3  # three batches' worth, then nothing more

    loop = Wakeable("test", work, poll_seconds=LONG, stop_within=1)
    loop.start()
    try:
        await wait_until(lambda: len(passes) == 3, what="three passes in a row")
        for _ in range(20):  # turns of the event loop (no time passes): a pass due at once would run in them
            await asyncio.sleep(0)
        assert len(passes) == 3, "no fourth pass without a wake"
        loop.wake()
        await wait_until(lambda: len(passes) == 4, what="the pass a wake asked for")
    finally:
        await loop.stop()


async def test_a_failing_pass_is_reported_and_followed_by_a_growing_pause():
    pauses: list[float] = []

    async def work() -> bool:
        raise RuntimeError("broker away")

    def failed(error: Exception, pause: float) -> None:
        assert str(error) == "broker away"
        pauses.append(pause)

    loop = Wakeable("test", work, poll_seconds=LONG, stop_within=1, on_failure=failed, backoff=(0.01, 0.04))
    loop.start()
    try:
        await wait_until(lambda: len(pauses) >= 5, what="five failures")
    finally:
        await loop.stop()
    assert pauses[:5] == [0.01, 0.02, 0.04, 0.04, 0.04]


async def test_stop_lets_the_pass_in_progress_end_and_cancels_one_that_outlasts_the_bound():
    started, release = asyncio.Event(), asyncio.Event()
    ended: list[str] = []

    async def work() -> bool:
        started.set()
        try:
            await release.wait()
            ended.append("finished")
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise
        return False

    loop = Wakeable("test", work, poll_seconds=LONG, stop_within=5)
    loop.start()
    await started.wait()
    stopping = asyncio.create_task(loop.stop())
    await wait_until(lambda: loop.stopping, what="the stop to begin")
    release.set()
    await stopping
    assert ended == ["finished"]
    assert not loop.running

    started.clear()
    release.clear()
    ended.clear()
    slow = Wakeable("test", work, poll_seconds=LONG, stop_within=0.05)
    slow.start()
    await started.wait()
    await slow.stop()
    assert ended == ["cancelled"]
