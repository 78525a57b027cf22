"""`python -m skuflow.bench.raw inventory|catalog|users`: one raw service on 127.0.0.1:RAW_PORT (or on the bound
socket RAW_LISTEN_FD) until SIGINT or SIGTERM (aiohttp's `run_app` then closes the resources)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Mapping

from aiohttp import web

from skuflow.bench.raw import catalog, inventory, users
from skuflow.bench.raw.common import Bus, aio_pika_bus
from skuflow.bench.raw.settings import Settings

APPS: Mapping[str, Callable[[Settings, Bus], web.Application]] = {
    "inventory": inventory.app,
    "catalog": catalog.app,
    "users": users.app,
}


def main(argv: list[str], bus: Bus = aio_pika_bus, program: str = "skuflow.bench.raw") -> int:
    """The service `argv[1]` on `bus` (`skuflow.bench.faststream_flow` runs the same apps on FastStream's)."""
    if len(argv) != 2 or argv[1] not in APPS:
        print(f"usage: python -m {program} {'|'.join(APPS)}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    app = APPS[argv[1]](settings, bus)
    if settings.listen_fd is not None:
        web.run_app(app, sock=socket.socket(fileno=settings.listen_fd), print=None)
    else:
        web.run_app(app, host="127.0.0.1", port=settings.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
