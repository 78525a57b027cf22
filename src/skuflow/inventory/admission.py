"""Whether inventory takes a write now: backpressure above saturation (`platform.backpressure`) as inventory
applies it, with `SKUFLOW_MAX_BACKLOG` as the bound.

What is bounded: the outbox's messages not yet published and, in orchestration, the running flows. The
outbox alone would not do there: the relay hands commands to the broker in milliseconds, so the backlog
moves into the owners' queues and replies, and a running flow is one SKU change still on its way through
all of them, counted from an index as cheaply as the outbox. In choreography the queues behind the outbox
are the broker's to bound (docs/performance.md).

Which writes: `POST /v1/stock` and `PUT /v1/skus/{sku}` (both announce); the FTP feed waits between files
(`feed/watcher.py`). A request that would record nothing is answered as ever, over the bound too: a replay
of a recorded report (its Idempotency-Key with the same request: its stored answer), a `PUT` of the safety
stock the SKU has. The check comes after authentication and validation (a 401 or 422 is the answer that
will not change) and costs nothing but a replay's look-up, made only while the bound is reached.
"""

from __future__ import annotations

from dataclasses import replace

from fastapi import HTTPException, Request, status
from sqlalchemy import select

from skuflow.inventory.db import flows
from skuflow.inventory.recording import Answer, Report, stored_answers
from skuflow.platform.backpressure import Backlog, Backpressure, Saturated
from skuflow.platform.runtime import ServiceRuntime


def backpressure(runtime: ServiceRuntime) -> Backpressure:
    """Inventory's backlogs held to SKUFLOW_MAX_BACKLOG."""
    assert runtime.outbox is not None
    backlogs = [runtime.outbox.backlog()]
    if runtime.settings.mode == "orchestration":
        backlogs.append(running_flows())
    return Backpressure(runtime.db, runtime.settings.max_backlog, backlogs, runtime.metrics)


def running_flows() -> Backlog:
    """Flows still running, and those that ended (completed, failed, superseded) since a moment."""
    return Backlog(
        "running_flows",
        "flows are running",
        select(flows.c.flow_id).where(flows.c.status == "running"),
        lambda since: select(flows.c.flow_id).where(flows.c.finished_at >= since),
    )


def of(request: Request) -> Backpressure:
    """The backpressure of the app the request arrived at."""
    found: Backpressure = request.app.state.backpressure
    return found


async def replayed(runtime: ServiceRuntime, report: Report) -> Answer | None:
    """The stored answer when `report` repeats one already recorded (the same caller, key and request), as
    recording would answer it; None for anything else (a key used for another request is 422 once admitted)."""
    if report.idempotency_key is None:
        return None
    key = (report.principal, report.idempotency_key)
    async with runtime.db.reading() as session:
        stored = (await stored_answers(session, {key})).get(key)
    if stored is None or stored.fingerprint != report.fingerprint:
        return None
    return replace(stored.answer, replayed=True)


def refused(request: Request, saturated: Saturated) -> HTTPException:
    """The 503 of a write refused (and counted) while the backlog is at its bound."""
    route = request.scope["route"].path
    of(request).count_refusal(request.method, route)
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        f"{saturated}; nothing was recorded: retry in {saturated.retry_after} s",
        headers={"Retry-After": str(saturated.retry_after)},
    )
