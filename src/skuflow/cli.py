"""The `skuflow` command. Thin: it reads the settings, calls into the packages and prints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, Protocol, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from skuflow.platform.settings import Settings, SettingsError, load_settings

app = typer.Typer(help="skuflow: inventory, catalog and users talking over HTTP and RabbitMQ.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Performance figures, each beside a baseline measured in the same run.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")
warehouse_app = typer.Typer(
    help="The warehouse's side: report stock numbers over HTTP, or upload a file over FTP.", no_args_is_help=True
)
app.add_typer(warehouse_app, name="warehouse")
dlq_app = typer.Typer(help="Dead letters: list them, and replay them once their cause is fixed.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

console = Console()
err_console = Console(stderr=True)

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


class BenchReport(Protocol):
    def as_dict(self) -> dict[str, object]: ...

    def table(self) -> Table: ...


Errors = tuple[type[Exception], ...]
T = TypeVar("T")


def fail(message: str, code: int = 2) -> NoReturn:
    """End the command with a red message on stderr: exit 2 for a bad argument or setting, 1 for a failure."""
    err_console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


@contextlib.contextmanager
def errors(usage: Errors = (SettingsError,), failure: Errors = (OSError,), prefix: str = "") -> Iterator[None]:
    """The one error path: a known error ends the command with its message (after `prefix`), exit 2 for
    `usage` errors and 1 for `failure` errors, not a trace; anything else is a bug and shows its trace."""
    try:
        yield
    except usage as error:
        fail(str(error), 2)
    except failure as error:
        fail(f"{prefix}{error}", 1)


def _run(main: Coroutine[Any, Any, T], usage: Errors = (SettingsError,), failure: Errors = (OSError,)) -> T:
    """Run a coroutine to its end through the one error path."""
    with errors(usage, failure):
        return asyncio.run(main)


def _settings() -> Settings:
    with errors():
        return load_settings()


def _stored_settings() -> Settings:
    """The settings, their unset secrets read from SKUFLOW_DATA_DIR/secrets.json (never generated here)."""
    from skuflow.platform.secrets import with_secrets

    return with_secrets(_settings(), generate=False)[0]


def _operate(action: Coroutine[Any, Any, T]) -> T:
    """Run a client command: a bad argument (exit 2), a refusal or an unreachable service (exit 1)."""
    from skuflow.service_client import ServiceError

    return _run(action, usage=(ValueError,), failure=(ServiceError, LookupError, OSError))


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at debug level.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def demo(sku: Annotated[str, typer.Option(help="The SKU id the event carries.")] = "SKU-1") -> None:
    """Send one sku_processed event through the broker and watch every queue receive it.

    Uses SKUFLOW_BROKER_URL: the in-process broker by default, RabbitMQ with amqp://...
    """
    from skuflow.demo import RoundTripError, round_trip

    received = _run(round_trip(_settings(), sku, console.print), failure=(RoundTripError,))
    console.print(f"[green]round trip complete:[/] {received} deliveries")


@app.command()
def up() -> None:
    """Run the whole system in this process: every service, the in-process broker and SQLite by default,
    an SMTP sink on 127.0.0.1:2525 that shows the emails (unless SKUFLOW_SMTP_URL is set), and the
    warehouse's FTP server on 127.0.0.1:2121 with the folder /outbox (unless SKUFLOW_WAREHOUSE_FTP_URL is set).

    With SKUFLOW_BROKER_URL=amqp://... the same against RabbitMQ. Ctrl-C stops it cleanly.
    """
    from skuflow.embedded.smtp import ReceivedMail
    from skuflow.platform.logging import configure_logging
    from skuflow.platform.secrets import embedded_ftp_password, secrets_file, with_secrets
    from skuflow.system import run_up, up_table

    settings, generated = with_secrets(_settings(), generate=True)
    ftp_password = embedded_ftp_password(settings, generate=True)
    assert ftp_password is not None
    configure_logging()

    def ready(running: Settings) -> None:
        console.print(up_table(running, embedded_smtp=embedded_smtp, embedded_ftp=embedded_ftp))
        where = secrets_file(running)
        for name, client in (("warehouse_secret", "warehouse"), ("admin_secret", "admin")):
            secret = getattr(running, name).get_secret_value()  # set: with_secrets generated what was missing
            if name in generated:
                console.print(f"client [bold]{client}[/]: secret [bold]{secret}[/] (generated, kept in {where})")
            else:
                console.print(f"client [bold]{client}[/]: secret from SKUFLOW_{name.upper()} or {where}")
        console.print("Ctrl-C stops everything.")

    def show_mail(mail: ReceivedMail) -> None:
        console.print(f"[green]email[/] to {', '.join(mail.recipients)}: [bold]{mail.subject}[/]")

    embedded_smtp = settings.smtp_url is None
    embedded_ftp = settings.warehouse_ftp_url is None
    _run(run_up(settings, ready, show_mail, ftp_password), failure=(OSError, RuntimeError))
    console.print("stopped.")


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="inventory, catalog or users")],
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes under one supervisor (needs PostgreSQL); without it, one plain process.",
        ),
    ] = None,
) -> None:
    """Run one service, against a real broker (SKUFLOW_BROKER_URL=amqp://...).

    It listens on the host and port of its URL setting (SKUFLOW_INVENTORY_URL, SKUFLOW_CATALOG_URL,
    SKUFLOW_USERS_URL). Several instances of one service share its queues as competing consumers.
    With --workers N (1 too), N worker processes share the port under a supervisor that restarts a dead one
    with a growing delay, drains them all on SIGTERM (exit 0) and replaces them one by one on SIGHUP; if
    every worker fails before any has started, it exits 1 (their log says why).
    """
    from skuflow.platform.logging import configure_logging
    from skuflow.system import SERVICES, run_services

    spec = SERVICES.get(service)
    if spec is None:
        fail(f"unknown service {service!r}: choose one of {', '.join(SERVICES)}")
    settings = _stored_settings()
    if settings.broker_url.startswith("memory://"):
        fail(
            "SKUFLOW_BROKER_URL: `skuflow serve` needs a real broker shared between processes, "
            "not memory:// (set amqp://user:password@host:5672/; `skuflow up` runs everything in one process)"
        )
    configure_logging()
    if workers is not None:
        if settings.database_url(service).startswith("sqlite"):
            fail(
                f"--workers {workers} needs PostgreSQL: SQLite allows one process "
                f"(set SKUFLOW_{service.upper()}_DATABASE_URL=postgresql+asyncpg://...)"
            )
        from skuflow.supervisor import Supervisor

        with errors(usage=()):
            code = Supervisor(spec, settings, workers).run()
        raise typer.Exit(code)
    if settings.database_url(service).startswith("sqlite"):
        err_console.print(
            f"[yellow]note:[/] {service} uses SQLite ({settings.database_url(service)}): fine for one process; "
            f"for several, give it PostgreSQL (SKUFLOW_{service.upper()}_DATABASE_URL=postgresql+asyncpg://...)"
        )
    listening = f"{spec.name} listening on {spec.url(settings)}"
    _run(run_services([spec], settings, lambda: console.print(listening)), failure=(OSError, RuntimeError))


@warehouse_app.command("push")
def warehouse_push(
    warehouse: Annotated[str, typer.Option(help="The warehouse id, e.g. WH-1.")],
    sku: Annotated[str, typer.Option(help="The SKU id, e.g. SKU-1.")],
    on_hand: Annotated[int, typer.Option(min=0, help="The absolute number on hand.")],
    as_of: Annotated[datetime | None, typer.Option(help="When the number was true (ISO-8601); default now.")] = None,
) -> None:
    """Report one absolute stock number to inventory over HTTP, as the warehouse client.

    Authenticates as the `warehouse` client with SKUFLOW_WAREHOUSE_SECRET (else the secret `skuflow up`
    kept in SKUFLOW_DATA_DIR/secrets.json), at SKUFLOW_USERS_URL, then reports to SKUFLOW_INVENTORY_URL.
    """
    from skuflow.warehouse import push

    settings = _stored_settings()
    answer = _operate(push(settings, warehouse, sku, on_hand, as_of))
    console.print_json(data=answer)
    if answer.get("stale"):
        err_console.print("note: the number is not newer (as_of) than the one recorded: ignored, counted as stale")


@warehouse_app.command("upload")
def warehouse_upload(
    file: Annotated[Path, typer.Argument(help="A CSV file: warehouse_id,sku,on_hand[,as_of].")],
) -> None:
    """Upload a stock file to the warehouse's FTP server, where inventory's watcher takes it.

    The server is SKUFLOW_WAREHOUSE_FTP_URL, else the one `skuflow up` runs (its password is kept in
    SKUFLOW_DATA_DIR/secrets.json). The file goes up under a temporary name and is then renamed, so the
    watcher never takes half a file.
    """
    from skuflow.platform.ftp import FtpLocation
    from skuflow.warehouse import ftp_location, upload

    settings = _settings()

    async def send() -> tuple[FtpLocation, str]:
        location = ftp_location(settings)
        return location, await upload(location, file)

    location, path = _operate(send())
    console.print(f"uploaded {file} to {location.redacted(path)}")


@app.command("flows")
def flows_command(
    status: Annotated[
        str | None, typer.Option(help="Only flows in this status: running, completed, failed or superseded.")
    ] = None,
    correlation_id: Annotated[
        str | None, typer.Option("--correlation-id", help="The flows one request started (its X-Correlation-ID).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
) -> None:
    """The orchestrated flows inventory tracks (SKUFLOW_MODE=orchestration), as a table.

    Asks SKUFLOW_INVENTORY_URL as the `admin` client (SKUFLOW_ADMIN_SECRET, else the secret `skuflow up`
    kept in SKUFLOW_DATA_DIR/secrets.json).
    """
    from skuflow.operations import FLOW_STATUSES, NO_FLOWS, flows, flows_table

    if status is not None and status not in FLOW_STATUSES:
        fail(f"--status takes running, completed, failed or superseded, got {status!r}")
    if status is not None and correlation_id is not None:
        fail("give --status or --correlation-id, not both")
    settings = _stored_settings()
    found = _operate(flows(settings, status=status, correlation_id=correlation_id, limit=limit))
    if as_json:
        print(json.dumps(found, indent=2))
        return
    console.print(flows_table(found, oldest_first=correlation_id is not None))
    if not found:
        console.print(NO_FLOWS)


@app.command()
def compare(
    skus: Annotated[int, typer.Option(min=2, help="SKUs; half reported over HTTP, half in an FTP snapshot.")] = 100,
    users: Annotated[int, typer.Option(min=1, help="Users signing up.")] = 20,
    wishes: Annotated[int, typer.Option(min=1, help="SKUs each user wishes for.")] = 5,
    concurrency: Annotated[int, typer.Option(min=1, help="HTTP stock reports in flight at once.")] = 10,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds each mode has to converge.")] = 60.0,
    broker_url: Annotated[
        str | None,
        typer.Option(
            help="amqp://... for RabbitMQ: a broker (vhost) of its own, since its queues are emptied first "
            "(default: the in-process broker; never SKUFLOW_BROKER_URL, which may be a running system's)."
        ),
    ] = None,
    postgres_url: Annotated[
        str | None,
        typer.Option(help="A PostgreSQL server to create scratch databases on (default: SQLite in a temp folder)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the figures as a Markdown table.")] = False,
) -> None:
    """Choreography and orchestration side by side: the same workload in each mode, until it converges."""
    from skuflow import compare as comparing
    from skuflow.platform.logging import configure_logging

    broker = broker_url or "memory://"
    if not broker.startswith(("memory://", "amqp://", "amqps://")):
        fail(f"--broker-url must be memory:// or amqp://..., got {broker!r}")
    configure_logging(level=logging.WARNING)
    workload = comparing.Workload(skus, users, wishes, concurrency, timeout)
    bars = comparing.progress_bars(err_console, transient=as_json or markdown)
    with bars as progress, errors(usage=(), failure=(comparing.CompareError,)):
        result = asyncio.run(comparing.run(workload, broker, postgres_url, progress))
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    elif markdown:
        print(comparing.markdown(result))
    else:
        console.print(comparing.table(result))


@dlq_app.command("list")
def dlq_list(
    queue: Annotated[
        str | None, typer.Argument(help="A work queue, e.g. catalog.sku_processed (default: all).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
) -> None:
    """Dead letters per work queue: how many, and each one's message id, type, reason, attempts and age."""
    from skuflow.operations import dead_letters, dead_letters_table

    queues, where = _operate(dead_letters(_stored_settings(), queue))
    if as_json:
        print(json.dumps({"read_from": where, "queues": queues}, indent=2))
        return
    console.print(dead_letters_table(queues, where))


@dlq_app.command("replay")
def dlq_replay(
    queue: Annotated[str, typer.Argument(help="The work queue whose dead letters go back onto it.")],
    message_id: Annotated[str | None, typer.Option("--id", help="Only this message (default: every one).")] = None,
) -> None:
    """Put dead letters back on their work queue, once their cause is fixed; each gets every attempt again."""
    from skuflow.operations import replay

    replayed, where = _operate(replay(_stored_settings(), queue, message_id))
    console.print(
        f"replayed {replayed} dead letter{'s' if replayed != 1 else ''} onto {queue.removesuffix('.dlq')} ({where})"
    )


@app.command("reconcile")
def reconcile_command() -> None:
    """Have catalog and users re-check every SKU's availability against inventory now, repairing drift.

    They also do it on their own every SKUFLOW_RECONCILE_SECONDS, for what they checked longer ago.
    """
    from skuflow.operations import reconcile

    for report in _operate(reconcile(_stored_settings())):
        console.print(
            f"{report['service']}: checked {report['checked']} SKUs, repaired {report['repaired']}, "
            f"{report['unknown_to_inventory']} unknown to inventory"
        )


@bench_app.command("bus")
def bench_bus(
    messages: Annotated[int, typer.Option("--messages", "-n", min=1, help="Messages published per run.")] = 10_000,
    runs: Annotated[int, typer.Option(min=1, help="Runs per side; medians are reported.")] = 3,
    window: Annotated[int, typer.Option(min=1, help="Publisher confirms in flight.")] = 100,
    url: Annotated[str | None, typer.Option(help="RabbitMQ URL (default: SKUFLOW_BROKER_URL if amqp).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """The messaging layer against raw aio-pika: publish and consume rates, and their ratio."""
    from skuflow.bench import bus

    url = _bench_amqp_url(url)
    _bench(lambda say: bus.run(url, messages, runs, window, say), as_json, f"cannot reach RabbitMQ at {url}")


@bench_app.command("outbox")
def bench_outbox(
    messages: Annotated[int, typer.Option("--messages", "-n", min=1, help="Messages per run.")] = 10_000,
    runs: Annotated[int, typer.Option(min=1, help="Runs; medians are reported.")] = 3,
    url: Annotated[str | None, typer.Option(help="RabbitMQ URL (default: SKUFLOW_BROKER_URL if amqp).")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="postgresql+asyncpg://... to measure PostgreSQL (default: a temporary SQLite).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """The outbox relay's drain rate beside publishing the same messages straight through the broker."""
    from skuflow.bench import outbox

    url = _bench_amqp_url(url)
    measure = lambda say: outbox.run(url, database_url, messages, runs, say)  # noqa: E731
    _bench(measure, as_json, "cannot reach RabbitMQ or the database")


@bench_app.command("ftp")
def bench_ftp(
    lines: Annotated[int, typer.Option("--lines", "-n", min=10, help="Lines per file.")] = 1_000_000,
    runs: Annotated[int, typer.Option(min=1, help="Runs; medians are reported.")] = 3,
    databases: Annotated[
        str, typer.Option(help="Comma-separated: sqlite, postgresql (each run on a fresh database).")
    ] = "sqlite,postgresql",
    postgres_url: Annotated[
        str, typer.Option(help="The PostgreSQL server to create a scratch database on (dropped after).")
    ] = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """The FTP feed's import rate (lines/s, first byte downloaded to commit) and peak memory, per database."""
    from skuflow.bench import ftp

    chosen = [name.strip() for name in databases.split(",") if name.strip()]
    unknown = sorted(set(chosen) - {"sqlite", "postgresql"})
    if unknown or not chosen:
        fail(f"--databases takes sqlite and/or postgresql, got {databases!r}")
    measure = lambda say: ftp.run(lines, runs, chosen, postgres_url, say)  # noqa: E731
    _bench(measure, as_json, "cannot reach the FTP or database server")


Report = TypeVar("Report", bound=BenchReport)


def _bench(
    measure: Callable[[Callable[[str], None]], Coroutine[Any, Any, Report]], as_json: bool, unreachable: str
) -> None:
    """Run a benchmark and print its figures, as JSON or its table; its progress on stderr with JSON."""
    say = err_console.print if as_json else console.print
    with errors(usage=(), prefix=f"{unreachable}: "):
        report = asyncio.run(measure(say))
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        console.print(report.table())


def _bench_amqp_url(url: str | None) -> str:
    if url is None:
        configured = os.environ.get("SKUFLOW_BROKER_URL", "")
        url = configured if configured.startswith("amqp") else DEFAULT_AMQP_URL
    if not url.startswith(("amqp://", "amqps://")):
        fail(f"--url must be a RabbitMQ URL (amqp://...), got {url!r}")
    return url
