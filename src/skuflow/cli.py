"""The `skuflow` command. Thin: it reads the settings, calls into the packages and prints."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from skuflow.platform.settings import Settings, SettingsError, load_settings, without_password

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


class JsonReport(Protocol):
    def as_dict(self) -> dict[str, object]: ...


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        err_console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None


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
    from skuflow.demo import ROUND_TRIP_SECONDS, round_trip

    settings = _settings()
    try:
        received = asyncio.run(round_trip(settings, sku, console.print))
    except TimeoutError:
        err_console.print(f"[red]error:[/] the round trip did not complete within {ROUND_TRIP_SECONDS:.0f} s")
        raise typer.Exit(1) from None
    except OSError as error:
        err_console.print(f"[red]error:[/] cannot reach the broker at {without_password(settings.broker_url)}: {error}")
        raise typer.Exit(1) from None
    console.print(f"[green]round trip complete:[/] {received} deliveries")


@app.command()
def up() -> None:
    """Run the whole system in this process: every service, the in-process broker and SQLite by default,
    an SMTP sink on 127.0.0.1:2525 that shows the emails (unless SKUFLOW_SMTP_URL is set), and the
    warehouse's FTP server on 127.0.0.1:2121 with the folder /outbox (unless SKUFLOW_WAREHOUSE_FTP_URL is set).

    With SKUFLOW_BROKER_URL=amqp://... the same against RabbitMQ. Ctrl-C stops it cleanly.
    """
    from skuflow.embedded.smtp import ReceivedMail
    from skuflow.platform.ftp import FtpLocation
    from skuflow.platform.logging import configure_logging
    from skuflow.platform.secrets import embedded_ftp_password, secrets_file, with_secrets
    from skuflow.system import SERVICES, run_up

    settings, generated = with_secrets(_settings(), generate=True)
    ftp_password = embedded_ftp_password(settings, generate=True)
    assert ftp_password is not None
    configure_logging()

    def ready(running: Settings) -> None:
        table = Table(title="skuflow is up", show_header=False)
        for spec in SERVICES.values():
            table.add_row(spec.name, spec.url(running), f"{spec.url(running)}/docs")
        table.add_row("mode", running.mode, "SKUFLOW_MODE: choreography (events) or orchestration (flows)")
        table.add_row("broker", without_password(running.broker_url), "")
        sink_note = "embedded sink: emails are shown here" if embedded_smtp else ""
        table.add_row("smtp", without_password(running.smtp_url or ""), sink_note)
        assert running.warehouse_ftp_url is not None  # run_up starts an FTP server when none is configured
        ftp = FtpLocation.parse(running.warehouse_ftp_url)
        if embedded_ftp:
            table.add_row("ftp", ftp.url(), f"embedded: user {ftp.user}, password {ftp.password}; files in {ftp.path}")
        else:
            table.add_row("ftp", ftp.redacted(), "watched for warehouse files")
        table.add_row("data", str(running.data_dir.resolve()), "")
        console.print(table)
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
    _run(run_up(settings, ready, show_mail, ftp_password))
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
        err_console.print(f"[red]error:[/] unknown service {service!r}: choose one of {', '.join(SERVICES)}")
        raise typer.Exit(2)
    settings = _stored_settings()
    if settings.broker_url.startswith("memory://"):
        err_console.print(
            "[red]error:[/] SKUFLOW_BROKER_URL: `skuflow serve` needs a real broker shared between processes, "
            "not memory:// (set amqp://user:password@host:5672/; `skuflow up` runs everything in one process)"
        )
        raise typer.Exit(2)
    configure_logging()
    if workers is not None:
        if settings.database_url(service).startswith("sqlite"):
            err_console.print(
                f"[red]error:[/] --workers {workers} needs PostgreSQL: SQLite allows one process "
                f"(set SKUFLOW_{service.upper()}_DATABASE_URL=postgresql+asyncpg://...)"
            )
            raise typer.Exit(2)
        from skuflow.supervisor import Supervisor

        try:
            code = Supervisor(spec, settings, workers).run()
        except OSError as error:
            err_console.print(f"[red]error:[/] {error}")
            raise typer.Exit(1) from None
        raise typer.Exit(code)
    if settings.database_url(service).startswith("sqlite"):
        err_console.print(
            f"[yellow]note:[/] {service} uses SQLite ({settings.database_url(service)}): fine for one process; "
            f"for several, give it PostgreSQL (SKUFLOW_{service.upper()}_DATABASE_URL=postgresql+asyncpg://...)"
        )
    _run(run_services([spec], settings, lambda: console.print(f"{spec.name} listening on {spec.url(settings)}")))


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run the system until it stops; a bad setting or a busy port ends it with a message, not a trace."""
    try:
        asyncio.run(main)
    except SettingsError as error:
        err_console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    except (OSError, RuntimeError) as error:
        err_console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None


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
    answer = _operate(lambda: push(settings, warehouse, sku, on_hand, as_of))
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

    location, path = _operate(send)
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
    from skuflow.operations import flows

    if status is not None and status not in ("running", "completed", "failed", "superseded"):
        err_console.print(f"[red]error:[/] --status takes running, completed, failed or superseded, got {status!r}")
        raise typer.Exit(2)
    if status is not None and correlation_id is not None:
        err_console.print("[red]error:[/] give --status or --correlation-id, not both")
        raise typer.Exit(2)
    settings = _stored_settings()
    found = _operate(lambda: flows(settings, status=status, correlation_id=correlation_id, limit=limit))
    if as_json:
        print(json.dumps(found, indent=2))
        return
    order = "oldest first" if correlation_id else "newest first"
    table = Table(title=f"flows ({len(found)}, {order})")
    for column in ("flow", "correlation id", "sku", "rev", "status", "steps (attempts)", "started", "error"):
        table.add_column(column, overflow="fold")  # whole ids, folded onto more lines when narrow
    marks = {"done": "[green]done[/]", "pending": "[yellow]pending[/]", "failed": "[red]failed[/]"}
    for flow in found:
        steps = ", ".join(f"{s['step']} {marks[s['status']]} ({s['attempts']})" for s in flow["steps"])
        table.add_row(
            flow["flow_id"],
            flow["correlation_id"],
            flow["sku"],
            str(flow["revision"]),
            flow["status"],
            steps,
            flow["started_at"][:19].replace("T", " "),
            flow["error"] or "",
        )
    console.print(table)
    if not found:
        console.print(
            "No flows: inventory starts one per SKU a report changes, and only in SKUFLOW_MODE=orchestration "
            "(choreography has none)."
        )


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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from skuflow import compare as comparing
    from skuflow.platform.logging import configure_logging

    broker = broker_url or "memory://"
    if not broker.startswith(("memory://", "amqp://", "amqps://")):
        err_console.print(f"[red]error:[/] --broker-url must be memory:// or amqp://..., got {broker!r}")
        raise typer.Exit(2)
    configure_logging(level=logging.WARNING)
    workload = comparing.Workload(skus, users, wishes, concurrency, timeout)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=as_json or markdown) as bars:
        tasks: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bars.add_task(phase, total=total)
            bars.update(tasks[phase], completed=done, total=total)

        try:
            result = asyncio.run(comparing.run(workload, broker, postgres_url, progress))
        except comparing.NotConverged as error:
            err_console.print(f"[red]error:[/] {error}")
            raise typer.Exit(1) from None
        except OSError as error:
            err_console.print(f"[red]error:[/] cannot reach the broker or the database: {error}")
            raise typer.Exit(1) from None
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
    from skuflow.operations import dead_letters

    settings = _stored_settings()
    queues, where = _operate(lambda: dead_letters(settings, queue))
    if as_json:
        print(json.dumps({"read_from": where, "queues": queues}, indent=2))
        return
    table = Table(title=f"dead letters ({where})")
    for column in ("queue", "count", "message id", "type", "reason", "attempts", "age"):
        table.add_column(column, justify="right" if column in ("count", "attempts", "age") else "left")
    for name, found in queues.items():
        if not found["count"]:
            table.add_row(name, "0", "", "", "", "", "")
        for n, letter in enumerate(found["letters"]):
            age = f"{letter['age_seconds']:.0f} s"
            count = str(found["count"]) if n == 0 else ""
            reason = letter["reason"]
            table.add_row(
                name if n == 0 else "",
                count,
                letter["message_id"],
                letter["type"],
                reason,
                str(letter["attempts"]),
                age,
            )
    console.print(table)


