"""Inventory end to end: real HTTP, real users service for tokens, on both stacks (CONTRACT sections 3, 7)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from skuflow.inventory.db import skus
from tests.services.conftest import System
from tests.support.waiting import wait_until

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def report(warehouse: str = "WH-1", as_of: datetime | None = T0, **items: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "warehouse_id": warehouse,
        "items": [{"sku": s.replace("_", "-"), "on_hand": n} for s, n in items.items()],
    }
    if as_of is not None:
        body["as_of"] = as_of.isoformat()
    return body


@pytest.fixture
async def warehouse(system: System) -> str:
    return await system.client_token()


async def post_stock(system: System, token: str, body: Any, **headers: str) -> tuple[int, Any]:
    status, answer, _ = await system.call("POST", "/v1/stock", token=token, json=body, headers=headers)
    return status, answer


async def availability(system: System, sku: str) -> dict[str, Any]:
    status, body, _ = await system.call("GET", f"/v1/skus/{sku}/availability")
    assert status == 200, body
    return body


async def test_a_report_is_accepted_and_read_back_at_once(system: System, warehouse: str):
    status, answer = await post_stock(system, warehouse, report(SKU_1=12), **{"X-Correlation-ID": "corr-1"})

    assert (status, answer) == (202, {"accepted": 1, "stale": 0, "correlation_id": "corr-1"})
    view = await availability(system, "SKU-1")  # no waiting: read your writes
    assert view | {"updated_at": None} == {
        "sku": "SKU-1",
        "on_hand": 12,
        "safety_stock": 0,
        "available_for_sale": 12,
        "available": True,
        "revision": 1,
        "updated_at": None,
    }


async def test_on_hand_sums_the_warehouses_and_safety_stock_holds_some_back(system: System, warehouse: str):
    await post_stock(system, warehouse, report("WH-1", SKU_1=3))
    await post_stock(system, warehouse, report("WH-2", SKU_1=4))
    status, view, _ = await system.call("PUT", "/v1/skus/SKU-1", token=warehouse, json={"safety_stock": 5})

    assert status == 200
    assert (view["on_hand"], view["safety_stock"], view["available_for_sale"], view["available"]) == (7, 5, 2, True)
    assert view["revision"] == 3
    _, view, _ = await system.call("PUT", "/v1/skus/SKU-1", token=warehouse, json={"safety_stock": 9})
    assert (view["available_for_sale"], view["available"], view["revision"]) == (0, False, 4)
    _, view, _ = await system.call("PUT", "/v1/skus/SKU-1", token=warehouse, json={"safety_stock": 9})
    assert view["revision"] == 4, "the same safety stock again changes nothing"
    assert len(await system.published()) == 4  # created, WH-2's number, two safety stock changes


async def test_older_and_equal_as_of_are_stale_and_a_repeat_only_moves_as_of(system: System, warehouse: str):
    await post_stock(system, warehouse, report(as_of=T0, SKU_1=10, SKU_2=5))

    _, answer = await post_stock(system, warehouse, report(as_of=T0 - timedelta(minutes=1), SKU_1=1, SKU_2=1))
    assert (answer["accepted"], answer["stale"]) == (0, 2)
    _, answer = await post_stock(system, warehouse, report(as_of=T0, SKU_1=2))
    assert (answer["accepted"], answer["stale"]) == (0, 1), "as old as the recorded number is stale too"
    _, answer = await post_stock(system, warehouse, report(as_of=T0 + timedelta(hours=1), SKU_1=10, SKU_2=6))
    assert (answer["accepted"], answer["stale"]) == (2, 0), "a repeated number is accepted"
    _, answer = await post_stock(system, warehouse, report(as_of=T0 + timedelta(minutes=30), SKU_1=99))
    assert answer["stale"] == 1, "the repeat moved as_of forward"

    assert (await availability(system, "SKU-1"))["revision"] == 1
    assert (await availability(system, "SKU-2"))["on_hand"] == 6
    published = [envelope.json()["sku"] for envelope in await system.published()]
    assert sorted(published) == ["SKU-1", "SKU-2", "SKU-2"], "stale items and repeats publish nothing"


async def test_one_event_per_changed_sku_carries_the_full_envelope(system: System, warehouse: str):
    ids = {"X-Correlation-ID": "flow-7", "X-Request-ID": "req-7"}
    await post_stock(system, warehouse, report(SKU_1=1, SKU_2=2, SKU_3=3), **ids)

    events = await system.published()
    assert sorted(event.json()["sku"] for event in events) == ["SKU-1", "SKU-2", "SKU-3"]
    for event in events:
        assert (event.type, event.app_id) == ("sku_processed", "inventory")
        assert (event.correlation_id, event.causation_id) == ("flow-7", "req-7")
        assert abs(event.timestamp - datetime.now(UTC)) < timedelta(minutes=1)
        assert event.json() == {"sku": event.json()["sku"]}, "the event holds only the SKU id"
    assert len({event.message_id for event in events}) == 3


async def test_every_response_echoes_the_ids_it_was_given_or_made(system: System):
    _, _, headers = await system.call("GET", "/healthz", headers={"X-Correlation-ID": "abc", "X-Request-ID": "r1"})
    assert (headers["X-Correlation-ID"], headers["X-Request-ID"]) == ("abc", "r1")
    _, _, headers = await system.call("GET", "/healthz")
    assert len(headers["X-Correlation-ID"]) == 32
    status, body, _ = await system.call("GET", "/healthz", headers={"X-Correlation-ID": "no spaces allowed"})
    assert status == 422
    assert "X-Correlation-ID" in body["detail"]


BAD_REPORTS = {
    "negative on_hand": (
        {"warehouse_id": "WH-1", "items": [{"sku": "OK-1", "on_hand": 1}, {"sku": "SKU-9", "on_hand": -1}]},
        ["body", "items", 1, "on_hand"],
    ),
    "on_hand as text": (
        {"warehouse_id": "WH-1", "items": [{"sku": "OK-1", "on_hand": 1}, {"sku": "SKU-9", "on_hand": "3"}]},
        ["body", "items", 1, "on_hand"],
    ),
    "missing sku": (
        {"warehouse_id": "WH-1", "items": [{"sku": "OK-1", "on_hand": 1}, {"on_hand": 3}]},
        ["body", "items", 1, "sku"],
    ),
    "sku with a space": (
        {"warehouse_id": "WH-1", "items": [{"sku": "OK-1", "on_hand": 1}, {"sku": "SK U", "on_hand": 3}]},
        ["body", "items", 1, "sku"],
    ),
    "no items": ({"warehouse_id": "WH-1", "items": []}, ["body", "items"]),
    "the same sku twice": (
        {"warehouse_id": "WH-1", "items": [{"sku": "OK-1", "on_hand": 1}, {"sku": "OK-1", "on_hand": 2}]},
        ["body", "items", 1, "sku"],
    ),
    "as_of in the future": (
        {"warehouse_id": "WH-1", "as_of": "2999-01-01T00:00:00Z", "items": [{"sku": "OK-1", "on_hand": 1}]},
        ["body", "as_of"],
    ),
    # Issue 14, defect 4: these raised OverflowError (500); the rule is years 1970 to 9999 in UTC.
    "as_of before year 1 once its offset is applied": (
        {"warehouse_id": "WH-1", "as_of": "0001-01-01T00:00:00+05:00", "items": [{"sku": "OK-1", "on_hand": 1}]},
        ["body", "as_of"],
    ),
    "as_of after 9999 once its offset is applied": (
        {"warehouse_id": "WH-1", "as_of": "9999-12-31T23:59:59-05:00", "items": [{"sku": "OK-1", "on_hand": 1}]},
        ["body", "as_of"],
    ),
    "as_of before 1970": (
        {"warehouse_id": "WH-1", "as_of": "1969-12-31T23:59:59Z", "items": [{"sku": "OK-1", "on_hand": 1}]},
        ["body", "as_of"],
    ),
    # Found by the API fuzzer: pydantic read a number as seconds since 1970 (1.0: 1970-01-01T00:00:01Z).
    "as_of as a number": (
        {"warehouse_id": "WH-1", "as_of": 1.0, "items": [{"sku": "OK-1", "on_hand": 1}]},
        ["body", "as_of"],
    ),
    "an unknown field": (
        {"warehouse_id": "WH-1", "items": [{"sku": "OK-1", "on_hand": 1}], "note": "x"},
        ["body", "note"],
    ),
    "no warehouse": ({"items": [{"sku": "OK-1", "on_hand": 1}]}, ["body", "warehouse_id"]),
}


@pytest.mark.parametrize("case", BAD_REPORTS, ids=list(BAD_REPORTS))
async def test_a_bad_report_is_422_naming_the_item_and_records_nothing(system: System, warehouse: str, case: str):
    body, location = BAD_REPORTS[case]
    status, answer = await post_stock(system, warehouse, body)

    assert status == 422
    assert location in [error["loc"] for error in answer["detail"]], answer
    if case == "sku with a space":  # the rule in words, not a regular expression
        assert "must be 1-64 of A-Z a-z 0-9 . _ -" in answer["detail"][0]["msg"], answer
    status, _, _ = await system.call("GET", "/v1/skus/OK-1/availability")
    assert status == 404, "the valid item of a rejected report is not recorded"
    assert await system.published() == []


async def test_a_body_that_is_not_json_or_too_large_is_refused(system: System, warehouse: str):
    status, answer, _ = await system.call(
        "POST", "/v1/stock", token=warehouse, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 422
    huge = report(**{f"SKU_{n}": n for n in range(40_000)})
    status, answer, _ = await system.call("POST", "/v1/stock", token=warehouse, json=huge)
    assert status == 413
    assert "1 MiB" in answer["detail"]

    async def chunks():  # no Content-Length: the limit is counted as the body streams in
        for _ in range(20):
            yield b" " * 65536

    status, answer, _ = await system.call(
        "POST", "/v1/stock", token=warehouse, data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert status == 413
    assert await system.published() == []


async def test_writing_stock_needs_a_token_with_the_stock_write_scope(system: System):
    body = report(SKU_1=1)
    status, answer, headers = await system.call("POST", "/v1/stock", json=body)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = await system.call("POST", "/v1/stock", token="not-a-token", json=body)
    assert status == 401
    status, answer, _ = await system.call("POST", "/v1/stock", token=await system.user_token(), json=body)
    assert status == 403
    assert "stock:write" in answer["detail"]
    status, _, _ = await system.call("PUT", "/v1/skus/SKU-1", token=await system.user_token(), json={"safety_stock": 1})
    assert status == 403
    status, _, _ = await system.call("POST", "/v1/stock", token=await system.admin_token(), json=body)
    assert status == 202
    assert [event.json() for event in await system.published()] == [{"sku": "SKU-1"}]


async def test_an_idempotent_replay_answers_the_same_and_changes_nothing(system: System, warehouse: str):
    key = {"Idempotency-Key": "delivery-0001", "X-Correlation-ID": "first"}
    first = await post_stock(system, warehouse, report(SKU_1=5), **key)
    again = await post_stock(system, warehouse, report(SKU_1=5), **key | {"X-Correlation-ID": "second"})

    assert first == again == (202, {"accepted": 1, "stale": 0, "correlation_id": "first"})
    assert (await availability(system, "SKU-1"))["revision"] == 1
    assert len(await system.published()) == 1
    status, answer = await post_stock(system, warehouse, report(SKU_1=6), **key)
    assert status == 422
    assert "different request" in answer["detail"]
    assert (await availability(system, "SKU-1"))["on_hand"] == 5


async def test_one_idempotency_key_sent_at_once_records_once(system: System, warehouse: str):
    """Repeats arriving together (one group, or racing transactions) record once and answer alike."""
    body = report(SKU_1=5, SKU_2=3)
    answers = await asyncio.gather(
        *(
            post_stock(system, warehouse, body, **{"Idempotency-Key": "at-once", "X-Correlation-ID": f"c{n}"})
            for n in range(8)
        )
    )

    assert {status for status, _ in answers} == {202}
    assert len({answer["correlation_id"] for _, answer in answers}) == 1, "every repeat answers as the first"
    assert [(await availability(system, sku))["revision"] for sku in ("SKU-1", "SKU-2")] == [1, 1]
    assert len(await system.published()) == 2


async def test_unknown_sku_is_404_and_bad_sku_422(system: System):
    status, body, _ = await system.call("GET", "/v1/skus/NOPE-1/availability")
    assert (status, body["detail"]) == (404, "unknown SKU 'NOPE-1'")
    status, body, _ = await system.call("GET", "/v1/skus/bad%20sku/availability")
    assert status == 422
    assert body["detail"][0]["loc"] == ["path", "sku"]
    assert body["detail"][0]["msg"] == "must be 1-64 of A-Z a-z 0-9 . _ -, not starting with . _ -"


async def test_low_stock_lists_page_by_page(system: System, warehouse: str):
    await post_stock(system, warehouse, report(A_1=0, A_2=5, A_3=6, A_4=1, A_5=50))
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        params = {"low_stock": "true", "limit": "2", **({"cursor": cursor} if cursor else {})}
        status, page, _ = await system.call("GET", "/v1/skus", params=params)
        assert status == 200
        seen += [item["sku"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["A-1", "A-2", "A-4"]  # available_for_sale <= 5 (SKUFLOW_LOW_STOCK_THRESHOLD)
    _, page, _ = await system.call("GET", "/v1/skus", params={"low_stock": "false"})
    assert [item["sku"] for item in page["items"]] == ["A-3", "A-5"]
    status, _, _ = await system.call("GET", "/v1/skus", params={"cursor": "%%%"})
    assert status == 422


async def test_recalculation_catches_up_with_every_change(system: System, warehouse: str):
    await post_stock(system, warehouse, report(SKU_1=4))
    await system.call("PUT", "/v1/skus/SKU-1", token=warehouse, json={"safety_stock": 1})
    db = system.inventory_runtime.db

    async def recalculated() -> bool:
        async with db.reading() as session:
            row = (await session.execute(select(skus).where(skus.c.sku == "SKU-1"))).one()
        return row.recalculated_revision == row.revision == 2 and row.available_for_sale == 3

    await wait_until(recalculated, what="the recalculation of revision 2")


async def test_concurrent_reports_for_one_new_sku_lose_no_update(system: System, warehouse: str):
    reports = [post_stock(system, warehouse, report(f"WH-{n}", SKU_1=n)) for n in range(1, 13)]
    answers = await asyncio.gather(*reports)

    assert {status for status, _ in answers} == {202}
    view = await availability(system, "SKU-1")
    assert (view["on_hand"], view["revision"]) == (sum(range(1, 13)), 12)
    assert len(await system.published()) == 12


async def test_operations_endpoints(system: System, warehouse: str):
    await post_stock(system, warehouse, report(SKU_1=1))
    status, body, _ = await system.call("GET", "/readyz")
    assert (status, body["checks"]["database"], body["checks"]["broker"]) == (200, "ok", "ok")
    status, _, _ = await system.call("GET", "/healthz")
    assert status == 200
    async with system.http.get(f"{system.inventory.url}/metrics") as response:
        text = await response.text()
    assert 'skuflow_http_requests_total{method="POST",route="/v1/stock",service="inventory",status="202"} 1.0' in text
    status, spec, _ = await system.call("GET", "/openapi.json")
    assert "/v1/stock" in spec["paths"]


async def test_reports_recorded_together_keep_each_its_own_answer_flow_and_outcome(system: System, warehouse: str):
    """Reports arriving at once share transactions (group commit): each still gets its own answer, its events
    its own correlation id, and one whose Idempotency-Key was used for another request fails alone."""
    await post_stock(system, warehouse, report(SKU_0=1), **{"Idempotency-Key": "used"})
    reports = [
        post_stock(system, warehouse, report(**{f"SKU_{n}": n}), **{"X-Correlation-ID": f"flow-{n}"})
        for n in range(1, 13)
    ]
    reused = post_stock(system, warehouse, report(SKU_99=9), **{"Idempotency-Key": "used"})
    *answers, refused = await asyncio.gather(*reports, reused)

    assert [answer for _, answer in answers] == [
        {"accepted": 1, "stale": 0, "correlation_id": f"flow-{n}"} for n in range(1, 13)
    ]
    assert refused[0] == 422
    assert "different request" in refused[1]["detail"]
    assert (await system.call("GET", "/v1/skus/SKU-99/availability"))[0] == 404, "nothing of it recorded"
    events = {event.json()["sku"]: event.correlation_id for event in await system.published()}
    assert {sku: flow for sku, flow in events.items() if sku != "SKU-0"} == {
        f"SKU-{n}": f"flow-{n}" for n in range(1, 13)
    }


async def test_a_report_of_the_most_items_is_recorded(system: System, warehouse: str):
    """10,000 items, the most a report may hold (CONTRACT): recorded, on PostgreSQL too."""
    body = {"warehouse_id": "WH-1", "items": [{"sku": f"SKU-{n}", "on_hand": 1} for n in range(10_000)]}
    status, answer = await post_stock(system, warehouse, body)
    assert (status, answer["accepted"]) == (202, 10_000), answer


async def test_reports_recorded_together_whatever_their_size(system: System):
    """Four reports of 2,500 items arriving together are written in one transaction, not failed over to one
    each (PostgreSQL refuses a row-value IN list of ~7,000 pairs: stack depth limit exceeded)."""
    from skuflow.inventory import domain
    from skuflow.inventory.recording import Report
    from skuflow.platform.group_commit import Submitted

    now = datetime.now(UTC)
    reports = [
        Submitted(
            Report.of(
                [domain.ReportedLevel(f"WH-{w}", f"SKU-{n}", 1, now) for n in range(2_500)],
                principal="warehouse",
                idempotency_key=None,
                request=w,
            )
        )
        for w in range(4)
    ]
    answers = await system.inventory.app.state.recorder._write(reports)
    assert [answer.body["accepted"] for answer in answers] == [2_500] * 4
