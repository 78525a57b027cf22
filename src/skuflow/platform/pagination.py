"""Keyset pagination for collections: `{"items": [...], "next_cursor": "..." | null}` (CONTRACT section 7).

A cursor is the last key of the page, base64url-encoded: opaque to clients, stable while rows change.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import Query
from fastapi.exceptions import RequestValidationError

from skuflow.platform.identifiers import is_identifier
from skuflow.platform.responses import invalid

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# The `limit` query parameter of every collection (default DEFAULT_LIMIT).
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"items per page, 1-{MAX_LIMIT}")]
# Every key a page ends on fits in far fewer characters: a longer cursor is not one of ours.
MAX_CURSOR = 128
# The `cursor` query parameter of every collection: the previous page's `next_cursor`.
Cursor = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_CURSOR, description="the previous page's next_cursor (opaque)"),
]
_MAX_ROW_ID = 2**63 - 1  # the largest integer key a database column holds (BIGINT)


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The key a cursor holds: an identifier (a SKU, a flow id), as every text key we page on is. Anything
    else is refused here, so that no tampered key reaches the database (where a NUL would be an error)."""
    if cursor is None:
        return None
    key = _decoded(cursor)
    if not is_identifier(key):
        raise _not_a_cursor()
    return key


def decode_number_cursor(cursor: str | None) -> int | None:
    """The row id a cursor holds: ASCII digits only (`str.isdigit` also takes '²'), and within BIGINT
    (`int()` refuses more than 4,300 digits, and the database a value past 2^63 - 1)."""
    if cursor is None:
        return None
    key = _decoded(cursor)
    if not (key.isascii() and key.isdigit() and len(key) <= len(str(_MAX_ROW_ID)) and int(key) <= _MAX_ROW_ID):
        raise _not_a_cursor()
    return int(key)


def _decoded(cursor: str) -> str:
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _not_a_cursor() from None


def _not_a_cursor() -> RequestValidationError:
    return invalid(("query", "cursor"), "not a cursor this service returned")


def page(items: list[dict[str, Any]], limit: int, key: str) -> dict[str, Any]:
    """Given up to `limit + 1` rows, the page and the cursor of the next one (None on the last page)."""
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": encode_cursor(str(items[-1][key])) if more else None}
