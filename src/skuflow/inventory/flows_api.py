"""The orchestrated flows, as inventory tracks them (CONTRACT section 7): `GET /v1/flows...`, scope stock:write."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel
from sqlalchemy import Select, select

from skuflow.inventory.db import flow_steps, flows
from skuflow.inventory.orchestration import STEPS
from skuflow.platform.auth import require_scope
from skuflow.platform.db import utc
from skuflow.platform.identifiers import Identifier
from skuflow.platform.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, page
from skuflow.platform.responses import problem
from skuflow.platform.runtime import ServiceRuntime
from skuflow.platform.web import ID_PATTERN, ID_RULE, runtime_of

FlowStatus = Literal["running", "completed", "failed", "superseded"]
CorrelationId = Annotated[str, Path(pattern=ID_PATTERN, description=f"The request's X-Correlation-ID: {ID_RULE}")]


class StepView(BaseModel):
    step: str
    status: Literal["pending", "done", "failed"]
    attempts: int
    sent_at: datetime | None
    finished_at: datetime | None
    error: str | None


class FlowView(BaseModel):
    flow_id: str
    correlation_id: str
    sku: Identifier
    revision: int
    status: FlowStatus
    available_for_sale: int | None
    error: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    steps: list[StepView]


class FlowPage(BaseModel):
    items: list[FlowView]
    next_cursor: str | None


router = APIRouter(prefix="/v1", tags=["flows"], dependencies=[Depends(require_scope("stock:write"))])


@router.get(
    "/flows/{correlation_id}",
    response_model=FlowPage,
    summary="The flows a request started, one per SKU",
    responses={404: problem("no flow has this correlation id")},
)
async def flows_of_request(
    correlation_id: CorrelationId, request: Request, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> dict[str, Any]:
    """Oldest first; a big file's import starts one flow per changed SKU, hence the pages."""
    query = select(flows).where(flows.c.correlation_id == correlation_id).order_by(flows.c.flow_id).limit(limit + 1)
    after = decode_cursor(cursor)
    if after is not None:
        query = query.where(flows.c.flow_id > after)
    items = await _views(runtime_of(request), query)
    if not items and after is None:
        raise HTTPException(404, f"no flow has the correlation id {correlation_id!r}")
    return page(items, limit, "flow_id")


@router.get("/flows", response_model=FlowPage, summary="Flows, newest first, optionally by status")
async def list_flows(
    request: Request,
    status: FlowStatus | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    query = select(flows).order_by(flows.c.flow_id.desc()).limit(limit + 1)
    if status is not None:
        query = query.where(flows.c.status == status)
    after = decode_cursor(cursor)
    if after is not None:
        query = query.where(flows.c.flow_id < after)
    return page(await _views(runtime_of(request), query), limit, "flow_id")


async def _views(runtime: ServiceRuntime, query: Select[Any]) -> list[dict[str, Any]]:
    async with runtime.db.reading() as session:
        rows = (await session.execute(query)).all()
        ids = [row.flow_id for row in rows]
        steps: dict[str, list[Any]] = defaultdict(list)
        if ids:
            for step in await session.execute(select(flow_steps).where(flow_steps.c.flow_id.in_(ids))):
                steps[step.flow_id].append(step)
    return [_view(row, sorted(steps[row.flow_id], key=lambda step: STEPS.index(step.step))) for row in rows]


def _view(flow: Any, steps: list[Any]) -> dict[str, Any]:
    def moment(value: datetime | None) -> datetime | None:
        return utc(value) if value is not None else None

    return {
        "flow_id": flow.flow_id,
        "correlation_id": flow.correlation_id,
        "sku": flow.sku,
        "revision": flow.revision,
        "status": flow.status,
        "available_for_sale": flow.available_for_sale,
        "error": flow.error,
        "started_at": utc(flow.started_at),
        "updated_at": utc(flow.updated_at),
        "finished_at": moment(flow.finished_at),
        "steps": [
            {
                "step": step.step,
                "status": step.status,
                "attempts": step.attempts,
                "sent_at": moment(step.sent_at),
                "finished_at": moment(step.finished_at),
                "error": step.error,
            }
            for step in steps
        ],
    }
