"""A database of its own for one benchmark run (for `bench ftp` and `bench mailer`)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url


@contextlib.asynccontextmanager
async def scratch_database(name: str, root: Path, postgres_url: str) -> AsyncIterator[str]:
    """A database of its own for one run: a new SQLite file, or a scratch database on the server."""
    if name == "sqlite":
        yield f"sqlite+aiosqlite:///{root / f'bench-{uuid.uuid4().hex}.db'}"
        return
    server = make_url(postgres_url)
    scratch = f"skuflow_bench_{uuid.uuid4().hex[:12]}"
    dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{scratch}"')
        try:
            yield server.set(database=scratch).render_as_string(hide_password=False)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    finally:
        await admin.close()
