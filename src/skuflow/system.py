"""Running services in this process: one (`skuflow serve`) or the whole system (`skuflow up`).

Each service is its FastAPI app under its own uvicorn server, on the host and port of its URL setting
(`SKUFLOW_INVENTORY_URL`, ...). All servers share one event loop, and with `memory://` one in-process
broker. SIGINT, SIGTERM and SIGHUP (unless ignored, as a supervisor's workers do) stop every server; each
drains its consumers and closes its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import FastAPI
from rich.table import Table

from skuflow.embedded import ftp
from skuflow.embedded.smtp import ReceivedMail, SmtpSink
from skuflow.platform.ftp import FtpLocation
from skuflow.platform.serving import SharedProcessServer, bind, server_for, wait_started
from skuflow.platform.settings import Settings, host_and_port, without_password

log = logging.getLogger("skuflow")


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str  # exposes build_app(settings) -> FastAPI
    also_listens: tuple[str, ...] = ()  # the settings of other addresses it listens on ("host:port")

    def url(self, settings: Settings) -> str:
        url: str = getattr(settings, f"{self.name}_url")
        return url

    def address(self, settings: Settings) -> tuple[str, int]:
        parts = urlsplit(self.url(settings))
        return parts.hostname or "127.0.0.1", parts.port or 80

    def check_other_ports(self, settings: Settings) -> None:
        """Fail now, naming the setting, if an address the service opens itself at start is taken."""
        for name in self.also_listens:
            try:
                bind(*host_and_port(getattr(settings, name))).close()
            except OSError as error:
                raise OSError(f"{error} (set SKUFLOW_{name.upper()} to use another address)") from None

    def build(self, settings: Settings) -> FastAPI:
        build_app: Callable[[Settings], FastAPI] = importlib.import_module(self.module).build_app
        return build_app(settings)


# Start order: users first, as the others verify tokens with it.
SERVICES = {
    "users": ServiceSpec("users", "skuflow.users.service", also_listens=("users_grpc",)),
    "inventory": ServiceSpec("inventory", "skuflow.inventory.service"),
    "catalog": ServiceSpec("catalog", "skuflow.catalog.service"),
}


EMBEDDED_SMTP = ("127.0.0.1", 2525)


def up_table(running: Settings, *, embedded_smtp: bool, embedded_ftp: bool, processes: str = "") -> Table:
    """What `skuflow up` shows once the system is up: each service's URL, where the services run
    (`processes`, when not in this one), the mode, broker, SMTP, FTP, data."""
    table = Table(title="skuflow is up", show_header=False)
    for spec in SERVICES.values():
        table.add_row(spec.name, spec.url(running), f"{spec.url(running)}/docs")
    table.add_row("users gRPC", running.users_grpc, "skuflow.auth.v1.Auth/Verify and gRPC health (SKUFLOW_USERS_GRPC)")
    if processes:
        table.add_row("processes", *processes.split("\n", 1))
    table.add_row("mode", running.mode, "SKUFLOW_MODE: choreography (events) or orchestration (flows)")
    table.add_row("broker", without_password(running.broker_url), "")
    sink_note = "embedded sink: emails are shown here" if embedded_smtp else ""
    table.add_row("smtp", without_password(running.smtp_url or ""), sink_note)
    assert running.warehouse_ftp_url is not None  # run_up starts an FTP server when none is configured
    at = FtpLocation.parse(running.warehouse_ftp_url)
    if embedded_ftp:
        table.add_row("ftp", at.url(), f"embedded: user {at.user}, password {at.password}; files in {at.path}")
    else:
        table.add_row("ftp", at.redacted(), "watched for warehouse files")
    table.add_row("data", str(running.data_dir.resolve()), "")
    return table


async def run_up(
    settings: Settings,
    on_ready: Callable[[Settings], None],
    on_mail: Callable[[ReceivedMail], None],
    ftp_password: str,
) -> None:
    """The whole system in this process: every service, beside the embedded servers (`embedded_servers`)."""
    async with embedded_servers(settings, on_mail, ftp_password) as settings:
        await run_services(list(SERVICES.values()), settings, lambda: on_ready(settings))


@contextlib.asynccontextmanager
async def embedded_servers(
    settings: Settings, on_mail: Callable[[ReceivedMail], None], ftp_password: str
) -> AsyncIterator[Settings]:
    """For the block, an SMTP sink when SKUFLOW_SMTP_URL is not set and an FTP server (the warehouse's) when
    SKUFLOW_WAREHOUSE_FTP_URL is not set, on their fixed addresses; yields the settings pointing at them."""
    ftp_server: ftp.FtpServer | None = None
    if settings.warehouse_ftp_url is None:
        ftp_server = ftp.FtpServer(settings.data_dir.resolve() / "ftp", ftp.USER, ftp_password)
        try:
            ftp_server.start(*ftp.ADDRESS)
        except OSError as error:
            raise OSError(
                f"cannot start the embedded FTP server on {ftp.ADDRESS[0]}:{ftp.ADDRESS[1]}: "
                f"{_reason(error)} (set SKUFLOW_WAREHOUSE_FTP_URL to use another server)"
            ) from None
        settings = settings.model_copy(update={"warehouse_ftp_url": ftp_server.url()})
    sink: SmtpSink | None = None
    try:
        if settings.smtp_url is None:
            sink = SmtpSink(on_mail=on_mail)
            try:
                await sink.start(*EMBEDDED_SMTP)
            except OSError as error:
                raise OSError(
                    f"cannot start the embedded SMTP sink on {EMBEDDED_SMTP[0]}:{EMBEDDED_SMTP[1]}: "
                    f"{_reason(error)} (set SKUFLOW_SMTP_URL to use another server)"
                ) from None
            settings = settings.model_copy(update={"smtp_url": sink.url})
        yield settings
    finally:
        if sink is not None:
            await sink.stop()
        if ftp_server is not None:
            ftp_server.stop()


async def run_services(
    specs: list[ServiceSpec],
    settings: Settings,
    on_ready: Callable[[], None],
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve every service until SIGINT, SIGTERM or SIGHUP; raise if one cannot start (ports checked first).
    `sockets`: already listening ones, one per service (a supervisor's workers share theirs)."""
    with stop_signals() as stop:
        async with serving(specs, settings, sockets) as tasks:
            on_ready()
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()


@contextlib.contextmanager
def stop_signals() -> Iterator[asyncio.Event]:
    """For the block, an event that SIGINT, SIGTERM and SIGHUP set (in the running loop)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # A hangup (the terminal closed) stops the services as SIGTERM does, draining, where the default would
    # end the process at once; a supervisor's workers ignore it (rolling them is the supervisor's business).
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        loop.add_signal_handler(signal.SIGHUP, _hung_up, stop)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)  # a no-op for one it did not add


@contextlib.asynccontextmanager
async def serving(
    specs: list[ServiceSpec], settings: Settings, sockets: list[socket.socket] | None = None
) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Serve the services for the block: started in order, each answering before the next starts; stopped
    in reverse order after it, so that a service still draining can reach those it depends on (users,
    last). Yields the servers' tasks (one that ends has failed); raises a server's failure at the end."""
    inherited = sockets is not None
    if not inherited:  # a supervisor's workers share their ports with their siblings: taken, by design
        for spec in specs:
            spec.check_other_ports(settings)
    sockets = sockets or [bind_service(spec, settings) for spec in specs]
    servers: list[SharedProcessServer] = []
    tasks: list[asyncio.Task[None]] = []
    results: list[BaseException | None] = []
    try:
        for spec, sock in zip(specs, sockets, strict=True):
            app = spec.build(settings)
            app.state.runtime.shares_ports = inherited
            server = server_for(app, settings.forwarded_allow_ips)
            task = asyncio.create_task(server.serve(sockets=[sock]), name=f"serve {spec.name}")
            servers.append(server)
            tasks.append(task)
            await wait_started(server, task)
        yield tasks
    finally:
        for server, task in reversed(list(zip(servers, tasks, strict=True))):
            server.should_exit = True
            results += await asyncio.gather(task, return_exceptions=True)
        for sock in sockets:
            sock.close()
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


def _hung_up(stop: asyncio.Event) -> None:
    log.info("SIGHUP: stopping, draining as on SIGTERM (`skuflow serve --workers N` restarts workers instead)")
    stop.set()


def bind_service(spec: ServiceSpec, settings: Settings) -> socket.socket:
    """A listening socket on the service's address; a busy one fails naming the setting to change."""
    try:
        return bind(*spec.address(settings))
    except OSError as error:
        raise OSError(f"{error} (set SKUFLOW_{spec.name.upper()}_URL to use another address)") from None


def _reason(error: OSError) -> str:
    """An OSError in words: its strerror ("Address already in use"), which some libraries leave unset."""
    return error.strerror or str(error) or type(error).__name__
