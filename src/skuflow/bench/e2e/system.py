"""The system under test, in a process of its own: `skuflow up` started as a subprocess on free ports of
127.0.0.1, with a scratch data folder, on the scratch stack; and beside it, in the bench process, the SMTP
sink and the warehouse's FTP server it is pointed at.

The SMTP sink is the bench's (SKUFLOW_SMTP_URL points at it) rather than `skuflow up`'s own: the bench then
learns the moment each email was accepted from the sink itself, with no output to parse, and neither server
takes `skuflow up`'s fixed ports (2525, 2121), which a running system may hold. Their work (a few
milliseconds per email, one file download) is counted as the bench process's CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from skuflow.bench.e2e.figures import BenchError, NotConverged, Samples, all_settled
from skuflow.bench.e2e.stack import SERVICE_NAMES, Stack, StackChoice, scratch_stack
from skuflow.embedded.ftp import FtpServer
from skuflow.embedded.smtp import ReceivedMail, SmtpSink
from skuflow.messaging import SKUFLOW, Broker, BrokerOptions, create_broker, wait_queue
from skuflow.platform.settings import Settings
from skuflow.service_client import ServiceClient, connected, until

PASSWORD = "bench-password"
START_SECONDS = 90.0  # for `skuflow up` to answer (migrations included)
STOP_SECONDS = 30.0  # for it to drain and end on SIGINT, as on Ctrl-C
SETUP_TIMEOUT = 600.0  # seconds for the setup to settle (not measured; `Workload.timeout` bounds a phase)
QUIET_LOOKS = 3  # the same counts in this many looks in a row (`Workload.poll` apart): at rest
# What turns tracing on or off in the system's processes (`skuflow.platform.telemetry`): the bench sets them.
TRACING_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED")
# Counters that move while the system works: at rest when none moves.
MOVING = (
    "skuflow_queue_messages_total",
    "skuflow_published_messages_total",
    "skuflow_outbox_relayed_total",
    "skuflow_emails_sent_total",
)


@dataclass
class Mailbox:
    """The emails the sink accepted: (SKU, when) in order. The sink keeps the newest 10,000 whole emails;
    the bench needs only these two fields of each, and all of them."""

    accepted: list[tuple[str, float]] = field(default_factory=list)

    def record(self, mail: ReceivedMail) -> None:
        # "Item SKU-00042 is available again": the products are named after their SKU by the driver.
        words = mail.subject.split()
        self.accepted.append((words[1] if len(words) > 1 else "", mail.received_at))


@dataclass
class System:
    mode: str
    settings: Settings  # as the bench reaches the system: its URLs and client secrets
    client: ServiceClient
    mailbox: Mailbox
    ftp: FtpServer | None  # always one: typed as the driver's protocol (the raw baseline has none)
    process: asyncio.subprocess.Process
    uses_rabbitmq: bool

    async def scrape(self, services: tuple[str, ...] = SERVICE_NAMES) -> dict[str, Samples]:
        """Each service's `/metrics`, read as (metric, labels) -> value."""
        scraped = {}
        for name in services:
            url = f"{getattr(self.settings, f'{name}_url')}/metrics"
            try:
                async with self.client.http.get(url) as response:
                    text = await response.text()
            except aiohttp.ClientError as error:
                raise BenchError(f"the system under test stopped answering: {name} at {url}: {error}") from None
            scraped[name] = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }
        return scraped

    async def settled(self, every: float, within: float = SETUP_TIMEOUT) -> dict[str, Samples]:
        """The services' metrics once nothing moves: the moving counters the same in QUIET_LOOKS looks in a
        row, every delivery settled, no flow running and, on RabbitMQ, every queue empty (their retry queues
        too). The in-process broker lives in the system's process, so there the counters alone tell."""
        looks: list[dict[str, Samples]] = []

        async def at_rest(broker: Broker | None) -> bool:
            looks[:] = [*looks[-(QUIET_LOOKS - 1) :], await self.scrape()]
            moving = [_moving(look) for look in looks]
            quiet = len(looks) == QUIET_LOOKS and all(counts == moving[0] for counts in moving)
            if not (quiet and all_settled(_deliveries(looks[-1])) and await self.flows_finished()):
                return False
            return broker is None or all([await broker.depth(name) == 0 for name in self._queues()])

        async with contextlib.AsyncExitStack() as stack:
            broker = None
            if self.uses_rabbitmq:
                broker = await stack.enter_async_context(
                    create_broker(self.settings.broker_url, "bench-observer", BrokerOptions())
                )
            try:
                await until(lambda: at_rest(broker), "rest", within, every=every, error=NotConverged)
            except NotConverged:
                raise NotConverged(f"the system did not come to rest within {within:g} s") from None
        return looks[-1]

    async def catalog_acked(self) -> float:
        """Catalog's deliveries acked so far (for the progress bar)."""
        samples = (await self.scrape(("catalog",)))["catalog"]
        return sum(
            value
            for (name, labels), value in samples.items()
            if name == "skuflow_queue_messages_total" and dict(labels).get("outcome") == "acked"
        )

    async def flows_finished(self) -> bool:
        """No flow is running (always so in choreography, which has none)."""
        running = await self.client.call("GET", "inventory", "/v1/flows?status=running&limit=1", as_client="warehouse")
        return not running["items"]

    def _queues(self) -> list[str]:
        return [
            name
            for queue in SKUFLOW.queues
            for name in (queue.name, *(wait_queue(queue.name, delay) for delay in self.settings.retry_delays))
        ]


