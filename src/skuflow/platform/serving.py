"""Serving a service's app with uvicorn, alone (`skuflow serve`) or several in one process (`skuflow up`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator, Sequence

import uvicorn
from fastapi import FastAPI


class SharedProcessServer(uvicorn.Server):
    """A uvicorn server that leaves signals to its owner, so several can run in one event loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """Bind now, so that a busy port fails before anything starts, naming the port."""
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets that say they
    # are TCP; without it every request on a kept-alive connection waited ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return sock


def server_for(app: FastAPI, forwarded_allow_ips: Sequence[str] = ()) -> SharedProcessServer:
    """`forwarded_allow_ips` (SKUFLOW_FORWARDED_ALLOW_IPS): the peers whose `X-Forwarded-For` is believed.
    None by default: uvicorn's own default believes 127.0.0.1 (and its FORWARDED_ALLOW_IPS variable), so
    anyone on the host, or any local proxy that passes the header on unchecked, could pick the address
    that the rate limits count."""
    # log_config=None: uvicorn's own lines go through our (structured) logging instead of its handlers.
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        access_log=False,
        log_config=None,
        proxy_headers=bool(forwarded_allow_ips),
        forwarded_allow_ips=list(forwarded_allow_ips) or None,
    )
    return SharedProcessServer(config)


async def wait_started(server: uvicorn.Server, task: asyncio.Task[None], within: float = 60) -> None:
    """Return once the server answers; raise its start-up error if it stopped instead."""
    async with asyncio.timeout(within):
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the server stopped during start-up (see the log above)")
            await asyncio.sleep(0.01)
