"""Every service's admin endpoints (scope `admin`): the dead letters of the broker it is connected to.

With `memory://` the dead letters live inside the running process, so `skuflow dlq` asks these; with
RabbitMQ it reads the queues itself, and these answer the same from any service."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from skuflow.messaging import Broker
from skuflow.messaging.dead_letters import WORK_QUEUES, check_queue, dead_letters
from skuflow.platform.auth import require_scope
from skuflow.platform.responses import invalid, problem

MAX_AGE_SECONDS = 100 * 365 * 24 * 3600
router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_scope("admin"))])


@router.post(
    "/reconcile",
    summary="Re-check availability against inventory now, and repair drift",
    responses={404: problem("this service holds nothing of inventory's to reconcile (inventory itself)")},
)
async def reconcile_now(
    request: Request,
    older_than_seconds: Annotated[
        float,
        # Finite and bounded: infinity, or a span reaching before year 1, cannot be subtracted from now.
        Query(
            ge=0,
            le=MAX_AGE_SECONDS,
            allow_inf_nan=False,
            description=f"re-check what was checked before this many seconds ago, 0-{MAX_AGE_SECONDS} (100 years)",
        ),
    ] = 0,
) -> dict[str, Any]:
    runtime = request.app.state.runtime
    if runtime.reconciliation is None:
        raise HTTPException(404, f"{runtime.name} holds nothing of inventory's to reconcile")
    report: dict[str, Any] = await runtime.reconciliation.run_once(timedelta(seconds=older_than_seconds))
    return {"service": runtime.name, **report}


def _broker(request: Request) -> Broker:
    broker: Broker = request.app.state.runtime.broker  # (not web.runtime_of: web includes this router)
    return broker


def _queue(queue: str) -> str:
    try:
        return check_queue(queue)
    except ValueError as error:
        raise HTTPException(404, str(error)) from None


def _queue_asked(queue: str) -> str:
    """A queue named in the query: an unknown one is invalid input (422 naming the parameter), not a 404."""
    try:
        return check_queue(queue)
    except ValueError as error:
        raise invalid(("query", "queue"), str(error)) from None


@router.get("/dead-letters", summary="Dead letters per work queue: count, and each one's id, reason, attempts, age")
async def list_dead_letters(
    request: Request,
    queue: Annotated[str | None, Query(description="one work queue, e.g. catalog.sku_processed")] = None,
) -> dict[str, Any]:
    queues = (_queue_asked(queue),) if queue is not None else WORK_QUEUES
    return {"queues": await dead_letters(_broker(request), queues)}


@router.post(
    "/dead-letters/{queue}/replay",
    summary="Put dead letters back on their work queue, attempts afresh",
    responses={404: problem("no such work queue, or no dead letter with this message_id")},
)
async def replay_dead_letters(
    queue: str,
    request: Request,
    message_id: Annotated[
        # An AMQP message id is a short string: at most 255 bytes.
        str | None,
        Query(min_length=1, max_length=255, description="only this message (default: every one)"),
    ] = None,
) -> dict[str, Any]:
    name = _queue(queue)
    replayed = await _broker(request).replay(name, message_id)
    if message_id is not None and replayed == 0:
        raise HTTPException(404, f"no dead letter {message_id!r} in {name}.dlq")
    return {"queue": name, "replayed": replayed}