def _moving(scraped: dict[str, Samples]) -> dict[Any, float]:
    return {
        (service, name, labels): value
        for service, samples in scraped.items()
        for (name, labels), value in samples.items()
        if name in MOVING
    }


def _deliveries(scraped: dict[str, Samples]) -> dict[Any, float]:
    return {
        (service, labels): value
        for service, samples in scraped.items()
        for (name, labels), value in samples.items()
        if name == "skuflow_queue_messages_total"
    }


@contextlib.asynccontextmanager
async def running(
    mode: str,
    scratch: Path,
    stack: Stack,
    processes: bool = False,
    overrides: Mapping[str, Any] | None = None,
    environment: Mapping[str, str | None] | None = None,
) -> AsyncIterator[System]:
    """`skuflow up` (`--processes`: one process per service) in `mode` on `stack`, with the bench's SMTP sink
    and FTP server; stopped (SIGINT, as Ctrl-C) after the block, killed if it has not ended within STOP_SECONDS.
    `overrides`: settings of the system's besides the bench's own (e.g. `{"token_format": "jwt"}`);
    `environment`: other variables of its processes (None: not passed on; `tracing_environment`).

    One process per service, not `--instances N`: each process keeps its own /metrics counters, and the bench
    reads one service's from one answer; several instances would each answer for themselves alone."""
    async with mail_sink() as (mailbox, sink):
        ftp = FtpServer(scratch / "ftp", "warehouse", uuid.uuid4().hex)
        ftp.start()
        try:
            started = _started(mode, scratch, stack, processes, mailbox, sink, ftp, overrides or {}, environment or {})
            async with started as system:
                yield system
        finally:
            ftp.stop()


@contextlib.asynccontextmanager
async def mail_sink() -> AsyncIterator[tuple[Mailbox, SmtpSink]]:
    """The bench's SMTP sink, recording each email's SKU and acceptance time in the mailbox."""
    mailbox = Mailbox()
    sink = SmtpSink(on_mail=mailbox.record)
    await sink.start()
    try:
        yield mailbox, sink
    finally:
        await sink.stop()


@contextlib.asynccontextmanager
async def _started(
    mode: str,
    scratch: Path,
    stack: Stack,
    processes: bool,
    mailbox: Mailbox,
    sink: SmtpSink,
    ftp: FtpServer,
    overrides: Mapping[str, Any],
    environment: Mapping[str, str | None],
) -> AsyncIterator[System]:
    urls = {name: f"http://127.0.0.1:{free_port()}" for name in SERVICE_NAMES}
    values: dict[str, Any] = {
        "mode": mode,
        "broker_url": stack.broker_url,
        "data_dir": scratch / "data",
        "smtp_url": sink.url,
        "warehouse_ftp_url": ftp.url("/outbox/snapshot.csv"),
        "warehouse_ftp_poll_seconds": 0.2,
        "warehouse_secret": SecretStr(PASSWORD),
        "admin_secret": SecretStr(PASSWORD),
        "token_attempts_per_minute": 1_000_000,
        "sign_ups_per_minute": 1_000_000,
        **{f"{name}_url": url for name, url in urls.items()},
        "users_grpc": f"127.0.0.1:{free_port()}",
        **{f"{name}_database_url": url for name, url in stack.database_urls.items()},
        **overrides,
    }
    settings = Settings(**values)
    up = ["up", *(["--processes"] if processes else [])]
    command = skuflow_command(up, values, scratch, "skuflow-up.log", environment)
    async with command as started, connected(settings, seconds=60, hint="") as client:
        ready = [f"{url}/readyz" for url in urls.values()]
        await until_answering([started], client.http, ready, "`skuflow up`")
        yield System(mode, settings, client, mailbox, ftp, started[0], stack.broker_url.startswith("amqp"))