@dlq_app.command("replay")
def dlq_replay(
    queue: Annotated[str, typer.Argument(help="The work queue whose dead letters go back onto it.")],
    message_id: Annotated[str | None, typer.Option("--id", help="Only this message (default: every one).")] = None,
) -> None:
    """Put dead letters back on their work queue, once their cause is fixed; each gets every attempt again."""
    from skuflow.operations import replay

    settings = _stored_settings()
    replayed, where = _operate(lambda: replay(settings, queue, message_id))
    console.print(
        f"replayed {replayed} dead letter{'s' if replayed != 1 else ''} onto {queue.removesuffix('.dlq')} ({where})"
    )


@app.command("reconcile")
def reconcile_command() -> None:
    """Have catalog and users re-check every SKU's availability against inventory now, repairing drift.

    They also do it on their own every SKUFLOW_RECONCILE_SECONDS, for what they checked longer ago.
    """
    from skuflow.operations import reconcile

    settings = _stored_settings()
    for report in _operate(lambda: reconcile(settings)):
        console.print(
            f"{report['service']}: checked {report['checked']} SKUs, repaired {report['repaired']}, "
            f"{report['unknown_to_inventory']} unknown to inventory"
        )


def _stored_settings() -> Settings:
    """The settings, their unset secrets read from SKUFLOW_DATA_DIR/secrets.json (never generated here)."""
    from skuflow.platform.secrets import with_secrets

    return with_secrets(_settings(), generate=False)[0]


