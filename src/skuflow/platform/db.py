"""Each service's own database: SQLAlchemy 2 (async), SQLite by default, PostgreSQL in production.

Migrations (Alembic) run at start-up from the service's `migrations/` folder. Writes go through
`transaction()`: one unit of work that commits as a whole or not at all. SQLite allows one writer at a
time, so on SQLite write transactions queue on an in-process lock instead of failing with "database is
locked"; SQLite is the single-process embedded mode, PostgreSQL the one for several processes.

That single process is enforced: the locks above are the process's own, so two processes on one SQLite
file would each think they hold them (and send the same emails, relay the same messages). A Database on a
SQLite file takes an OS lock (`flock`) on `<file>.lock` when it starts (`migrate`), shared by every
Database of the process on that file, and a second process is refused with `DatabaseInUse`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Select, Table, event, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from skuflow.platform.redaction import without_password

# SQLite: the locks `exclusive` holds in this process, by database file and name; shared by every Database
# object, so that two services of one process on one file (as tests run them) see each other's locks.
_SQLITE_HELD: set[tuple[str, str]] = set()


class DatabaseInUse(RuntimeError):
    """Another process has this SQLite database: SQLite serves one process (PostgreSQL, several)."""


class _FileLock:
    """An exclusive `flock` on `<database>.lock` for as long as some Database of this process uses the
    file: the process's life, for a service. The OS lets go of it when the process ends, however it ends,
    so a crash leaves nothing stale; the holder's pid is written in the file, to name it to the next one."""

    _held: ClassVar[dict[str, tuple[int, int]]] = {}  # real database path -> (descriptor, Databases using it)
    _guard = threading.Lock()

    @classmethod
    def take(cls, database: str) -> None:
        with cls._guard:
            descriptor, users = cls._held.get(database, (-1, 0))
            if users == 0:
                descriptor = cls._lock(database)
            cls._held[database] = (descriptor, users + 1)

    @classmethod
    def release(cls, database: str) -> None:
        with cls._guard:
            descriptor, users = cls._held.pop(database, (-1, 0))
            if users > 1:
                cls._held[database] = (descriptor, users - 1)
            elif users == 1:
                os.close(descriptor)  # closing the last descriptor of the file releases the lock

    @staticmethod
    def _lock(database: str) -> int:
        path = f"{database}.lock"
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise DatabaseInUse(
                f"another process (pid {holder}) uses the SQLite database {database} (locked through {path}): "
                "SQLite serves one process; stop that one, give this one another data directory, or use "
                "PostgreSQL (postgresql+asyncpg://...) to run several processes of a service"
            ) from None
        except BaseException:
            os.close(descriptor)
            raise
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        return descriptor


def _sqlite_file(url: str) -> str:
    """What names a SQLite database for the process-wide locks: its file, however the URL spells it; an
    in-memory database is its own (each connection to `:memory:` is another database)."""
    database = make_url(url).database
    if not database or database == ":memory:":
        return f":memory:{uuid.uuid4().hex}"
    return os.path.realpath(database)


