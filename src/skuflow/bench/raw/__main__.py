"""`python -m skuflow.bench.raw inventory|catalog|users`: one raw service on 127.0.0.1:RAW_PORT until SIGINT
or SIGTERM (aiohttp's `run_app` then closes the resources)."""

from __future__ import annotations

import sys

from aiohttp import web

from skuflow.bench.raw import catalog, inventory, users
from skuflow.bench.raw.settings import Settings

APPS = {"inventory": inventory.app, "catalog": catalog.app, "users": users.app}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in APPS:
        print(f"usage: python -m skuflow.bench.raw {'|'.join(APPS)}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    web.run_app(APPS[argv[1]](settings), host="127.0.0.1", port=settings.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
