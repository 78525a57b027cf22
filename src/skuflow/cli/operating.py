"""The client commands: `warehouse push` and `upload` (the warehouse's side), `flows`, `dlq list` and
`replay`, `reconcile`, `keys rotate` (the operator's side), `asyncapi`; each renders what the module owning
the data gives it."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from skuflow.cli.base import console, err_console, fail, operate, read_settings, stored_settings


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

    settings = stored_settings()
    answer = operate(push(settings, warehouse, sku, on_hand, as_of))
    console.print_json(data=answer)
    if answer.get("stale"):
        err_console.print("note: the number is not newer (as_of) than the one recorded: ignored, counted as stale")


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

    settings = read_settings()

    async def send() -> tuple[FtpLocation, str]:
        location = ftp_location(settings)
        return location, await upload(location, file)

    location, path = operate(send())
    console.print(f"uploaded {file} to {location.redacted(path)}")


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
    settings = stored_settings()
    found = operate(flows(settings, status=status, correlation_id=correlation_id, limit=limit))
    if as_json:
        print(json.dumps(found, indent=2))
        return
    console.print(flows_table(found, oldest_first=correlation_id is not None))
    if not found:
        console.print(NO_FLOWS)


def dlq_list(
    queue: Annotated[
        str | None, typer.Argument(help="A work queue, e.g. catalog.sku_processed (default: all).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
) -> None:
    """Dead letters per work queue: how many, and each one's message id, type, reason, attempts and age."""
    from skuflow.operations import dead_letters, dead_letters_table

    queues, where = operate(dead_letters(stored_settings(), queue))
    if as_json:
        print(json.dumps({"read_from": where, "queues": queues}, indent=2))
        return
    console.print(dead_letters_table(queues, where))


def dlq_replay(
    queue: Annotated[str, typer.Argument(help="The work queue whose dead letters go back onto it.")],
    message_id: Annotated[str | None, typer.Option("--id", help="Only this message (default: every one).")] = None,
) -> None:
    """Put dead letters back on their work queue, once their cause is fixed; each gets every attempt again."""
    from skuflow.operations import replay

    replayed, where = operate(replay(stored_settings(), queue, message_id))
    console.print(
        f"replayed {replayed} dead letter{'s' if replayed != 1 else ''} onto {queue.removesuffix('.dlq')} ({where})"
    )


def reconcile_command() -> None:
    """Have catalog and users re-check every SKU's availability against inventory now, repairing drift.

    They also do it on their own every SKUFLOW_RECONCILE_SECONDS, for what they checked longer ago.
    """
    from skuflow.operations import reconcile

    for report in operate(reconcile(stored_settings())):
        console.print(
            f"{report['service']}: checked {report['checked']} SKUs, repaired {report['repaired']}, "
            f"{report['unknown_to_inventory']} unknown to inventory"
        )


def keys_rotate() -> None:
    """Have users make a new key to sign access tokens with (SKUFLOW_TOKEN_FORMAT=jwt), as the admin client.

    Every users process signs with it within seconds; the keys it replaces stay published at
    /.well-known/jwks.json, so the tokens they signed verify until they expire.
    """
    from skuflow.operations import rotate_signing_key

    kid, retired = operate(rotate_signing_key(stored_settings()))
    if retired:
        console.print(f"signing key {kid} signs from now on; {', '.join(retired)} verify until their tokens expire")
    else:
        console.print(f"signing key {kid} signs from now on (no key was signing before)")


def asyncapi_command(
    format: Annotated[str, typer.Option("--format", help="yaml or json.")] = "yaml",
) -> None:
    """Print the messaging topology as an AsyncAPI 3.0.0 document.

    Exchanges, queues and their bindings as channels and operations, and each message's body and headers,
    generated from the route table (skuflow.messaging.routes); every service serves the same at
    GET /asyncapi.json.
    """
    from skuflow.messaging.asyncapi import document, render

    if format not in ("yaml", "json"):
        fail(f"--format takes yaml or json, got {format!r}")
    typer.echo(render(document(), "json" if format == "json" else "yaml").rstrip("\n"))
