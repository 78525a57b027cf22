"""Inventory's HTTP API (CONTRACT section 3): stock reports in, availability out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sqlalchemy import case, select

from skuflow.inventory import admission, domain
from skuflow.inventory.db import skus
from skuflow.inventory.fields import AsOf, OnHand
from skuflow.inventory.recording import IdempotencyConflict, Recorder, Report, set_safety_stock
from skuflow.platform.auth import Principal, require_scope
from skuflow.platform.db import utc
from skuflow.platform.identifiers import Identifier
from skuflow.platform.pagination import DEFAULT_LIMIT, MAX_LIMIT, Cursor, Limit, decode_cursor, page
from skuflow.platform.responses import RETRY_AFTER, problem
from skuflow.platform.runtime import ServiceRuntime
from skuflow.platform.web import runtime_of


class StockItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: Identifier
    on_hand: OnHand


class StockReport(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "warehouse_id": "WH-1",
                "as_of": "2026-11-25T08:00:00Z",
                "items": [{"sku": "SKU-1", "on_hand": 12}],
            }
        },
    )
    warehouse_id: Identifier
    as_of: AsOf | None = Field(None, description="When the numbers were true (ISO-8601); default: now")
    items: list[StockItem] = Field(min_length=1, max_length=10_000)


class StockReportAnswer(BaseModel):
    accepted: int
    stale: int
    correlation_id: str


class SafetyStock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    safety_stock: StrictInt = Field(ge=0, le=1_000_000_000)


class Availability(BaseModel):
    sku: Identifier
    on_hand: int
    safety_stock: int
    available_for_sale: int
    available: bool
    revision: int
    updated_at: datetime


class AvailabilityPage(BaseModel):
    items: list[Availability]
    next_cursor: str | None


router = APIRouter(prefix="/v1", tags=["inventory"])
StockWriter = Annotated[Principal, Depends(require_scope("stock:write"))]
# Declared here, this 503 replaces the one every operation with a token declares: it says both.
SATURATED: dict[int | str, dict[str, Any]] = {
    503: {
        **problem(
            "inventory's backlog is at its bound (SKUFLOW_MAX_BACKLOG) and nothing was recorded, or the users "
            "service cannot verify the token now; try again after Retry-After"
        ),
        "headers": RETRY_AFTER,
    }
}


@router.post(
    "/stock",
    status_code=202,
    response_model=StockReportAnswer,
    summary="Report absolute stock numbers",
    responses=SATURATED,
)
async def report_stock(
    report: StockReport,
    request: Request,
    principal: StockWriter,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)] = None,
) -> JSONResponse:
    """All items are valid or nothing is recorded. A number not newer (`as_of`) than the one recorded for
    its warehouse and SKU is ignored and counted as stale. A repeat with the same `Idempotency-Key` answers
    as the first time and changes nothing. While inventory's backlog is at its bound (SKUFLOW_MAX_BACKLOG),
    503 with Retry-After, nothing recorded (a repeat still answers as the first time)."""
    duplicates = domain.duplicate_items((report.warehouse_id, item.sku) for item in report.items)
    if duplicates:
        raise RequestValidationError(
            [
                {"loc": ("body", "items", index, "sku"), "msg": message, "type": "duplicate_item"}
                for index, message in duplicates.items()
            ]
        )
    as_of = report.as_of or datetime.now(UTC)
    levels = [domain.ReportedLevel(report.warehouse_id, item.sku, item.on_hand, as_of) for item in report.items]
    recorded = Report.of(
        levels, principal=principal.sub, idempotency_key=idempotency_key, request=report.model_dump(mode="json")
    )
    saturated = admission.of(request).saturated()
    if saturated is not None:
        replay = await admission.replayed(runtime_of(request), recorded)
        if replay is None:
            raise admission.refused(request, saturated)
        answer = replay
    else:
        try:
            recorder: Recorder = request.app.state.recorder
            answer = await recorder.record(recorded)
        except IdempotencyConflict as error:
            raise HTTPException(422, str(error)) from None
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


@router.put("/skus/{sku}", response_model=Availability, summary="Set a SKU's safety stock", responses=SATURATED)
async def put_sku(sku: Identifier, body: SafetyStock, request: Request, _: StockWriter) -> dict[str, Any]:
    """Creates an unknown SKU. While inventory's backlog is at its bound (SKUFLOW_MAX_BACKLOG), 503 with
    Retry-After, nothing recorded (the safety stock the SKU has already is still answered)."""
    runtime = runtime_of(request)
    saturated = admission.of(request).saturated()
    if saturated is not None:
        view = await _availability(runtime, sku)
        if view is None or view["safety_stock"] != body.safety_stock:
            raise admission.refused(request, saturated)
        return view
    await set_safety_stock(runtime, sku, body.safety_stock)
    view = await _availability(runtime, sku)
    assert view is not None
    return view


@router.get(
    "/skus/{sku}/availability",
    response_model=Availability,
    summary="A SKU's availability for sale",
    responses={404: problem("unknown SKU")},
)
async def get_availability(sku: Identifier, request: Request) -> dict[str, Any]:
    """Public. Reflects every number already recorded, even while recalculation is still in flight."""
    view = await _availability(runtime_of(request), sku)
    if view is None:
        raise HTTPException(404, f"unknown SKU {sku!r}")
    return view


@router.get("/skus", response_model=AvailabilityPage, summary="SKUs, optionally only those low on stock")
async def list_skus(
    request: Request,
    low_stock: Annotated[
        bool | None,
        Query(
            description="Only SKUs whose available_for_sale is at most "
            "SKUFLOW_LOW_STOCK_THRESHOLD (true) or above it (false)"
        ),
    ] = None,
    sku: Annotated[
        list[Identifier] | None,
        Query(
            max_length=MAX_LIMIT,
            description=f"Only these SKUs (repeat the parameter, at most {MAX_LIMIT}); unknown ones are left out. "
            "How catalog and users ask for the availability of many SKUs at once.",
        ),
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    runtime = runtime_of(request)
    after = decode_cursor(cursor)
    query = select(skus).order_by(skus.c.sku).limit(limit + 1)
    if after is not None:
        query = query.where(skus.c.sku > after)
    if sku is not None:
        query = query.where(skus.c.sku.in_(set(sku)))
    if low_stock is not None:
        for_sale = case((skus.c.on_hand > skus.c.safety_stock, skus.c.on_hand - skus.c.safety_stock), else_=0)
        threshold = runtime.settings.low_stock_threshold
        query = query.where(for_sale <= threshold if low_stock else for_sale > threshold)
    async with runtime.db.reading() as session:
        rows = (await session.execute(query)).all()
    return page([_view(row) for row in rows], limit, "sku")


async def _availability(runtime: ServiceRuntime, sku: str) -> dict[str, Any] | None:
    async with runtime.db.reading() as session:
        row = (await session.execute(select(skus).where(skus.c.sku == sku))).first()
    return _view(row) if row is not None else None


def _view(row: Any) -> dict[str, Any]:
    for_sale = domain.available_for_sale(row.on_hand, row.safety_stock)
    return {
        "sku": row.sku,
        "on_hand": row.on_hand,
        "safety_stock": row.safety_stock,
        "available_for_sale": for_sale,
        "available": for_sale > 0,
        "revision": row.revision,
        "updated_at": utc(row.updated_at),
    }
