"""`skuflow up --processes [--instances N]`: the system of `skuflow up` with each service in processes of its
own, so that one command uses every core.

Each service runs as `skuflow serve SERVICE --workers N`: a supervisor and N worker processes sharing the
service's port (N instances of each service; their consumers compete for the queues' messages). This process
keeps what `skuflow up` keeps beside the services (the embedded SMTP sink, which prints the emails, and the
warehouse's FTP server), starts the services in order, each answering `/readyz` before the next starts, and
on Ctrl-C (or SIGTERM, SIGHUP) stops them in reverse order, each draining. The services share RabbitMQ and
PostgreSQL, not the in-process broker and SQLite, which serve one process.

The supervisors are started in a session (and process group) of their own, so that a Ctrl-C at the terminal reaches this
process alone and the stop keeps its order; and with `--end-with-parent`, so that they drain and end if this
process dies without stopping them (even by SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from sqlalchemy.engine import make_url

from skuflow.embedded.smtp import ReceivedMail
from skuflow.platform.db import create_database_if_missing
from skuflow.platform.settings import Settings, SettingsError, without_password
from skuflow.system import SERVICES, ServiceSpec, embedded_servers, stop_signals

READY_WITHIN = 120.0  # seconds for a service's processes to answer /readyz (migrations included)
STOP_MARGIN = 15.0  # seconds beyond the drain's grace before a supervisor that has not ended is killed


@dataclass
class ServiceProcesses:
    """One service's supervisor (a child of this process) and how to reach the service."""

    spec: ServiceSpec
    process: asyncio.subprocess.Process
    url: str


def check_shared_stack(settings: Settings) -> None:
    """Several processes need a broker and databases they share: RabbitMQ and PostgreSQL, or a SettingsError
    naming the variable to set."""
    if settings.broker_url.startswith("memory://"):
        raise SettingsError(
            "SKUFLOW_BROKER_URL: `skuflow up --processes` runs each service in its own processes, which need a "
            "broker they share, not memory:// (set amqp://user:password@host:5672/; `skuflow up` without "
            "--processes runs everything in one process)"
        )
    on_sqlite = [name for name in SERVICES if settings.database_url(name).startswith("sqlite")]
    if on_sqlite:
        variables = ", ".join(f"SKUFLOW_{name.upper()}_DATABASE_URL" for name in on_sqlite)
        raise SettingsError(
            f"{variables}: `skuflow up --processes` needs PostgreSQL for every service (SQLite serves one "
            "process): set postgresql+asyncpg://user@host:5432/NAME; a database that does not exist is created"
        )
    unnamed = [name for name in SERVICES if not make_url(settings.database_url(name)).database]
    if unnamed:
        variables = ", ".join(f"SKUFLOW_{name.upper()}_DATABASE_URL" for name in unnamed)
        raise SettingsError(f"{variables}: name the database (postgresql+asyncpg://user@host:5432/NAME)")


async def run_up_processes(
    settings: Settings,
    instances: int,
    on_ready: Callable[[Settings, list[ServiceProcesses]], None],
    on_mail: Callable[[ReceivedMail], None],
    ftp_password: str,
) -> None:
    """The whole system, each service in its own processes, until SIGINT, SIGTERM or SIGHUP. Raises OSError
    or RuntimeError naming what failed (a service whose processes ended is one)."""
    check_shared_stack(settings)
    await _reachable(settings.broker_url)
    for name in SERVICES:
        await create_database_if_missing(settings.database_url(name))
    async with embedded_servers(settings, on_mail, ftp_password) as settings:
        environment = {
            **os.environ,
            "SKUFLOW_SMTP_URL": str(settings.smtp_url),
            "SKUFLOW_WAREHOUSE_FTP_URL": str(settings.warehouse_ftp_url),
        }
        started: list[ServiceProcesses] = []
        with stop_signals() as stop:
            try:
                for spec in SERVICES.values():
                    started.append(await _start(spec, settings, instances, environment))
                    if not await _until_ready(started[-1], stop):
                        return  # stopped while starting
                on_ready(settings, started)
                await _until_stopped_or_ended(started, stop)
            finally:
                for service in reversed(started):
                    await _stop(service, settings.shutdown_grace_seconds)


async def _start(
    spec: ServiceSpec, settings: Settings, instances: int, environment: dict[str, str]
) -> ServiceProcesses:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "skuflow",
        "serve",
        spec.name,
        "--workers",
        str(instances),
        "--end-with-parent",
        env=environment,
        stdin=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches this process alone, which stops the services in order
    )
    return ServiceProcesses(spec, process, spec.url(settings))


async def _until_ready(service: ServiceProcesses, stop: asyncio.Event) -> bool:
    """True once the service answers /readyz with 200; False if a stop came first; RuntimeError if its
    processes ended or did not answer in time."""
    deadline = time.monotonic() + READY_WITHIN
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while not stop.is_set():
            if service.process.returncode is not None:
                raise RuntimeError(_ended(service))
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with http.get(f"{service.url}/readyz") as response:
                    if response.status == 200:
                        return True
            if time.monotonic() > deadline:
                where = f"{service.url}/readyz"
                raise RuntimeError(f"{service.spec.name} did not answer at {where} within {READY_WITHIN:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    return False


async def _until_stopped_or_ended(started: list[ServiceProcesses], stop: asyncio.Event) -> None:
    stopped = asyncio.create_task(stop.wait())
    ended = {asyncio.create_task(service.process.wait()): service for service in started}
    try:
        done, _ = await asyncio.wait([stopped, *ended], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stopped, *ended):
            task.cancel()
    for task in done:
        if task in ended:
            raise RuntimeError(_ended(ended[task]))


async def _stop(service: ServiceProcesses, grace: float) -> None:
    """SIGTERM to the supervisor, which drains its workers; killed if it has not ended in time."""
    process = service.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace + STOP_MARGIN)
        except TimeoutError:
            process.kill()  # its workers end with it (they are started with PR_SET_PDEATHSIG)
            await process.wait()


def _ended(service: ServiceProcesses) -> str:
    return f"{service.spec.name}'s processes ended (exit code {service.process.returncode}); their log above says why"


async def _reachable(broker_url: str) -> None:
    """RabbitMQ answers, or an OSError naming it, before any service starts."""
    from skuflow.messaging.amqp import unreachable  # aio-pika, imported only when needed

    reason = await unreachable(broker_url)
    if reason is not None:
        raise OSError(f"cannot reach RabbitMQ at {without_password(broker_url)}: {reason}")
