"""The event loop the services run in, by `SKUFLOW_EVENT_LOOP`: uvloop (libuv's loop, whose sockets,
callbacks and timers cost less CPU than asyncio's own) or asyncio's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

EventLoop = Literal["uvloop", "asyncio"]


def run_in(kind: EventLoop, main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to its end in a new event loop of `kind`."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if kind == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
