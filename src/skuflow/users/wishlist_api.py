"""Wishlists and notifications over HTTP: the user's own token only; the admin client may read them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from skuflow.platform.auth import Principal, authenticated
from skuflow.platform.db import utc
from skuflow.platform.identifiers import Identifier
from skuflow.platform.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, decode_number_cursor, page
from skuflow.platform.responses import invalid, problem
from skuflow.platform.web import runtime_of
from skuflow.users import wishlists
from skuflow.users.db import notifications, users

UserId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The user's id")]
Caller = Annotated[Principal, Depends(authenticated)]


class WishlistItem(BaseModel):
    sku: Identifier
    available: bool
    added_at: datetime


class WishlistPage(BaseModel):
    items: list[WishlistItem]
    next_cursor: str | None


class Notification(BaseModel):
    sku: Identifier
    revision: int
    status: Literal["pending", "sent", "failed"] = Field(
        description="pending: not sent yet (retried while the SMTP server is away or answers 4xx); sent; "
        "failed: refused for good (SMTP 5xx, or it could not be built) three times"
    )
    subject: str | None = Field(description="once sent")
    sent_at: datetime | None = Field(description="once sent")


class NotificationPage(BaseModel):
    items: list[Notification]
    next_cursor: str | None


def _own(caller: Principal, user_id: str) -> None:
    if caller.sub != user_id or not caller.has("wishlist"):
        raise HTTPException(403, "only the user's own token (scope wishlist) may change this wishlist")


async def _readable(request: Request, caller: Principal, user_id: str) -> None:
    """The user themself, or the admin client; 404 for an admin asking about a user that does not exist."""
    if caller.sub == user_id and caller.has("wishlist"):
        return
    if not caller.has("admin"):
        raise HTTPException(403, "only the user's own token, or the admin client, may read this")
    async with runtime_of(request).db.reading() as session:
        if await session.scalar(select(users.c.id).where(users.c.id == user_id)) is None:
            raise HTTPException(404, f"unknown user {user_id!r}")


_UNKNOWN_USER: dict[int | str, dict[str, Any]] = {
    404: problem("the admin client asked about a user that does not exist")
}


def wishlist_router() -> APIRouter:
    router = APIRouter(prefix="/v1/users/{user_id}", tags=["wishlists"])

    @router.get("/wishlist", response_model=WishlistPage, summary="A user's wishlist", responses=_UNKNOWN_USER)
    async def get_wishlist(
        user_id: UserId,
        request: Request,
        caller: Caller,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        await _readable(request, caller, user_id)
        items = await wishlists.get_items(runtime_of(request), user_id, after=decode_cursor(cursor), limit=limit + 1)
        return page(items, limit, "sku")

    @router.put(
        "/wishlist/{sku}",
        response_model=WishlistItem,
        summary="Put a SKU on the wishlist",
        responses={
            201: {"description": "added"},
            200: {"description": "already there"},
            422: problem("a bad SKU, or the wishlist is full (SKUFLOW_WISHLIST_MAX_ITEMS)"),
        },
    )
    async def put_item(user_id: UserId, sku: Identifier, request: Request, response: Response, caller: Caller) -> Any:
        _own(caller, user_id)
        try:
            item, created = await wishlists.add_item(runtime_of(request), user_id, sku)
        except wishlists.WishlistFull as full:
            raise invalid(("path", "sku"), str(full), "wishlist_full", input=sku) from None
        response.status_code = 201 if created else 200
        return item

    @router.delete(
        "/wishlist/{sku}",
        status_code=204,
        summary="Take a SKU off the wishlist",
        responses={404: problem("the SKU is not on this wishlist")},
    )
    async def delete_item(user_id: UserId, sku: Identifier, request: Request, caller: Caller) -> Response:
        _own(caller, user_id)
        if not await wishlists.remove_item(runtime_of(request), user_id, sku):
            raise HTTPException(404, f"{sku!r} is not on this wishlist")
        return Response(status_code=204)

    @router.get(
        "/notifications",
        response_model=NotificationPage,
        summary="The emails due to a user: pending, sent or failed",
        responses=_UNKNOWN_USER,
    )
    async def get_notifications(
        user_id: UserId,
        request: Request,
        caller: Caller,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        await _readable(request, caller, user_id)
        after = decode_number_cursor(cursor)
        query = (
            select(notifications)
            .where(notifications.c.user_id == user_id)
            .order_by(notifications.c.id)
            .limit(limit + 1)
        )
        if after is not None:
            query = query.where(notifications.c.id > after)
        async with runtime_of(request).db.reading() as session:
            rows = (await session.execute(query)).all()
        items = [
            {
                "id": row.id,
                "sku": row.sku,
                "revision": row.revision,
                "status": row.status,
                "subject": row.subject,
                "sent_at": utc(row.sent_at) if row.sent_at is not None else None,
            }
            for row in rows
        ]
        result = page(items, limit, "id")
        for item in result["items"]:
            item.pop("id")
        return result

    return router
