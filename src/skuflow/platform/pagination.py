"""Keyset pagination for collections: `{"items": [...], "next_cursor": "..." | null}` (CONTRACT section 7).

A cursor is the last key of the page, base64url-encoded: opaque to clients, stable while rows change.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import Query
from fastapi.exceptions import RequestValidationError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# The `limit` query parameter of every collection (default DEFAULT_LIMIT).
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"items per page, 1-{MAX_LIMIT}")]


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        key = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
        if not key:
            raise ValueError("empty cursor")
        return key
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise RequestValidationError(
            [{"loc": ("query", "cursor"), "msg": "not a cursor this service returned", "type": "value_error"}]
        ) from None


def page(items: list[dict[str, Any]], limit: int, key: str) -> dict[str, Any]:
    """Given up to `limit + 1` rows, the page and the cursor of the next one (None on the last page)."""
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": encode_cursor(str(items[-1][key])) if more else None}
