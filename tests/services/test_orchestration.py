"""Orchestration (CONTRACT sections 1, 2 and 7): inventory drives each SKU change with commands and tracks
every flow; the end-to-end behaviour in both styles is `test_wishlists_email.py`, run in each mode."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pydantic
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from skuflow.messaging import COMMANDS, FLOW_REPLIES, Message, Queue, Subscription, Topology, routes
from tests.conftest import Stack
from tests.services.conftest import MODES, System, settled
from tests.services.test_metrics import scrape, value
from tests.support.servers import serve
from tests.support.waiting import wait_until

COMMAND_QUEUES = ("inventory.recalculate_sku", "catalog.update_sku_availability", "users.update_wishlists_for_sku")


async def report(system: System, sku: str, on_hand: int, correlation_id: str, *more: tuple[str, int]) -> None:
    token = await system.client_token()
    items = [{"sku": name, "on_hand": number} for name, number in [(sku, on_hand), *more]]
    body = {"warehouse_id": "WH-1", "items": items}
    headers = {"X-Correlation-ID": correlation_id}
    status, answer, _ = await system.call("POST", "/v1/stock", token=token, json=body, headers=headers)
    assert status == 202, answer


async def flows_of(system: System, correlation_id: str) -> list[dict[str, Any]]:
    status, body, _ = await system.call("GET", f"/v1/flows/{correlation_id}", token=await system.client_token())
    return list(body["items"]) if status == 200 else []


async def flow_status_is(system: System, correlation_id: str, *statuses: str) -> bool:
    found = await flows_of(system, correlation_id)
    return bool(found) and [flow["status"] for flow in found] == list(statuses)


@pytest.mark.parametrize("mode", MODES)
async def test_each_style_sends_only_its_own_messages(system: System, mode: str):
    observed = {queue: f"test.observer.{queue}" for queue in COMMAND_QUEUES}
    await system.observer.declare(
        Topology((COMMANDS,), tuple(Queue(copy, COMMANDS, binding_key=queue) for queue, copy in observed.items()))
    )
    await report(system, "SKU-M", 4, f"styles-{mode}")
    await wait_until(lambda: system.catalog_knows("SKU-M", 1), what="catalog to follow")

    events = await system.published()
    commands = {queue: len(await system.observer.take(copy, 100)) for queue, copy in observed.items()}
    if mode == "choreography":
        assert (len(events), commands) == (1, dict.fromkeys(COMMAND_QUEUES, 0))
    else:
        assert (len(events), commands) == (0, dict.fromkeys(COMMAND_QUEUES, 1))


async def test_a_flow_per_sku_is_tracked_step_by_step_to_completion(system: System):
    await report(system, "SKU-T", 3, "tracked-1", ("SKU-U", 0))
    await wait_until(lambda: flow_status_is(system, "tracked-1", "completed", "completed"), what="both flows")

    [flow, other] = await flows_of(system, "tracked-1")
    assert (flow["sku"], flow["revision"], flow["available_for_sale"], flow["error"]) == ("SKU-T", 1, 3, None)
    assert (other["sku"], other["available_for_sale"]) == ("SKU-U", 0)
    assert [(s["step"], s["status"], s["attempts"]) for s in flow["steps"]] == [
        ("recalculate_sku", "done", 1),
        ("update_sku_availability", "done", 1),
        ("update_wishlists_for_sku", "done", 1),
    ]
    assert flow["finished_at"] is not None
    token = await system.client_token()
    status, first, _ = await system.call("GET", "/v1/flows?status=completed&limit=1", token=token)
    assert (status, [item["flow_id"] for item in first["items"]]) == (200, [other["flow_id"]])  # newest first
    cursor = first["next_cursor"]
    status, second, _ = await system.call("GET", f"/v1/flows?status=completed&limit=1&cursor={cursor}", token=token)
    assert ([item["flow_id"] for item in second["items"]], second["next_cursor"]) == ([flow["flow_id"]], None)
    status, none, _ = await system.call("GET", "/v1/flows?status=failed", token=token)
    assert none == {"items": [], "next_cursor": None}
    status, _, _ = await system.call("GET", "/v1/flows")
    assert status == 401
    status, _, _ = await system.call("GET", "/v1/flows", token=await system.user_token())
    assert status == 403
    status, missing, _ = await system.call("GET", "/v1/flows/nothing-here", token=token)
    assert status == 404
    assert "nothing-here" in missing["detail"]


@pytest.fixture
def quick_steps(stack: Stack) -> None:
    """A step is given 1 s to answer, and two tries: time enough for the steps that do answer, on a slow
    machine."""
    stack.overrides |= {"flow_step_timeout_seconds": 1.0, "flow_step_attempts": 2}


@pytest.fixture
def impatient_steps(stack: Stack) -> None:
    """A step is given 0.3 s to answer, and many tries: a slow answer is asked for again, never failed."""
    stack.overrides |= {"flow_step_timeout_seconds": 0.3, "flow_step_attempts": 20}


async def test_a_step_without_an_answer_is_sent_again_then_fails_its_flow(quick_steps: None, system: System):
    await system.catalog.stop()  # catalog will not answer
    await report(system, "SKU-Q", 2, "unanswered-1")

    await wait_until(lambda: flow_status_is(system, "unanswered-1", "failed"), what="the flow to fail")
    [flow] = await flows_of(system, "unanswered-1")
    steps = {step["step"]: step for step in flow["steps"]}
    assert (steps["recalculate_sku"]["status"], steps["update_wishlists_for_sku"]["status"]) == ("done", "done")
    catalog = steps["update_sku_availability"]
    assert (catalog["status"], catalog["attempts"]) == ("failed", 2)
    assert catalog["error"] == "no step_finished after 2 attempts of 1 s"
    assert flow["error"].startswith("update_sku_availability: no step_finished")
    inventory = await scrape(system, "inventory")
    assert value(inventory, "skuflow_flow_steps_failed_total") == 1
    assert value(inventory, "skuflow_flow_steps_resent_total") == 1


async def test_a_step_sent_again_is_published_in_the_trace_of_the_report_that_started_its_flow(
    quick_steps: None, spans: InMemorySpanExporter, system: System
):
    """`spans` before `system`: the services are built tracing."""
    await system.catalog.stop()  # catalog will not answer: its step is sent again
    await report(system, "SKU-R", 2, "resent-1")
    await wait_until(lambda: flow_status_is(system, "resent-1", "failed"), what="the flow to fail")
    await wait_until(lambda: len(_publishes(spans, "catalog.update_sku_availability")) == 2, what="both sends")
    [root] = [s for s in spans.get_finished_spans() if (s.attributes or {}).get("http.route") == "/v1/stock"]
    sends = _publishes(spans, "catalog.update_sku_availability")
    assert {s.context.trace_id for s in sends} == {root.context.trace_id}, "the resend is in the report's trace"


def _publishes(spans: InMemorySpanExporter, queue: str) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.name == f"publish commands:{queue}"]


@pytest.fixture
def many_quick_steps(stack: Stack) -> None:
    """A step is given 2 s to answer (the sweeper looks every 0.5 s), and tries enough to outlast the test."""
    stack.overrides |= {"flow_step_timeout_seconds": 2.0, "flow_step_attempts": 20}


class Command(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    sku: str


async def test_a_step_behind_a_backlog_being_worked_is_not_sent_again_until_the_queue_drains(
    many_quick_steps: None, system: System
):
    """Its command waits its turn, it is not lost: its clock is held while its owner's queue has messages
    ready and a consumer, and runs again a timeout after the queue was last seen so."""
    from skuflow.catalog.service import build_app as catalog_app

    queue = routes.CATALOG_UPDATE_SKU_AVAILABILITY
    await system.catalog.stop()
    # In catalog's place, a consumer stuck on its first message while the rest wait: a real backlog.
    release = asyncio.Event()
    taken: list[str] = []

    async def slow_catalog(message: Message[Command]) -> None:
        taken.append(message.body.sku)
        await release.wait()  # and then answers nothing

    consumer = await system.observer.consume(Subscription(queue.name, queue.message.name, Command, slow_catalog), 1)
    try:
        ids = {"flow_id": "f-other", "correlation_id": "c-other"}
        others = [routes.update_sku_availability(f"SKU-{n}", available_for_sale=1, revision=1, **ids) for n in range(4)]
        await system.observer.publish_many(others)
        await report(system, "SKU-B", 3, "backlog-1")
        await wait_until(lambda: _equals(system.observer.depth(queue.name), 4), what="the command behind 3 others")

        await asyncio.sleep(4.5)  # two step timeouts and more
        [flow] = await flows_of(system, "backlog-1")
        steps = {step["step"]: step for step in flow["steps"]}
        assert (flow["status"], steps[queue.message.name]["attempts"]) == ("running", 1)
        inventory = await scrape(system, "inventory")
        assert value(inventory, "skuflow_flow_steps_held") == 1
        assert value(inventory, "skuflow_flow_steps_resent_total") == 0

        # The sweeper saw the queue busy at most one sweep (0.5 s) before the release, so the step is sent
        # again no sooner than 1.5 s after it; unheld, it would go at the first sweep after the drain.
        released = time.monotonic()
        release.set()
        await wait_until(lambda: _equals(system.observer.depth(queue.name), 0), what="the backlog worked through")
        await wait_until(lambda: _attempts(system, "backlog-1", queue.message.name, 2), what="the step sent again")
        assert time.monotonic() - released > 1.0, "sent again only a timeout after the queue was last seen busy"
        assert "SKU-B" in taken
    finally:
        release.set()
        await consumer.stop()

    system.catalog = await serve(catalog_app(system.inventory_runtime.settings))
    await wait_until(lambda: flow_status_is(system, "backlog-1", "completed"), what="the flow, once catalog is back")


async def _equals(depth: Any, expected: int) -> bool:
    return bool(await depth == expected)


async def _attempts(system: System, correlation_id: str, step: str, attempts: int) -> bool:
    [flow] = await flows_of(system, correlation_id)
    return any(s["step"] == step and s["attempts"] >= attempts for s in flow["steps"])


async def test_a_newer_change_supersedes_a_running_flow(system: System):
    await system.catalog.stop()  # the first flow cannot finish
    await report(system, "SKU-N", 2, "older")
    await wait_until(lambda: flow_status_is(system, "older", "running"), what="the first flow")
    await report(system, "SKU-N", 0, "newer")

    await wait_until(lambda: flow_status_is(system, "older", "superseded"), what="the first flow superseded")
    assert await flow_status_is(system, "newer", "running")
    [older], [newer] = await flows_of(system, "older"), await flows_of(system, "newer")
    assert (older["revision"], newer["revision"]) == (1, 2)


async def test_reports_of_one_sku_at_once_each_start_a_flow_and_only_the_newest_runs(system: System):
    """Reports recorded together (group commit) are recorded as if one after another: one flow each, at its
    own revision, all but the newest superseded (in the transaction, unsent, when they share one)."""
    token = await system.client_token()

    async def report_from(warehouse: int) -> None:
        body = {"warehouse_id": f"WH-{warehouse}", "items": [{"sku": "SKU-T", "on_hand": warehouse}]}
        headers = {"X-Correlation-ID": f"together-{warehouse}"}
        status, answer, _ = await system.call("POST", "/v1/stock", token=token, json=body, headers=headers)
        assert status == 202, answer

    await asyncio.gather(*(report_from(n) for n in range(1, 9)))

    async def one_completed() -> bool:
        found = [flow for n in range(1, 9) for flow in await flows_of(system, f"together-{n}")]
        return [flow["status"] for flow in found].count("completed") == 1

    await wait_until(one_completed, what="the newest flow to complete")
    found = [flow for n in range(1, 9) for flow in await flows_of(system, f"together-{n}")]
    assert sorted(flow["revision"] for flow in found) == list(range(1, 9)), "one flow per report, its own revision"
    newest = max(found, key=lambda flow: flow["revision"])
    assert newest["status"] == "completed"
    assert {flow["status"] for flow in found if flow is not newest} == {"superseded"}
    assert (await system.call("GET", "/v1/skus/SKU-T/availability"))[1]["on_hand"] == sum(range(1, 9))


async def test_a_flow_begun_in_orchestration_ends_after_a_restart_in_choreography(system: System):
    """Switching modes strands nothing: the command waiting for catalog, the reply, the flow's state."""
    from skuflow.catalog.service import build_app as catalog_app
    from skuflow.inventory.service import build_app as inventory_app

    await system.catalog.stop()
    await report(system, "SKU-W", 5, "switch-1")
    await wait_until(lambda: flow_status_is(system, "switch-1", "running"), what="the flow to wait for catalog")

    choreography = system.inventory.app.state.runtime.settings.model_copy(update={"mode": "choreography"})
    await system.inventory.stop()
    system.inventory = await serve(inventory_app(choreography), _socket_of(system.inventory.url))
    system.catalog = await serve(catalog_app(choreography))  # back, in the other style

    await wait_until(lambda: flow_status_is(system, "switch-1", "completed"), timeout=20, what="the flow to end")
    assert await system.catalog_knows("SKU-W", 1)
    await report(system, "SKU-W", 6, "switch-2")  # and from now on, choreography: no flow
    await wait_until(lambda: system.catalog_knows("SKU-W", 2), what="catalog to follow the event")
    assert await flows_of(system, "switch-2") == []


