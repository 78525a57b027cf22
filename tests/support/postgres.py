"""The real PostgreSQL the tests talk to, with a fresh database per test."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import asyncpg
from sqlalchemy.engine import make_url

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class PostgreSQL:
    url: str  # SQLAlchemy URL of the maintenance database

    @classmethod
    def from_env(cls) -> PostgreSQL:
        return cls(os.environ.get("SKUFLOW_TEST_POSTGRES_URL", DEFAULT_URL))

    def maintenance_dsn(self) -> str:
        """asyncpg's address of the maintenance database (to create, alter and drop others)."""
        return self._dsn()

    def _dsn(self, database: str | None = None) -> str:
        url = make_url(self.url).set(drivername="postgresql")
        if database is not None:
            url = url.set(database=database)
        return url.render_as_string(hide_password=False)

    async def problem(self) -> str | None:
        try:
            connection = await asyncpg.connect(self._dsn(), timeout=3)
        except (OSError, asyncpg.PostgresError) as error:
            return f"PostgreSQL is not reachable at {make_url(self.url).host} ({error}); scripts/test.sh provisions one"
        await connection.close()
        return None

    async def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"skuflow_test_{uuid.uuid4().hex[:12]}"
        connection = await asyncpg.connect(self._dsn())
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    async def empty_database(self, url: str) -> None:
        """Remove every row (keeping the schema and its migration state): a fresh start in milliseconds."""
        connection = await asyncpg.connect(self._dsn(make_url(url).database))
        try:
            tables = await connection.fetch(
                "SELECT quote_ident(tablename) AS name FROM pg_tables "
                "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            )
            if tables:
                await connection.execute(f"TRUNCATE {', '.join(t['name'] for t in tables)} RESTART IDENTITY CASCADE")
        finally:
            await connection.close()

    async def drop_database(self, url: str) -> None:
        name = make_url(url).database
        connection = await asyncpg.connect(self._dsn())
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()
