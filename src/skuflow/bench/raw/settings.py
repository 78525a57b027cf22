"""The settings of a raw service, from RAW_* environment variables (all required but the prefetch, the
listening socket, and what users alone reads: catalog's URL and the SMTP server, which inventory run alone, as
`skuflow bench stock` runs it, has no use for)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    port: int  # ignored when `listen_fd` is given
    database_url: str  # postgresql://... (asyncpg's)
    amqp_url: str
    token: str  # the bearer token `POST /v1/stock` wants
    inventory_url: str
    catalog_url: str = ""  # users' (the products' names)
    smtp_host: str = ""  # users': where its emails go
    smtp_port: int = 0
    prefetch: int = 32  # skuflow's default SKUFLOW_PREFETCH
    listen_fd: int | None = None  # a socket bound by the caller (the bench): no race for a free port

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            port=int(env["RAW_PORT"]),
            database_url=env["RAW_DATABASE_URL"],
            amqp_url=env["RAW_AMQP_URL"],
            token=env["RAW_TOKEN"],
            inventory_url=env["RAW_INVENTORY_URL"],
            catalog_url=env.get("RAW_CATALOG_URL", ""),
            smtp_host=env.get("RAW_SMTP_HOST", ""),
            smtp_port=int(env.get("RAW_SMTP_PORT", "0")),
            prefetch=int(env.get("RAW_PREFETCH", "32")),
            listen_fd=int(env["RAW_LISTEN_FD"]) if "RAW_LISTEN_FD" in env else None,
        )