def _socket_of(url: str) -> Any:
    from skuflow.platform.serving import bind

    return bind("127.0.0.1", int(url.rsplit(":", 1)[1]))


async def test_a_command_still_in_the_outbox_is_not_counted_late(impatient_steps: None, system: System):
    relay = system.inventory_runtime.relay
    assert relay is not None
    await relay.stop()  # the first command stays in the outbox, as behind a big import or a broker outage
    await report(system, "SKU-O", 1, "queued-1")
    await asyncio.sleep(1.0)  # more than three step timeouts: not one of them may count
    [flow] = await flows_of(system, "queued-1")
    assert (flow["status"], flow["steps"][0]["attempts"]) == ("running", 1)

    relay.start()
    await wait_until(lambda: flow_status_is(system, "queued-1", "completed"), what="the flow, once sent")


async def test_answers_the_flow_did_not_ask_for_change_nothing(system: System):
    await report(system, "SKU-A", 1, "asked-1")
    await wait_until(lambda: flow_status_is(system, "asked-1", "completed"), what="the flow")
    [flow] = await flows_of(system, "asked-1")

    def answer(step: str, sku: str, ok: bool) -> Any:
        body = {"flow_id": flow["flow_id"], "sku": sku, "step": step, "revision": 1, "ok": ok, "error": None}
        return system.observer.envelope("step_finished", body)

    stats = system.inventory_runtime.broker.stats
    await wait_until(lambda: settled(stats), what="inventory to settle what the flow sent it")
    acked = stats.acked
    for late in (answer("update_sku_availability", "SKU-A", False), answer("recalculate_sku", "SKU-Z", True)):
        await system.observer.publish(late, COMMANDS.name, FLOW_REPLIES)
    await wait_until(lambda: stats.acked >= acked + 2, what="inventory to handle both answers")
    [after] = await flows_of(system, "asked-1")
    assert after == flow


