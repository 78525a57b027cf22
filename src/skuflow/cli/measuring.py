"""`skuflow compare` and `skuflow bench`: figures, each beside what it is compared with."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Protocol, TypeVar

import typer
from rich.console import RenderableType

from skuflow.cli.base import console, err_console, errors, fail

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
SCRATCH_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

# The options of the benchmarks that run the system on scratch stacks (bench e2e, stock, auth).
ScratchBroker = Annotated[
    str | None, typer.Option(help="RabbitMQ (default: SKUFLOW_BROKER_URL if amqp, else the local one).")
]
ScratchBrokerApi = Annotated[
    str | None, typer.Option(help="Its management API, for scratch vhosts (default: http://<host>:15672).")
]
ScratchPostgres = Annotated[
    str, typer.Option(help="The PostgreSQL server to create scratch databases on (dropped after).")
]


class BenchReport(Protocol):
    def as_dict(self) -> dict[str, object]: ...

    def table(self) -> RenderableType: ...


def compare(
    skus: Annotated[int, typer.Option(min=2, help="SKUs; half reported over HTTP, half in an FTP snapshot.")] = 100,
    users: Annotated[int, typer.Option(min=1, help="Users signing up.")] = 20,
    wishes: Annotated[int, typer.Option(min=1, help="SKUs each user wishes for.")] = 5,
    concurrency: Annotated[int, typer.Option(min=1, help="HTTP stock reports in flight at once.")] = 10,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds each mode has to converge.")] = 60.0,
    broker_url: Annotated[
        str | None,
        typer.Option(
            help="amqp://... for RabbitMQ (each mode runs on a scratch vhost of it, made through its management "
            "API on port 15672; default: the in-process broker; never SKUFLOW_BROKER_URL)."
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
    workload = comparing.Workload(skus, users, wishes, concurrency=concurrency, timeout=timeout)
    bars = comparing.progress_bars(err_console, transient=as_json or markdown)
    with bars as progress, errors(usage=(), failure=(comparing.CompareError,)):
        result = asyncio.run(comparing.run(workload, broker, postgres_url, progress))
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    elif markdown:
        print(comparing.markdown(result))
    else:
        console.print(comparing.table(result))


def bench_e2e(
    skus: Annotated[int, typer.Option(min=1, help="SKUs, each changed from 0 to available once per phase.")] = 5_000,
    users: Annotated[int, typer.Option(min=1, help="Users signing up.")] = 500,
    wishes: Annotated[int, typer.Option(min=1, help="SKUs each user wishes for (an email each per phase).")] = 10,
    batch: Annotated[int, typer.Option(min=1, max=1000, help="SKUs per HTTP stock report.")] = 1,
    concurrency: Annotated[int, typer.Option(min=1, help="HTTP stock reports in flight at most.")] = 32,
    rate: Annotated[
        float | None, typer.Option(min=0.01, help="Start this many reports a second (open loop), not back to back.")
    ] = None,
    via: Annotated[str, typer.Option(help="http, ftp, or both: one phase each (both: HTTP first).")] = "both",
    mode: Annotated[str, typer.Option(help="choreography, orchestration, or both.")] = "both",
    embedded: Annotated[
        bool, typer.Option("--embedded", help="The in-process broker and SQLite (default: RabbitMQ and PostgreSQL).")
    ] = False,
    processes: Annotated[
        bool,
        typer.Option("--processes", help="`skuflow up --processes`: each service in its own process (not --embedded)."),
    ] = False,
    system: Annotated[
        str,
        typer.Option(
            help="skuflow; raw (the flow written the obvious way on aiohttp, aio-pika and asyncpg); faststream "
            "(the same with its messaging in FastStream: pip install 'skuflow[bench]'); a comma list of them; "
            "both (skuflow,raw); or all. The baselines run choreography over HTTP only, after skuflow's phases, "
            "and the report gives skuflow / each."
        ),
    ] = "skuflow",
    traced: Annotated[
        bool,
        typer.Option(
            "--traced",
            help="skuflow's processes trace, exporting their spans over OTLP/HTTP to a sink of the bench's "
            "(OTEL_EXPORTER_OTLP_ENDPOINT); without it they trace nothing, whatever OTEL_ variables are set.",
        ),
    ] = False,
    broker_url: ScratchBroker = None,
    rabbitmq_api: ScratchBrokerApi = None,
    postgres_url: ScratchPostgres = SCRATCH_POSTGRES,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds each phase has to converge.")] = 600.0,
    poll: Annotated[float, typer.Option(min=0.01, help="Seconds between two looks at convergence.")] = 0.25,
    as_json: Annotated[bool, typer.Option("--json", help="Print every figure as JSON.")] = False,
) -> None:
    """The whole flow end to end: `skuflow up` in a process of its own, this one the warehouse and the users;
    every SKU changed once per phase, measured until catalog shows it and every due email is accepted."""
    from skuflow.bench import bus, e2e
    from skuflow.platform.logging import configure_logging

    modes = e2e.MODES if mode == "both" else (mode,)
    phases = ("http", "ftp") if via == "both" else (via,)
    if not set(modes) <= set(e2e.MODES):
        fail(f"--mode takes choreography, orchestration or both, got {mode!r}")
    if not set(phases) <= {"http", "ftp"}:
        fail(f"--via takes http, ftp or both, got {via!r}")
    if embedded and processes:
        fail("--processes runs the services on RabbitMQ and PostgreSQL: drop --embedded")
    systems = e2e.systems_named(system)
    if systems is None:
        fail(f"--system takes skuflow, raw, faststream, a comma list of them, both or all, got {system!r}")
    baselines = [flow for flow in systems if flow != "skuflow"]
    if baselines and embedded:
        fail(f"--system {','.join(baselines)} runs on RabbitMQ and PostgreSQL only: drop --embedded")
    if "skuflow" not in systems and (mode == "orchestration" or via == "ftp"):
        fail(f"--system {system} has choreography over HTTP only: drop --mode orchestration / --via ftp")
    if "faststream" in systems and not bus.faststream_installed():
        fail(f"--system faststream needs FastStream, an optional extra: {bus.FASTSTREAM_INSTALL}")
    if embedded:
        choice = e2e.StackChoice("memory://")
    else:
        amqp_url = _bench_amqp_url(broker_url, "--broker-url")
        choice = e2e.StackChoice(amqp_url, postgres_url, rabbitmq_api, processes)
    configure_logging(level=logging.WARNING)
    workload = e2e.Workload(skus, users, wishes, batch, concurrency, rate, timeout, poll)
    with e2e.progress_bars(err_console, transient=as_json) as progress, errors(usage=(), failure=(e2e.BenchError,)):
        report = asyncio.run(e2e.run(choice, workload, progress, modes, phases, systems=systems, traced=traced))
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        console.print(e2e.table(report))


def bench_stock(
    seconds: Annotated[float, typer.Option(min=0.1, help="The measured window of each run, after the warm-up.")] = 10.0,
    requests: Annotated[
        int, typer.Option("--requests", "-n", min=0, help="Reports in the measured window instead of --seconds.")
    ] = 0,
    warmup: Annotated[float, typer.Option(min=0, help="Seconds of the same load before the window.")] = 2.0,
    concurrency: Annotated[int, typer.Option(min=1, help="Reports in flight, over all the generators.")] = 32,
    clients: Annotated[
        int, typer.Option(min=1, max=16, help="Load generator processes, each with its share of --concurrency.")
    ] = 1,
    skus: Annotated[
        int,
        typer.Option(
            min=0, help="SKUs cycled over, each report a new number, at least --concurrency (0: a new SKU each time)."
        ),
    ] = 0,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="`skuflow serve inventory --workers N`, and N raw inventory processes."),
    ] = None,
    runs: Annotated[int, typer.Option(min=1, help="Turns, each skuflow then raw; medians and per-pair ratios.")] = 1,
    embedded: Annotated[
        bool,
        typer.Option("--embedded", help="`skuflow up` on the in-process broker and SQLite, alone (no raw baseline)."),
    ] = False,
    broker_url: ScratchBroker = None,
    rabbitmq_api: ScratchBrokerApi = None,
    postgres_url: ScratchPostgres = SCRATCH_POSTGRES,
    as_json: Annotated[bool, typer.Option("--json", help="Print every figure as JSON.")] = False,
) -> None:
    """`POST /v1/stock` alone, one SKU per report: skuflow's inventory (`skuflow serve inventory`, users beside it
    for the token) and the raw building blocks' inventory, each in processes of its own, loaded from other
    processes; requests/s, answer times, errors, CPU, and skuflow / raw."""
    from skuflow.bench.e2e import BenchError, StackChoice
    from skuflow.bench.stock.figures import StockWorkload
    from skuflow.bench.stock.rendering import table
    from skuflow.bench.stock.turns import run
    from skuflow.platform.logging import configure_logging

    if clients > concurrency:
        fail(
            f"--clients {clients} is more than --concurrency {concurrency}: each generator keeps one in flight at least"
        )
    if 0 < skus < concurrency:
        fail(f"--skus {skus} is fewer than --concurrency {concurrency}: each report in flight has SKUs of its own")
    if 0 < requests < clients:
        fail(f"--requests {requests} is fewer than --clients {clients}")
    if embedded and workers:
        fail("--workers needs PostgreSQL (`skuflow up` runs each service once): drop --embedded")
    if embedded:
        choice = StackChoice("memory://")
    else:
        choice = StackChoice(_bench_amqp_url(broker_url, "--broker-url"), postgres_url, rabbitmq_api)
    configure_logging(level=logging.WARNING)
    workload = StockWorkload(seconds, requests, warmup, concurrency, clients, skus, workers, runs)
    say = err_console.print if as_json else console.print
    with errors(usage=(), failure=(BenchError,)):
        report = asyncio.run(run(choice, workload, say))
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        console.print(table(report))


def bench_bus(
    messages: Annotated[int, typer.Option("--messages", "-n", min=1, help="Messages published per run.")] = 10_000,
    runs: Annotated[int, typer.Option(min=1, help="Runs per side; medians are reported.")] = 3,
    window: Annotated[int, typer.Option(min=1, help="Publisher confirms in flight.")] = 100,
    url: Annotated[str | None, typer.Option(help="RabbitMQ URL (default: SKUFLOW_BROKER_URL if amqp).")] = None,
    against: Annotated[
        str,
        typer.Option(
            help="raw: the layer beside raw aio-pika; faststream: FastStream too (pip install 'skuflow[bench]'); "
            "traced: the layer again, tracing each message, its spans exported over OTLP/HTTP to a sink in a "
            "process of its own. Raw aio-pika is always measured: every ratio pairs sides run by run."
        ),
    ] = "raw",
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """The messaging layer against raw aio-pika (and FastStream, or itself traced): publish and consume rates,
    and their ratios."""
    from skuflow.bench import bus

    if against not in bus.AGAINST:
        fail(f"--against takes raw, faststream or traced, got {against!r}")
    if against == "faststream" and not bus.faststream_installed():
        fail(f"--against faststream needs FastStream, an optional extra: {bus.FASTSTREAM_INSTALL}")
    url = _bench_amqp_url(url)
    measure = lambda say: bus.run(url, messages, runs, window, say, against)  # noqa: E731
    _bench(measure, as_json, f"cannot reach RabbitMQ at {url}")


def bench_auth(
    seconds: Annotated[float, typer.Option(min=0.1, help="Seconds each figure is measured, after the warm-up.")] = 5.0,
    warmup: Annotated[float, typer.Option(min=0, help="Seconds of the same calls before each figure.")] = 1.0,
    runs: Annotated[int, typer.Option(min=1, help="Runs; medians and the median of per-run ratios.")] = 3,
    callers: Annotated[
        list[int] | None, typer.Option("--callers", min=1, max=1000, help="Concurrent callers (repeatable).")
    ] = None,
    embedded: Annotated[
        bool, typer.Option("--embedded", help="`skuflow up` on the in-process broker and SQLite, one process.")
    ] = False,
    broker_url: ScratchBroker = None,
    rabbitmq_api: ScratchBrokerApi = None,
    postgres_url: ScratchPostgres = SCRATCH_POSTGRES,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """What verifying a token (a JWT: users runs with SKUFLOW_TOKEN_FORMAT=jwt) costs over REST, over gRPC,
    in process against users' published keys (`local`) and from the verifier's cache, each beside a baseline
    (a constant answer of the same server stack; inventory's protected endpoint beside an unprotected one):
    calls/s and latency at 1 and 50 callers, against `skuflow serve users` and `serve inventory` on RabbitMQ
    and PostgreSQL (or `skuflow up` with --embedded), each in a process of its own. Then signs/s and
    verifies/s of RS256, ES256 and EdDSA with PyJWT in this process."""
    from skuflow.bench import auth
    from skuflow.bench.e2e import BenchError, StackChoice

    counts = tuple(callers or auth.CALLERS)
    choice = None if embedded else StackChoice(_bench_amqp_url(broker_url, "--broker-url"), postgres_url, rabbitmq_api)
    measure = lambda say: auth.run(seconds, warmup, runs, counts, say, choice)  # noqa: E731
    with errors(usage=(), failure=(BenchError,)):
        _bench(measure, as_json, "the system under test did not start")


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


def bench_mailer(
    emails: Annotated[int, typer.Option("--emails", "-n", min=1, help="Emails due per run.")] = 2_000,
    runs: Annotated[int, typer.Option(min=1, help="Runs per database; medians are reported.")] = 3,
    postgres_url: Annotated[
        str | None,
        typer.Option(
            help="A PostgreSQL server to measure too, on a scratch database (dropped after); default: SQLite only."
        ),
    ] = None,
    tls: Annotated[bool, typer.Option("--tls", help="STARTTLS and AUTH, as a submission server wants.")] = False,
    connections: Annotated[
        int, typer.Option(min=1, max=50, help="SMTP connections at once, as SKUFLOW_SMTP_CONNECTIONS.")
    ] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """The mailer's send rate over several SMTP connections at once, beside one pooled connection and a
    connection per email, per database."""
    from skuflow.bench import mailer

    if tls and shutil.which("openssl") is None:
        fail("--tls needs openssl, to make the server's certificate")
    measure = lambda say: mailer.run(emails, runs, postgres_url, tls, say, connections)  # noqa: E731
    _bench(measure, as_json, "cannot reach the database or the SMTP sink")


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


def _bench_amqp_url(url: str | None, option: str = "--url") -> str:
    if url is None:
        configured = os.environ.get("SKUFLOW_BROKER_URL", "")
        url = configured if configured.startswith("amqp") else DEFAULT_AMQP_URL
    if not url.startswith(("amqp://", "amqps://")):
        fail(f"{option} must be a RabbitMQ URL (amqp://...), got {url!r}")
    return url