Operated = TypeVar("Operated")


def _operate(action: Callable[[], Coroutine[Any, Any, Operated]]) -> Operated:
    """Run a client command; a bad argument (exit 2), a refusal or an unreachable service (exit 1) ends it
    with a message, not a trace."""
    from skuflow.service_client import ServiceError

    try:
        return asyncio.run(action())
    except ValueError as error:
        err_console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    except (ServiceError, LookupError, OSError) as error:
        err_console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None


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
    report = _bench(lambda say: bus.run(url, messages, runs, window, say), as_json, f"cannot reach RabbitMQ at {url}")
    if report is None:
        return
    table = Table(title=f"bench bus: {messages:,} messages x {runs} runs, fanout to 3 queues, window {window}")
    table.add_column("figure (median of runs)")
    table.add_column("raw aio-pika", justify="right")
    table.add_column("skuflow.messaging", justify="right")
    table.add_column("ratio (median of runs)", justify="right")
    for figure, unit in (("publish", "msg/s"), ("consume", "deliveries/s")):
        table.add_row(
            f"{figure} ({unit})",
            f"{report.median('raw', figure):,.0f}",
            f"{report.median('layer', figure):,.0f}",
            f"{report.ratio(figure):.2f}x",
        )
    console.print(table)


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
    report = _bench(
        lambda say: outbox.run(url, database_url, messages, runs, say), as_json, "cannot reach RabbitMQ or the database"
    )
    if report is None:
        return
    table = Table(title=f"bench outbox ({report.database}): {messages:,} messages x {runs} runs, fanout to 3 queues")
    table.add_column("figure (median of runs)")
    table.add_column("rate", justify="right")
    table.add_row("write into the outbox (rows/s, one transaction)", f"{report.median('write'):,.0f}")
    table.add_row("relay drain (msg/s)", f"{report.median('relay'):,.0f}")
    table.add_row("direct publish_many (msg/s)", f"{report.median('direct'):,.0f}")
    table.add_row("relay / direct", f"{report.ratio():.2f}x")
    console.print(table)


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
        err_console.print(f"[red]error:[/] --databases takes sqlite and/or postgresql, got {databases!r}")
        raise typer.Exit(2)
    report = _bench(
        lambda say: ftp.run(lines, runs, chosen, postgres_url, say), as_json, "cannot reach the FTP or database server"
    )
    if report is None:
        return
    title = f"bench ftp: {lines:,} lines ({report.file_mb:.1f} MB) x {runs} runs, first byte to commit"
    table = Table(title=title)
    columns = ("database", "file", "lines/s (median)", "seconds", "peak resident", "growth", f"of {ftp.TARGET:,}/s")
    for column in columns:
        table.add_column(column, justify="left" if column in ("database", "file") else "right")
    for name, summary in report.summaries().items():
        for kind, label in (("create", "every SKU new"), ("update", "every number changed")):
            figures = summary[kind]
            table.add_row(
                name,
                label,
                f"{figures['lines_per_second']:,.0f}",
                f"{figures['seconds']:.2f}",
                f"{figures['peak_memory_mb']:.0f} MB",
                f"{figures['memory_growth_mb']:.0f} MB",
                f"{figures['of_target']:.2f}x",
            )
    table.add_row("(baseline)", "download and check, no database", f"{report.baseline_rate():,.0f}", "", "", "", "")
    console.print(table)


Report = TypeVar("Report", bound=JsonReport)


def _bench(
    measure: Callable[[Callable[[str], None]], Coroutine[Any, Any, Report]], as_json: bool, unreachable: str
) -> Report | None:
    """Run a benchmark, its progress on stderr when the figures go out as JSON; None once they have."""
    say = err_console.print if as_json else console.print
    try:
        report = asyncio.run(measure(say))
    except OSError as error:
        err_console.print(f"[red]error:[/] {unreachable}: {error}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return None
    return report


def _bench_amqp_url(url: str | None) -> str:
    if url is None:
        configured = os.environ.get("SKUFLOW_BROKER_URL", "")
        url = configured if configured.startswith("amqp") else DEFAULT_AMQP_URL
    if not url.startswith(("amqp://", "amqps://")):
        err_console.print(f"[red]error:[/] --url must be a RabbitMQ URL (amqp://...), got {url!r}")
        raise typer.Exit(2)
    return url
