"""Tasks a component runs beside its service (a watcher, a sweeper, a reconciliation, retention): started
with the service, cancelled when it stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("skuflow")


class Background:
    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[None] | None = None

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        self._task = asyncio.create_task(work, name=self.name)

    async def stop(self, within: float | None = None) -> None:
        """Cancel the task and wait for it to end (at most `within` seconds, if given)."""
        if self._task is None:
            return
        task, self._task = self._task, None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, within)


class Periodic:
    """`work` every `every` seconds (the first time at start, unless `at_start` is false); a failure is
    logged and the work tried again after `after_failure` seconds if that is sooner."""

    def __init__(
        self,
        name: str,
        work: Callable[[], Awaitable[object]],
        every: float,
        *,
        at_start: bool = True,
        after_failure: float | None = None,
    ) -> None:
        self.name = name
        self.work = work
        self.every = every
        self.at_start = at_start
        self.after_failure = every if after_failure is None else min(every, after_failure)
        self._background = Background(name)

    async def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()

    async def _run(self) -> None:
        if not self.at_start:
            await asyncio.sleep(self.every)
        while True:
            try:
                await self.work()
                wait = self.every
            except Exception:
                wait = self.after_failure
                log.exception("%s failed; trying again in %.1f s", self.name, wait)
            await asyncio.sleep(wait)
