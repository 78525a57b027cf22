"""Tasks a component runs beside its service, started with it and stopped with it:

- `Background`: one task (a watcher), cancelled at stop;
- `Periodic`: work every so many seconds (a sweeper, a reconciliation, retention);
- `Wakeable`: work done in passes, again at once while more is waiting, else when woken or after a poll
  interval, with a growing pause after a failure, and a stop that lets the pass in progress end (the outbox
  relay, the mailer).
"""

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


class Wakeable:
    """`work` in passes: it returns whether more is waiting (then the next pass starts at once); otherwise the
    next pass starts when `wake()` is called (a commit that made work) or after `poll_seconds`. A pass that
    raises is given to `on_failure` and followed by a pause, doubling from `backoff[0]` up to `backoff[1]`.

    `stop()` lets the pass in progress end within `stop_within` seconds, so that what it did is recorded (a
    published message marked, an accepted email marked sent), then cancels it; `work` looks at `stopping`
    to end a long pass early."""

    def __init__(
        self,
        name: str,
        work: Callable[[], Awaitable[bool]],
        *,
        poll_seconds: float,
        stop_within: float,
        on_failure: Callable[[Exception, float], None] | None = None,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.name = name
        self.work = work
        self.poll_seconds = poll_seconds
        self.stop_within = stop_within
        self.on_failure = on_failure or self._log_failure
        self.backoff = backoff
        self.stopping = False
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wakeup.set()

    def start(self) -> None:
        self.stopping = False
        self._task = asyncio.create_task(self._run(), name=self.name)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is None:
            return
        task, self._task = self._task, None
        self.stopping = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.stop_within)
        except TimeoutError:
            pass
        except Exception:  # the loop catches its passes' errors: this would be a fault of the loop itself
            log.exception("%s ended with an error", self.name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def _run(self) -> None:
        pause = self.backoff[0]
        while not self.stopping:
            self._wakeup.clear()  # before the pass: a wake during it starts the next one at once
            try:
                more = await self.work()
                pause = self.backoff[0]
            except Exception as error:
                self.on_failure(error, pause)
                await self._rest(pause)
                pause = min(pause * 2, self.backoff[1])
                continue
            if not more:
                await self._rest(self.poll_seconds)

    async def _rest(self, seconds: float) -> None:
        """Wait `seconds`, or less if woken (or stopped)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=seconds)

    def _log_failure(self, _error: Exception, pause: float) -> None:
        log.exception("%s failed; trying again in %.1f s", self.name, pause)
