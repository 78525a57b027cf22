"""The `skuflow` command. Thin: it reads the settings, calls into the packages and prints."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from skuflow.platform.settings import Settings, SettingsError, load_settings

app = typer.Typer(help="skuflow: inventory, catalog and users talking over HTTP and RabbitMQ.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Performance figures, each beside a baseline measured in the same run.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")

console = Console()
err_console = Console(stderr=True)

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


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
        err_console.print(f"[red]error:[/] cannot reach the broker at {settings.broker_url}: {error}")
        raise typer.Exit(1) from None
    console.print(f"[green]round trip complete:[/] {received} deliveries")


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

    if url is None:
        configured = os.environ.get("SKUFLOW_BROKER_URL", "")
        url = configured if configured.startswith("amqp") else DEFAULT_AMQP_URL
    if not url.startswith(("amqp://", "amqps://")):
        err_console.print(f"[red]error:[/] --url must be a RabbitMQ URL (amqp://...), got {url!r}")
        raise typer.Exit(2)
    say = err_console.print if as_json else console.print
    try:
        report = asyncio.run(bus.run(url, messages, runs, window, say))
    except OSError as error:
        err_console.print(f"[red]error:[/] cannot reach RabbitMQ at {url}: {error}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return
    table = Table(title=f"bench bus: {messages:,} messages x {runs} runs, fanout to 3 queues, window {window}")
    table.add_column("median of runs")
    table.add_column("raw aio-pika", justify="right")
    table.add_column("skuflow.messaging", justify="right")
    table.add_column("ratio", justify="right")
    for figure, unit in (("publish", "msg/s"), ("consume", "deliveries/s")):
        table.add_row(
            f"{figure} ({unit})",
            f"{report.median('raw', figure):,.0f}",
            f"{report.median('layer', figure):,.0f}",
            f"{report.ratio(figure):.2f}x",
        )
    console.print(table)
