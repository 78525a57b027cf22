"""SQLite serves one process (issue 14, defect 9): the locks that keep two workers of a service from sending
the same email are the process's own, so a second *process* on the same SQLite file is refused, naming the
setting and PostgreSQL. Every Database of one process shares the file's lock (tests run several services
of one process on one file)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from skuflow.platform.db import Database, DatabaseInUse
from skuflow.platform.settings import Settings
from skuflow.users.service import MIGRATIONS, build_app
from tests.conftest import ADMIN_SECRET, WAREHOUSE_SECRET, free_port
from tests.support.servers import serve

# A second process that opens the database as a service does at start, then waits to be killed.
HOLD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from skuflow.platform.db import Database
    from skuflow.users.service import MIGRATIONS

    async def main():
        db = Database(sys.argv[1], MIGRATIONS)
        await db.migrate()
        print("holding", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def second_users_process(environment: dict[str, str], within: float = 60) -> subprocess.CompletedProcess[str]:
    """`skuflow serve users` on the same data directory; fails the test if it starts serving."""
    process = subprocess.Popen(
        [sys.executable, "-m", "skuflow", "serve", "users"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + within
    try:
        while process.poll() is None:
            if _answers(environment["SKUFLOW_USERS_URL"] + "/healthz"):
                pytest.fail("a second users process started on the same SQLite file")
            assert time.monotonic() < deadline, "the second process neither started nor stopped"
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def test_a_second_users_process_on_the_same_sqlite_file_is_refused_naming_postgresql(
    environment: dict[str, str], amqp_url: str
):
    data_dir = Path(environment["SKUFLOW_DATA_DIR"])
    settings = Settings(
        broker_url="memory://",
        data_dir=data_dir,
        warehouse_secret=WAREHOUSE_SECRET,
        admin_secret=ADMIN_SECRET,
        users_grpc=f"127.0.0.1:{free_port()}",  # not the second's: it must fail on the database, not the port
    )
    first = await serve(build_app(settings))  # users, in this process, on $SKUFLOW_DATA_DIR/users.db
    try:
        env = environment | {
            "SKUFLOW_BROKER_URL": amqp_url,
            "SKUFLOW_WAREHOUSE_SECRET": WAREHOUSE_SECRET,
            "SKUFLOW_ADMIN_SECRET": ADMIN_SECRET,
        }
        second = await asyncio.to_thread(second_users_process, env)  # the loop goes on serving the first
    finally:
        await first.stop()

    output = second.stdout + second.stderr
    assert second.returncode not in (0, None), output  # (3: uvicorn's exit for a failed start-up)
    assert "users cannot start: its database (SKUFLOW_USERS_DATABASE_URL=sqlite+aiosqlite:///" in output
    database = settings.database_url("users").removeprefix("sqlite+aiosqlite:///")  # data_dir/users.db, resolved
    assert f"another process (pid {os.getpid()}) uses the SQLite database {database}" in output
    assert "use PostgreSQL" in output


async def test_databases_of_one_process_share_the_file_whatever_path_names_it_and_let_go_together(tmp_path: Path):
    real = tmp_path / "data"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    one = Database(sqlite_url(real / "users.db"), MIGRATIONS)
    other = Database(sqlite_url(tmp_path / "link" / "users.db"), MIGRATIONS)  # the same file, through a symlink
    await one.migrate()
    await other.migrate()

    refused = await asyncio.to_thread(_hold_in_another_process, real / "users.db", expect_refusal=True)
    await one.close()
    still = await asyncio.to_thread(_hold_in_another_process, real / "users.db", expect_refusal=True)
    await other.close()
    taken = await asyncio.to_thread(_hold_in_another_process, real / "users.db", expect_refusal=False)

    assert f"pid {os.getpid()}" in refused, "the lock is the real file's, not the path's"
    assert f"pid {os.getpid()}" in still, "held while one Database of the process still uses the file"
    assert taken == "holding", "once the last one closed, another process may have it"


async def test_a_process_that_crashed_leaves_no_stale_lock(tmp_path: Path):
    path = tmp_path / "users.db"
    holder = await asyncio.to_thread(_holder, path)
    try:
        with pytest.raises(DatabaseInUse, match=f"another process \\(pid {holder.pid}\\)"):
            await Database(sqlite_url(path), MIGRATIONS).migrate()
    finally:
        holder.kill()  # as a crash: no clean-up runs
        await asyncio.to_thread(holder.wait, 30)

    db = Database(sqlite_url(path), MIGRATIONS)
    await db.migrate()  # the OS let go of the dead process's lock
    await db.close()


def _holder(path: Path) -> subprocess.Popen[str]:
    """Another process holding the database, once it says so."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, sqlite_url(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "holding"
    return holder


def _hold_in_another_process(path: Path, *, expect_refusal: bool) -> str:
    """Open the database in a new process: its refusal's message, or "holding" once it holds the file."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, sqlite_url(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        if expect_refusal:
            _, stderr = process.communicate(timeout=60)
            assert process.returncode != 0, "the other process was not refused"
            return stderr.strip().splitlines()[-1]
        assert process.stdout is not None
        return process.stdout.readline().strip()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