async def test_a_new_safety_stock_starts_a_flow_too(system: System):
    await report(system, "SKU-P", 4, "before-safety")
    await wait_until(lambda: flow_status_is(system, "before-safety", "completed"), what="the first flow")
    token = await system.client_token()
    headers = {"X-Correlation-ID": "safety-1"}
    status, _, _ = await system.call("PUT", "/v1/skus/SKU-P", token=token, json={"safety_stock": 4}, headers=headers)
    assert status == 200
    await wait_until(lambda: flow_status_is(system, "safety-1", "completed"), what="the safety stock's flow")
    [flow] = await flows_of(system, "safety-1")
    assert (flow["revision"], flow["available_for_sale"]) == (2, 0)
    assert await system.catalog_knows("SKU-P", 2)


@pytest.fixture
def mode() -> str:
    """Orchestration, except in the test parametrized over both."""
    return "orchestration"


def _reports(*reported: tuple[str, str, int]) -> list[Any]:
    """Stock reports as the API hands them to the recorder, each in a context of its own."""
    from datetime import UTC, datetime

    from skuflow.inventory import domain
    from skuflow.inventory.recording import Report
    from skuflow.platform.group_commit import Submitted

    now = datetime.now(UTC)
    return [
        Submitted(
            Report.of(
                [domain.ReportedLevel(warehouse, sku, on_hand, now)],
                principal="warehouse",
                idempotency_key=None,
                request=[warehouse, sku, on_hand],
            )
        )
        for warehouse, sku, on_hand in reported
    ]


