"""Real HTTP servers for the tests: a service's app under uvicorn on a free port of 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from skuflow.platform.serving import bind, server_for, wait_started


@dataclass
class RunningServer:
    app: FastAPI
    url: str
    server: uvicorn.Server
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, timeout=60)


def free_socket() -> socket.socket:
    """A socket bound to a free port of 127.0.0.1, to know a service's URL before it starts."""
    return bind("127.0.0.1", 0)


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def serve(app: FastAPI, sock: socket.socket | None = None) -> RunningServer:
    """Start `app` (its lifespan included) on `sock` or a free port; return once it answers."""
    sock = sock or free_socket()
    runtime = getattr(app.state, "runtime", None)  # the dashboard has none: it trusts no proxy
    server = server_for(app, runtime.settings.forwarded_allow_ips if runtime else ())  # as `skuflow serve` does
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await wait_started(server, task, within=30)
    return RunningServer(app, url_of(sock), server, task)
