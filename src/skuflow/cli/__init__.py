"""The `skuflow` command. Thin: it reads the settings, calls into the packages and prints what they render.

Below, every command in the order `skuflow --help` lists them; `base` has the one error path, `running`,
`operating` and `measuring` the commands."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from skuflow.cli import measuring, operating, running

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
keys_app = typer.Typer(help="Users' keys that sign access tokens (SKUFLOW_TOKEN_FORMAT=jwt).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at debug level.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


app.command()(running.demo)
app.command()(running.up)
app.command()(running.serve)
warehouse_app.command("push")(operating.warehouse_push)
warehouse_app.command("upload")(operating.warehouse_upload)
app.command("flows")(operating.flows_command)
app.command()(measuring.compare)
dlq_app.command("list")(operating.dlq_list)
dlq_app.command("replay")(operating.dlq_replay)
app.command("reconcile")(operating.reconcile_command)
keys_app.command("rotate")(operating.keys_rotate)
app.command("asyncapi")(operating.asyncapi_command)
bench_app.command("e2e")(measuring.bench_e2e)
bench_app.command("stock")(measuring.bench_stock)
bench_app.command("bus")(measuring.bench_bus)
bench_app.command("auth")(measuring.bench_auth)
bench_app.command("outbox")(measuring.bench_outbox)
bench_app.command("ftp")(measuring.bench_ftp)
bench_app.command("mailer")(measuring.bench_mailer)
