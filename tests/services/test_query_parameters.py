"""Every query parameter of every service is validated: a tampered one is a 422 naming it, never a 500
(issue 14, defect 8)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from skuflow.platform.pagination import encode_cursor
from tests.services.conftest import System

# Keys a client could forge into a cursor: a digit `int()` refuses, more digits than `int()` takes, a NUL
# (PostgreSQL refuses it in text), keys that are no identifier; and, where the key is a row id, more than
# BIGINT holds, or not a whole number.
FORGED_KEYS = ["²", "9" * 4300, "\x00", "SKU 1", ""]
FORGED_ROW_IDS = [str(2**63), "-1", "1.5", "٣"]


def _names(body: Any, where: str, name: str) -> bool:
    return any(problem["loc"][:2] == [where, name] for problem in body["detail"])


async def _refused(system: System, path: str, name: str, *, where: str = "query", **kwargs: Any) -> None:
    method = kwargs.pop("method", "GET")
    status, body, _ = await system.call(method, path, **kwargs)
    assert status == 422, (path, status, body)
    assert _names(body, where, name), (path, body)


async def test_a_forged_cursor_is_a_422_on_every_collection(system: System):
    user_id, user_token = await system.sign_up("ada@example.com")
    warehouse = await system.client_token()
    collections = [
        ("inventory", "/v1/skus", None, []),
        ("inventory", "/v1/flows", warehouse, []),
        ("inventory", "/v1/flows/some-request", warehouse, []),
        ("catalog", "/v1/products", None, []),
        ("users", f"/v1/users/{user_id}/wishlist", user_token, []),
        ("users", f"/v1/users/{user_id}/notifications", user_token, FORGED_ROW_IDS),
    ]
    for service, path, token, more in collections:
        forged = [encode_cursor(key) for key in [*FORGED_KEYS, *more]]
        for cursor in [*forged, "not base64!", "x" * 10_000]:
            await _refused(system, f"{path}?cursor={quote(cursor)}", "cursor", service=service, token=token)
        for limit in ["0", "501", "1e3", "9" * 4300, "-1", "two"]:
            await _refused(system, f"{path}?limit={limit}", "limit", service=service, token=token)


async def test_the_other_query_parameters_are_checked(system: System):
    warehouse = await system.client_token()
    for value in ["maybe", "", "2"]:
        await _refused(system, f"/v1/skus?low_stock={value}", "low_stock")
        await _refused(system, f"/v1/products?available={value}", "available", service="catalog")
    await _refused(system, "/v1/flows?status=lost", "status", token=warehouse)
    for path, service in (("/v1/skus", "inventory"), ("/v1/products", "catalog")):
        for value in ["", "SKU 1", "%00", "-SKU", "S" * 65]:
            await _refused(system, f"{path}?sku=SKU-1&sku={value}", "sku", service=service)
        await _refused(system, f"{path}?" + "&".join(f"sku=SKU-{n}" for n in range(501)), "sku", service=service)


async def test_admin_query_parameters_are_checked(system: System):
    admin = await system.admin_token()
    for value in ["inf", "-inf", "nan", "1e300", "-1", "soon"]:
        path = f"/v1/admin/reconcile?older_than_seconds={value}"
        await _refused(system, path, "older_than_seconds", method="POST", service="catalog", token=admin)
    status, body, _ = await system.call("GET", "/v1/admin/dead-letters?queue=nowhere", token=admin)
    assert (status, _names(body, "query", "queue")) == (422, True), body
    assert "choose one of" in body["detail"][0]["msg"]
    for message_id in ["", "x" * 256]:
        path = f"/v1/admin/dead-letters/catalog.sku_processed/replay?message_id={message_id}"
        await _refused(system, path, "message_id", method="POST", token=admin)


async def test_a_correlation_id_in_a_path_follows_the_header_rule(system: System):
    warehouse = await system.client_token()
    for correlation_id in ["%00", "a%20b", "x" * 129]:
        await _refused(system, f"/v1/flows/{correlation_id}", "correlation_id", where="path", token=warehouse)
    status, _, _ = await system.call("GET", "/v1/flows/no-such-request", token=warehouse)
    assert status == 404