class Database:
    def __init__(self, url: str, migrations: Path, *, version_table: str = "alembic_version") -> None:
        self.url = url
        self.migrations = migrations
        self.version_table = version_table
        self.is_sqlite = url.startswith("sqlite")
        self.engine: AsyncEngine = _engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._lock_scope = _sqlite_file(url) if self.is_sqlite else url
        self._holds_file = False  # the process-wide lock on the SQLite file, taken at start (`migrate`)

    def for_update(self, query: Select[Any]) -> Select[Any]:
        """Lock the selected rows until the transaction ends (PostgreSQL; SQLite has one writer anyway)."""
        return query if self.is_sqlite else query.with_for_update()

    def insert(self, table: Table) -> Any:
        """The dialect's INSERT, which offers ON CONFLICT (upserts, inserts that skip duplicates)."""
        return sqlite_insert(table) if self.is_sqlite else postgresql_insert(table)

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent; safe to run at every start)."""
        if self.is_sqlite:
            path = self.url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the data directory: private
                self._take_file()
        async with self.engine.begin() as connection:
            if not self.is_sqlite:
                # Several processes of one service may start together: one migrates, the others wait for it
                # (the lock ends with the transaction).
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                    {"name": f"skuflow-migrate-{self.version_table}"},
                )
            await connection.run_sync(self._upgrade)

    def _upgrade(self, connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(self.migrations))
        config.set_main_option("version_table", self.version_table)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits if the block ends normally, rolls back if it raises."""
        async with contextlib.AsyncExitStack() as stack:
            if self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            session = await stack.enter_async_context(self.sessions())
            async with session.begin():
                yield session

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A read-only session (no lock on SQLite: WAL lets readers run beside the writer)."""
        async with self.sessions() as session:
            yield session

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Try to hold the lock called `name` for the block, without waiting: yields whether this process
        has it. On PostgreSQL it is an advisory lock, held by a connection of its own, so every process of
        the service sees it, and a process that dies lets go of it. On SQLite (one process) it is local."""
        if self.is_sqlite:
            key = (self._lock_scope, name)
            if key in _SQLITE_HELD:
                yield False
                return
            _SQLITE_HELD.add(key)
            try:
                yield True
            finally:
                _SQLITE_HELD.discard(key)
            return
        async with self.engine.connect() as connection:
            held = True  # until known otherwise: a connection that may hold the lock never goes back to the pool
            try:
                statement = text("SELECT pg_try_advisory_lock(hashtext(:name))")
                held = bool(await connection.scalar(statement, {"name": name}))
                await connection.commit()  # the lock belongs to the session, not to this transaction
                try:
                    yield held
                finally:
                    if held:
                        unlock = text("SELECT pg_advisory_unlock(hashtext(:name))")
                        await connection.execute(unlock, {"name": name})
                        await connection.commit()
                        held = False
            finally:
                if held:
                    await connection.invalidate()  # closing the session releases its locks

    @contextlib.asynccontextmanager
    async def one_worker(self, name: str) -> AsyncIterator[bool]:
        """For work that several processes share by row locks on PostgreSQL (`FOR UPDATE SKIP LOCKED`):
        always yields True there. SQLite has no row locks, and one process, but several services of it may
        share the file (as tests run them): only one at a time may go ahead; it yields whether this one may."""
        if not self.is_sqlite:
            yield True
            return
        async with self.exclusive(name) as mine:
            yield mine

    async def lock_for_transaction(self, session: AsyncSession, name: str) -> None:
        """Wait for the lock called `name`, held until the session's transaction ends, across every process
        of the service. PostgreSQL: an advisory lock. SQLite has one writer at a time: a write that changes
        nothing takes the database's write lock now, so what the transaction reads next stays true."""
        if self.is_sqlite:
            await session.execute(text(f"UPDATE {self.version_table} SET version_num = version_num WHERE 0 = 1"))
        else:
            await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})

    async def insert_many(self, session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        """Rows into `table` in the session's transaction: by COPY on PostgreSQL when there are many (plain
        values only: no JSON), else one multi-row INSERT."""
        if not rows:
            return
        if not self.is_sqlite and len(rows) >= COPY_FROM:
            columns = list(rows[0])
            await self.copy(session, table.name, columns, [tuple(row[column] for column in columns) for row in rows])
        else:
            await session.execute(table.insert(), list(rows))

    async def copy(self, session: AsyncSession, table: str, columns: Sequence[str], rows: Sequence[Any]) -> None:
        """Rows into `table` by PostgreSQL's COPY, in the session's transaction: for many rows, several
        times faster than an INSERT. Values as asyncpg takes them (JSON as text)."""
        if self.is_sqlite:
            raise NotImplementedError("COPY is PostgreSQL's")
        driver = await driver_connection(session)
        await driver.copy_records_to_table(table, records=rows, columns=list(columns))

    @staticmethod
    def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
        """Run `callback` once the session's transaction has committed (not if it rolls back)."""
        callbacks: list[Callable[[], None]] = session.sync_session.info.setdefault(_AFTER_COMMIT, [])
        if callback not in callbacks:
            callbacks.append(callback)

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        try:
            await self.engine.dispose()
        finally:
            if self._holds_file:
                self._holds_file = False
                _FileLock.release(self._lock_scope)

    def _take_file(self) -> None:
        """Hold the process's lock on the SQLite file (once per Database); raise `DatabaseInUse`."""
        if not self._holds_file and not self._lock_scope.startswith(":memory:"):
            _FileLock.take(self._lock_scope)
            self._holds_file = True


async def driver_connection(session: AsyncSession) -> Any:
    """The driver's own connection under the session (asyncpg's or aiosqlite's), in its transaction."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


def utc(moment: datetime) -> datetime:
    """A datetime read back from the database, aware and in UTC (SQLite returns naive ones, stored in UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_AFTER_COMMIT = "skuflow_after_commit"
COPY_FROM = 200  # rows in one call from which PostgreSQL's COPY beats a multi-row INSERT
# Values in one IN list: PostgreSQL refuses a row-value list of some 7,000 pairs (stack depth limit exceeded),
# and asyncpg a statement of more than 32,767 parameters.
IN_SLICE = 1_000

V = TypeVar("V")


def in_slices(values: Sequence[V], size: int = IN_SLICE) -> Iterator[Sequence[V]]:
    """`values` in slices for IN lists of at most `size`, in their order (sorted values lock in order)."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _run_after_commit(session: Session) -> None:
    for callback in session.info.pop(_AFTER_COMMIT, []):
        callback()


def _forget_after_commit(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


event.listen(Session, "after_commit", _run_after_commit)
event.listen(Session, "after_rollback", _forget_after_commit)


def _engine(url: str) -> AsyncEngine:
    options: dict[str, Any] = {}
    if url.startswith("sqlite"):
        options["connect_args"] = {"timeout": 30}
    else:
        options.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
    engine = create_async_engine(url, **options)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


async def create_database_if_missing(url: str) -> bool:
    """Create the PostgreSQL database `url` names when its server has none of that name (True if created),
    connecting as its user to the server's `postgres` database. OSError naming the server if unreachable."""
    import asyncpg

    target = make_url(url)
    name = target.database
    if not name:
        raise ValueError(f"{without_password(url)} names no database")
    server = target.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    try:
        connection = await asyncpg.connect(server, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        raise OSError(f"cannot reach PostgreSQL at {without_password(url)}: {error or type(error).__name__}") from None
    try:
        if await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await connection.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:  # another process created it meanwhile
            return False
        except asyncpg.PostgresError as error:
            raise OSError(f"cannot create the database {name!r} on {without_password(url)}: {error}") from None
        return True
    finally:
        await connection.close()
