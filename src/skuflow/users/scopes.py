"""The scopes of the users service (CONTRACT section 3): what a user and each client the service creates may
do, written in one canonical order, and the scope a token gets. No I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from skuflow.platform.auth import SCOPES
from skuflow.users.oauth import OAuthError

USER_SCOPE = "wishlist"
# The clients the service creates at start (CONTRACT section 3): the warehouse reports stock, the admin may do all.
CLIENT_SCOPES: Mapping[str, str] = {"warehouse": "stock:write", "admin": " ".join(SCOPES)}


def parse_scope(text: str) -> frozenset[str]:
    return frozenset(text.split())


def format_scope(scopes: Iterable[str]) -> str:
    """Scopes in one canonical order (the contract's), so that equal sets always read the same."""
    order = {scope: index for index, scope in enumerate(SCOPES)}
    return " ".join(sorted(set(scopes), key=lambda scope: (order.get(scope, len(order)), scope)))


def narrow_scope(granted: str, requested: str | None) -> str:
    """The scope a token gets: all the principal has, or the requested part of it (RFC 6749 section 3.3)."""
    if requested is None:
        return format_scope(parse_scope(granted))
    wanted = parse_scope(requested)
    beyond = wanted - parse_scope(granted)
    if beyond:
        raise OAuthError("invalid_scope", f"not granted to this client or user: {format_scope(beyond)}")
    return format_scope(wanted)