async def _flows_of_sku(system: System, sku: str) -> list[Any]:
    from sqlalchemy import select

    from skuflow.inventory.db import flows

    async with system.inventory_runtime.db.reading() as session:
        query = select(flows).where(flows.c.sku == sku).order_by(flows.c.flow_id)
        return list((await session.execute(query)).all())


async def test_a_flow_superseded_within_a_group_is_written_finished(system: System):
    """A group whose first flow runs and a later SKU's flow is superseded within it: the superseded one ends
    (finished_at), as every flow superseded does, or retention never takes it."""
    recorder = system.inventory.app.state.recorder
    answers = await recorder._write(_reports(("WH-1", "SKU-GA", 1), ("WH-1", "SKU-GB", 1), ("WH-2", "SKU-GB", 2)))
    assert [answer.status for answer in answers] == [202, 202, 202]

    older, newer = await _flows_of_sku(system, "SKU-GB")
    assert (older.status, newer.status) == ("superseded", "running")
    assert older.finished_at is not None, "a superseded flow has ended"


async def test_a_group_whose_first_flow_is_superseded_is_written_as_one(system: System):
    """Two reports of one SKU in one group: written set-wise (the first flow superseded, unsent), not failed
    over to one transaction per report."""
    recorder = system.inventory.app.state.recorder
    answers = await recorder._write(_reports(("WH-1", "SKU-GC", 1), ("WH-2", "SKU-GC", 2)))
    assert [answer.status for answer in answers] == [202, 202]

    older, newer = await _flows_of_sku(system, "SKU-GC")
    assert (older.status, older.revision, newer.status, newer.revision) == ("superseded", 1, "running", 2)
    assert older.finished_at is not None


