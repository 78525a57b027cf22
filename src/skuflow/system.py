"""Running services in this process: one (`skuflow serve`) or the whole system (`skuflow up`).

Each service is its FastAPI app under its own uvicorn server, on the host and port of its URL setting
(`SKUFLOW_INVENTORY_URL`, ...). All servers share one event loop, and with `memory://` one in-process
broker. SIGINT/SIGTERM stop every server; each drains its consumers and closes its connections.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import FastAPI

from skuflow.platform.serving import SharedProcessServer, bind, server_for, wait_started
from skuflow.platform.settings import Settings


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str  # exposes build_app(settings) -> FastAPI

    def url(self, settings: Settings) -> str:
        url: str = getattr(settings, f"{self.name}_url")
        return url

    def address(self, settings: Settings) -> tuple[str, int]:
        parts = urlsplit(self.url(settings))
        return parts.hostname or "127.0.0.1", parts.port or 80

    def build(self, settings: Settings) -> FastAPI:
        build_app: Callable[[Settings], FastAPI] = importlib.import_module(self.module).build_app
        return build_app(settings)


# Start order: users first, as the others verify tokens with it.
SERVICES = {
    "users": ServiceSpec("users", "skuflow.users.service"),
    "inventory": ServiceSpec("inventory", "skuflow.inventory.service"),
}


async def run_services(specs: list[ServiceSpec], settings: Settings, on_ready: Callable[[], None]) -> None:
    """Serve every service until SIGINT or SIGTERM; raise if one cannot start (ports are checked first)."""
    sockets = [bind(*spec.address(settings)) for spec in specs]
    servers: list[SharedProcessServer] = []
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for spec, sock in zip(specs, sockets, strict=True):
            server = server_for(spec.build(settings))
            task = asyncio.create_task(server.serve(sockets=[sock]), name=f"serve {spec.name}")
            servers.append(server)
            tasks.append(task)
            await wait_started(server, task)
        on_ready()
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
    finally:
        for server in servers:
            server.should_exit = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for sock in sockets:
            sock.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result