@contextlib.asynccontextmanager
async def skuflow_command(
    args: list[str],
    values: dict[str, Any],
    scratch: Path,
    log_name: str,
    environment: Mapping[str, str | None] | None = None,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    """`skuflow ARGS` in a process of its own, with the settings `values` (and the caller's other SKUFLOW_
    variables) and `environment` (a variable None: not passed on), its output in the log `scratch/log_name`;
    stopped after the block (SIGINT, as Ctrl-C)."""
    log_path = scratch / log_name
    variables = {**os.environ, **_environment(values), **(environment or {})}
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "skuflow", *args),
            cwd=scratch,  # no skuflow config file of the caller's folder applies
            env={name: value for name, value in variables.items() if value is not None},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        yield process, log_path
    finally:
        await stop(process)


def tracing_environment(endpoint: str | None) -> dict[str, str | None]:
    """Tracing as the bench decides, whatever the caller's variables say: every span exported over OTLP/HTTP to
    `endpoint`, or (None) off. The other OTEL_ variables (sampler, batch processor) pass through."""
    chosen: dict[str, str | None] = dict.fromkeys(TRACING_VARIABLES)
    if endpoint is not None:
        chosen["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    return chosen


def _environment(values: dict[str, Any]) -> dict[str, str]:
    """The settings as `skuflow up` reads them (SKUFLOW_...); other SKUFLOW_ variables of the caller pass
    through, so that a setting's effect can be measured."""
    shown = {
        key: value.get_secret_value() if isinstance(value, SecretStr) else str(value) for key, value in values.items()
    }
    return {f"SKUFLOW_{key.upper()}": value for key, value in shown.items()}


def free_port() -> int:
    """A port free now; `skuflow up` binds it a moment later (a clash would fail its start, naming the port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def until_answering(
    processes: list[tuple[asyncio.subprocess.Process, Path]], http: aiohttp.ClientSession, urls: list[str], what: str
) -> None:
    """Until each of `urls` answers 200; `BenchError` if a process ends first (with its log's tail) or
    START_SECONDS pass."""
    deadline = time.monotonic() + START_SECONDS
    for url in urls:
        while True:
            for process, log_path in processes:
                if process.returncode is not None:
                    raise BenchError(f"{what} ended ({process.returncode}) before it answered:\n{_tail(log_path)}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        break
            if time.monotonic() > deadline:
                raise BenchError(f"{what} did not answer at {url} within {START_SECONDS:g} s (log: {processes[0][1]})")
            await asyncio.sleep(0.1)


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-2000:]


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), STOP_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()


@dataclass(frozen=True)
class UsersAndInventory:
    settings: Settings  # inventory's: the two URLs, users' gRPC address, the client secrets
    client: ServiceClient
    users: asyncio.subprocess.Process
    inventory: asyncio.subprocess.Process
    stack: Stack  # inventory's


@contextlib.asynccontextmanager
async def users_and_inventory(
    scratch: Path, choice: StackChoice, workers: int | None = None, overrides: Mapping[str, Any] | None = None
) -> AsyncIterator[UsersAndInventory]:
    """`skuflow serve users` and `skuflow serve inventory` (`--workers N`), each on a scratch stack of its own
    (users takes none of inventory's events), answering; stopped after the block. `overrides`: settings of
    both processes besides the bench's own (e.g. `{"token_format": "jwt"}`)."""
    urls = {name: f"http://127.0.0.1:{free_port()}" for name in ("users", "inventory")}
    users_grpc = f"127.0.0.1:{free_port()}"

    def values(stack: Stack) -> dict[str, Any]:
        return {
            "broker_url": stack.broker_url,
            "data_dir": scratch / "data",
            "warehouse_secret": SecretStr(PASSWORD),
            "admin_secret": SecretStr(PASSWORD),  # users will not start without it
            "users_grpc": users_grpc,
            **{f"{name}_url": url for name, url in urls.items()},
            **{f"{name}_database_url": url for name, url in stack.database_urls.items()},
            **(overrides or {}),
        }

    many = ["--workers", str(workers), "--end-with-parent"] if workers else []
    async with scratch_stack(choice, ("users",)) as users_stack, scratch_stack(choice, ("inventory",)) as stack:
        serve_users = skuflow_command(["serve", "users"], values(users_stack), scratch, "users.log")
        serve_inventory = skuflow_command(["serve", "inventory", *many], values(stack), scratch, "inventory.log")
        settings = Settings(**values(stack))
        async with serve_users as users, serve_inventory as inventory, connected(settings, 60, "") as client:
            ready = [f"{url}/readyz" for url in urls.values()]
            await until_answering([users, inventory], client.http, ready, "`skuflow serve`")
            yield UsersAndInventory(settings, client, users[0], inventory[0], stack)