async def test_a_batch_of_replies_moves_its_flows_as_one_at_a_time_would(system: System):
    """Review check (ff9cf94): several replies of one flow in one batch, a repeat, a reply for a superseded
    flow, and a failure, handled together as they were one after another."""
    from datetime import UTC, datetime

    from skuflow.inventory.db import flow_steps, flows
    from skuflow.inventory.messages import StepFinished
    from skuflow.inventory.orchestration import STEPS, Orchestrator, new_flow_id

    await report(system, "SKU-Q", 3, "batch-q")
    await wait_until(lambda: flow_status_is(system, "batch-q", "completed"), what="the first flow")
    runtime = system.inventory_runtime
    now = datetime.now(UTC)
    ids = [new_flow_id() for _ in range(3)]
    async with runtime.db.transaction() as session:
        for flow_id, status in zip(ids, ("running", "superseded", "running"), strict=True):
            await session.execute(
                flows.insert().values(
                    flow_id=flow_id,
                    correlation_id=f"c-{flow_id}",
                    sku="SKU-Q",
                    revision=1,
                    status=status,
                    started_at=now,
                    updated_at=now,
                )
            )
            for step in STEPS:
                first = step == STEPS[0]
                await session.execute(
                    flow_steps.insert().values(
                        flow_id=flow_id,
                        step=step,
                        status="pending",
                        attempts=1 if first else 0,
                        sent_at=now if first else None,
                        command_id=None,
                    )
                )

    def reply(flow_id: str, step: str, ok: bool = True) -> Message[StepFinished]:
        body = {
            "flow_id": flow_id,
            "sku": "SKU-Q",
            "step": step,
            "revision": 1,
            "ok": ok,
            "error": None if ok else "boom",
        }
        return Message(StepFinished(**body), system.observer.envelope("step_finished", body), 1)

    one, superseded, failing = ids
    batch = [
        reply(one, STEPS[0]),
        reply(one, STEPS[0]),
        reply(superseded, STEPS[0]),
        reply(failing, STEPS[0], ok=False),
        reply(one, STEPS[1]),
        reply(one, STEPS[2]),
    ]
    await Orchestrator(runtime.db, runtime.outbox).on_step_finished(batch)

    async with runtime.db.reading() as session:
        found = {row.flow_id: row for row in await session.execute(flows.select().where(flows.c.flow_id.in_(ids)))}
        steps = {
            (row.flow_id, row.step): row
            for row in await session.execute(flow_steps.select().where(flow_steps.c.flow_id.in_(ids)))
        }
    assert (found[one].status, found[one].available_for_sale, found[one].recalculated_revision) == ("completed", 3, 1)
    assert [steps[(one, s)].status for s in STEPS] == ["done"] * 3
    assert found[one].finished_at is not None
    assert (found[superseded].status, steps[(superseded, STEPS[0])].status) == ("superseded", "pending")
    assert (found[failing].status, found[failing].error) == ("failed", "recalculate_sku: boom")
    assert steps[(failing, STEPS[0])].status == "failed"


async def test_a_large_group_writes_its_superseded_flows_finished(system: System):
    """The same with 200 flows and more, written by COPY on PostgreSQL (columns taken from the first row)."""
    from datetime import UTC, datetime

    from skuflow.inventory import domain
    from skuflow.inventory.recording import Report
    from skuflow.platform.group_commit import Submitted

    now = datetime.now(UTC)
    first = [domain.ReportedLevel("WH-1", f"SKU-L{n}", 1, now) for n in range(250)]
    later = [domain.ReportedLevel("WH-2", "SKU-L249", 2, now)]
    reports = [
        Submitted(Report.of(levels, principal="warehouse", idempotency_key=None, request=n))
        for n, levels in enumerate((first, later))
    ]
    answers = await system.inventory.app.state.recorder._write(reports)
    assert [answer.status for answer in answers] == [202, 202]
    older, newer = await _flows_of_sku(system, "SKU-L249")
    assert (older.status, newer.status) == ("superseded", "running")
    assert older.finished_at is not None
