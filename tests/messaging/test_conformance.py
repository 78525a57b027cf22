"""One behaviour, two brokers: every test here runs against the memory broker and a real RabbitMQ."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pydantic
import pytest

from skuflow.messaging import (
    Broker,
    Envelope,
    Message,
    Outgoing,
    PublishError,
    PublishRefused,
    QueueState,
    Reject,
    Subscription,
    dead_letter_queue,
)
from tests.conftest import TEST_OPTIONS, BrokerFactory
from tests.support.waiting import wait_until

FANOUT_QUEUES = ("inventory.sku_processed", "catalog.sku_processed", "users.sku_processed")
QUEUE = "catalog.sku_processed"


class SkuProcessed(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    sku: str


Received = list[Message[SkuProcessed]]


def recorder(into: Received, then: Callable[[Message[SkuProcessed]], Awaitable[None]] | None = None):
    async def handler(message: Message[SkuProcessed]) -> None:
        into.append(message)
        if then is not None:
            await then(message)

    return handler


def sku_processed(queue: str, handler) -> Subscription[SkuProcessed]:
    return Subscription(queue, "sku_processed", SkuProcessed, handler)


async def publish_event(broker: Broker, sku: str, **kwargs) -> Envelope:
    envelope = broker.envelope("sku_processed", SkuProcessed(sku=sku), **kwargs)
    await broker.publish(envelope, "sku_processed")
    return envelope


async def test_an_event_reaches_every_queue_bound_to_its_fanout_exchange_with_its_envelope(make_broker: BrokerFactory):
    producer = await make_broker("inventory")
    consumer = await make_broker("listener")
    received: dict[str, Received] = {queue: [] for queue in FANOUT_QUEUES}
    for queue in FANOUT_QUEUES:
        await consumer.consume(sku_processed(queue, recorder(received[queue])))

    sent = await publish_event(producer, "SKU-1", correlation_id="corr-1", causation_id="req-1")

    await wait_until(lambda: all(received[queue] for queue in FANOUT_QUEUES), what="one delivery per queue")
    for queue in FANOUT_QUEUES:
        [message] = received[queue]
        assert message.body == SkuProcessed(sku="SKU-1")
        assert message.attempt == 1
        got = message.envelope
        assert (got.type, got.app_id, got.message_id) == ("sku_processed", "inventory", sent.message_id)
        assert (got.correlation_id, got.causation_id) == ("corr-1", "req-1")
        assert got.timestamp == sent.timestamp
        assert got.json() == {"sku": "SKU-1"}


async def test_competing_consumers_on_one_queue_share_the_work(make_broker: BrokerFactory):
    producer = await make_broker("inventory")
    workers = [await make_broker(f"worker-{n}") for n in range(2)]
    received: list[Received] = [[], []]

    async def slow(_: Message[SkuProcessed]) -> None:
        await asyncio.sleep(0.01)

    for worker, into in zip(workers, received, strict=True):
        await worker.consume(sku_processed(QUEUE, recorder(into, slow)), prefetch=1)
    sent = [await publish_event(producer, f"SKU-{n}") for n in range(40)]

    await wait_until(lambda: sum(map(len, received)) >= 40, what="all 40 messages handled")
    ids = [m.envelope.message_id for into in received for m in into]
    assert sorted(ids) == sorted(e.message_id for e in sent), "each message handled exactly once"
    assert all(len(into) >= 5 for into in received), [len(into) for into in received]


async def test_a_handled_message_is_acked_and_stays_handled(make_broker: BrokerFactory):
    broker = await make_broker()
    received: Received = []
    consumer = await broker.consume(sku_processed(QUEUE, recorder(received)))
    await publish_event(broker, "SKU-1")
    await wait_until(lambda: received and consumer.in_flight == 0, what="the message handled")

    await consumer.stop()  # an unacked message would go back to the queue here

    assert await broker.depth(QUEUE) == 0
    assert await broker.depth(dead_letter_queue(QUEUE)) == 0


async def test_a_failing_message_is_retried_after_a_growing_delay_without_blocking_the_queue(
    make_broker: BrokerFactory,
):
    broker = await make_broker()
    attempts: dict[str, list[tuple[int, float]]] = {"BAD": [], "GOOD": []}

    async def flaky(message: Message[SkuProcessed]) -> None:
        attempts[message.body.sku].append((message.attempt, time.monotonic()))
        if message.body.sku == "BAD" and message.attempt < 3:
            raise RuntimeError("inventory unreachable")

    await broker.consume(sku_processed(QUEUE, flaky), prefetch=1)
    await publish_event(broker, "BAD")
    await publish_event(broker, "GOOD")

    await wait_until(lambda: len(attempts["BAD"]) == 3, what="the third attempt")
    await wait_until(lambda: broker.stats.acked == 2, what="both messages acked")
    assert [n for n, _ in attempts["BAD"]] == [1, 2, 3]
    (_, first), (_, second), (_, third) = attempts["BAD"]
    assert second - first >= TEST_OPTIONS.retry_delays[0] * 0.9
    assert third - second >= TEST_OPTIONS.retry_delays[1] * 0.9
    [(_, good)] = attempts["GOOD"]
    assert good < second, "the message behind the failing one did not wait for its retry"
    assert await broker.depth(dead_letter_queue(QUEUE)) == 0


async def test_a_message_that_keeps_failing_lands_in_the_dlq_with_reason_and_attempts(make_broker: BrokerFactory):
    broker = await make_broker()
    received: Received = []

    async def broken(_: Message[SkuProcessed]) -> None:
        raise RuntimeError("inventory unreachable")

    await broker.consume(sku_processed(QUEUE, recorder(received, broken)))
    sent = await publish_event(broker, "SKU-1")

    dlq = dead_letter_queue(QUEUE)
    await wait_until(lambda: broker.depth(dlq), what="a dead letter")
    [letter] = await broker.take(dlq, 10)
    assert [m.attempt for m in received] == [1, 2, 3]  # the first try and one per retry delay
    assert letter.message_id == sent.message_id
    assert letter.headers["x-reason"] == "RuntimeError: inventory unreachable"
    assert letter.headers["x-attempts"] == 3
    assert sum(death["count"] for death in letter.headers["x-death"]) == 2
    assert await broker.depth(QUEUE) == 0


async def test_a_rejected_message_goes_straight_to_the_dlq(make_broker: BrokerFactory):
    broker = await make_broker()
    received: Received = []

    async def refuse(_: Message[SkuProcessed]) -> None:
        raise Reject("SKU-1 is not ours")

    await broker.consume(sku_processed(QUEUE, recorder(received, refuse)))
    await publish_event(broker, "SKU-1")

    await wait_until(lambda: broker.depth(dead_letter_queue(QUEUE)), what="a dead letter")
    [letter] = await broker.take(dead_letter_queue(QUEUE), 10)
    assert len(received) == 1
    assert (letter.headers["x-reason"], letter.headers["x-attempts"]) == ("rejected: SKU-1 is not ours", 1)


@pytest.mark.parametrize(
    ("message_type", "body", "reason"),
    [
        ("sku_processed", {"skus": "SKU-1"}, "invalid sku_processed body: sku: Field required; skus: Extra inputs"),
        ("sku_processed", {"sku": 12}, "invalid sku_processed body: sku: Input should be a valid string"),
        ("recalculate_sku", {"sku": "SKU-1"}, "unexpected message type 'recalculate_sku' on catalog.sku_processed"),
    ],
)
async def test_a_message_that_fails_validation_goes_straight_to_the_dlq_naming_the_problem(
    make_broker: BrokerFactory, message_type: str, body: dict, reason: str
):
    broker = await make_broker()
    received: Received = []
    await broker.consume(sku_processed(QUEUE, recorder(received)))
    await broker.publish(broker.envelope(message_type, body), "sku_processed")
    await publish_event(broker, "SKU-2")  # the consumer keeps going after a poison message

    await wait_until(lambda: broker.depth(dead_letter_queue(QUEUE)), what="a dead letter")
    await wait_until(lambda: received, what="the valid message handled")
    [letter] = await broker.take(dead_letter_queue(QUEUE), 10)
    assert letter.headers["x-reason"].startswith(reason)
    assert letter.headers["x-attempts"] == 1
    assert [m.body.sku for m in received] == ["SKU-2"]


async def test_graceful_stop_finishes_messages_in_flight_and_leaves_the_rest_queued(make_broker: BrokerFactory):
    broker = await make_broker()
    started: Received = []
    finished: list[str] = []
    release = asyncio.Event()

    async def slow(message: Message[SkuProcessed]) -> None:
        await release.wait()
        finished.append(message.envelope.message_id)

    consumer = await broker.consume(sku_processed(QUEUE, recorder(started, slow)), prefetch=2)
    sent = [await publish_event(broker, f"SKU-{n}") for n in range(10)]
    await wait_until(lambda: len(started) == 2, what="two messages in flight")

    stopping = asyncio.create_task(consumer.stop(grace=5))
    await wait_until(lambda: consumer.in_flight == 2 and not stopping.done(), what="stop waiting for the two")
    release.set()
    await stopping

    assert len(finished) == 2
    assert len(started) == 2
    await wait_until(lambda: _equals(broker.depth(QUEUE), 8), what="the 8 untouched messages back in the queue")

    rest: Received = []
    await broker.consume(sku_processed(QUEUE, recorder(rest)))
    await wait_until(lambda: len(rest) == 8, what="the rest handled by a new consumer")
    handled = finished + [m.envelope.message_id for m in rest]
    assert sorted(handled) == sorted(e.message_id for e in sent)


async def test_a_message_still_running_after_the_grace_period_goes_back_to_the_queue(make_broker: BrokerFactory):
    broker = await make_broker()
    started: Received = []
    cancelled: list[str] = []

    async def stuck(message: Message[SkuProcessed]) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(message.envelope.message_id)
            raise

    consumer = await broker.consume(sku_processed(QUEUE, recorder(started, stuck)))
    sent = await publish_event(broker, "SKU-1")
    await wait_until(lambda: started, what="the message in flight")

    await asyncio.wait_for(consumer.stop(grace=0.2), timeout=5)
    assert cancelled == [sent.message_id], "the handler was stopped, not left running"

    await wait_until(lambda: _equals(broker.depth(QUEUE), 1), what="the message back in the queue")
    [back] = await broker.take(QUEUE, 10)
    assert back.message_id == sent.message_id


async def test_a_message_no_queue_would_receive_raises_instead_of_vanishing(make_broker: BrokerFactory):
    broker = await make_broker()
    command = broker.envelope("recalculate_sku", {"sku": "SKU-1"})
    with pytest.raises(PublishError, match="unroutable recalculate_sku"):
        await broker.publish(command, "commands", "nobody.listens")
    with pytest.raises(PublishError, match="not declared"):
        await broker.publish(command, "no_such_exchange")


async def test_a_batch_refused_in_part_names_what_was_refused_and_delivers_the_rest(make_broker: BrokerFactory):
    broker = await make_broker()
    events = [broker.envelope("sku_processed", {"sku": f"SKU-{n}"}) for n in range(3)]
    lost, nowhere = (broker.envelope("recalculate_sku", {"sku": "SKU-9"}) for _ in range(2))
    batch = [
        Outgoing(events[0], "sku_processed"),
        Outgoing(lost, "commands", "nobody.listens"),
        Outgoing(events[1], "sku_processed"),
        Outgoing(nowhere, "no_such_exchange"),
        Outgoing(events[2], "sku_processed"),
    ]
    with pytest.raises(PublishRefused, match="2 of 5 messages refused") as refused:
        await broker.publish_many(batch)
    assert set(refused.value.refused) == {lost.message_id, nowhere.message_id}
    assert "unroutable recalculate_sku" in refused.value.refused[lost.message_id]
    assert "not declared" in refused.value.refused[nowhere.message_id]
    delivered = await broker.take(QUEUE, 10)
    assert sorted(event.message_id for event in delivered) == sorted(event.message_id for event in events)


async def test_a_handlers_own_messages_carry_its_flow_and_name_it_as_their_cause(make_broker: BrokerFactory):
    inventory = await make_broker("inventory")

    async def recalculate(message: Message[SkuProcessed]) -> None:
        command = inventory.envelope("recalculate_sku", {"sku": message.body.sku})
        await inventory.publish(command, "commands", "inventory.recalculate_sku")

    await inventory.consume(sku_processed("inventory.sku_processed", recalculate))
    cause = await publish_event(inventory, "SKU-1", correlation_id="flow-42")

    await wait_until(lambda: inventory.depth("inventory.recalculate_sku"), what="the command")
    [command] = await inventory.take("inventory.recalculate_sku", 10)
    assert command.correlation_id == "flow-42"
    assert command.causation_id == cause.message_id
    assert (command.type, command.app_id, command.json()) == ("recalculate_sku", "inventory", {"sku": "SKU-1"})


async def test_declaring_the_topology_again_changes_nothing(make_broker: BrokerFactory):
    from skuflow.messaging import SKUFLOW

    broker = await make_broker()
    await publish_event(broker, "SKU-1")
    await broker.declare(SKUFLOW)
    assert await broker.depth(QUEUE) == 1


async def test_a_window_of_publishes_is_all_confirmed(make_broker: BrokerFactory):
    from skuflow.messaging import Outgoing

    broker = await make_broker()
    batch = [Outgoing(broker.envelope("sku_processed", {"sku": f"SKU-{n}"}), "sku_processed") for n in range(250)]
    await broker.publish_many(batch, window=50)
    for queue in FANOUT_QUEUES:
        await wait_until(lambda q=queue: _equals(broker.depth(q), 250), what=f"250 messages in {queue}")


async def test_a_purge_empties_a_queue_and_counts_what_it_removed(make_broker: BrokerFactory):
    broker = await make_broker()
    for n in range(3):
        await publish_event(broker, f"SKU-{n}")
    await wait_until(lambda: _equals(broker.depth(QUEUE), 3), what="3 messages in the queue")
    assert await broker.purge(QUEUE) == 3
    assert await broker.depth(QUEUE) == 0
    assert await broker.depth("inventory.sku_processed") == 3  # another queue of the fanout keeps its copies
    with pytest.raises(LookupError, match=r"no queue 'no\.such\.queue'"):
        await broker.purge("no.such.queue")


async def test_a_queue_state_counts_ready_messages_and_the_consumers_of_every_client(make_broker: BrokerFactory):
    """What the orchestrator tells a backlog being worked by (messages ready, a consumer) from an owner that is
    down (no consumer): read by one client, the consumer another's."""
    broker = await make_broker()
    for n in range(3):
        await publish_event(broker, f"SKU-{n}")
    await wait_until(lambda: _equals(broker.queue_state(QUEUE), QueueState(ready=3, consumers=0)), what="3 ready")

    release = asyncio.Event()

    async def held(_: Message[SkuProcessed]) -> None:
        await release.wait()

    worker = await make_broker("worker")
    consumer = await worker.consume(sku_processed(QUEUE, held), prefetch=1)
    # One taken (unacked: no longer ready), two waiting their turn.
    await wait_until(lambda: _equals(broker.queue_state(QUEUE), QueueState(ready=2, consumers=1)), what="a backlog")
    assert await broker.depth(QUEUE) == 2
    release.set()
    await wait_until(lambda: _equals(broker.queue_state(QUEUE), QueueState(ready=0, consumers=1)), what="drained")
    await consumer.stop()
    assert await broker.queue_state(QUEUE) == QueueState(ready=0, consumers=0)
    with pytest.raises(LookupError, match=r"no queue 'no\.such\.queue'"):
        await broker.queue_state("no.such.queue")


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_prefetch_bounds_how_many_messages_are_handled_at_once(make_broker: BrokerFactory):
    broker = await make_broker()
    running = 0
    peak = 0

    async def busy(_: Message[SkuProcessed]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    events = [broker.envelope("sku_processed", SkuProcessed(sku=f"SKU-{n}")) for n in range(12)]
    await broker.publish_many([Outgoing(event, "sku_processed") for event in events])  # all waiting at once
    await broker.consume(sku_processed(QUEUE, busy), prefetch=3)
    await wait_until(lambda: broker.stats.acked == 12, what="all 12 handled")
    assert peak == 3


async def test_a_slow_message_never_holds_back_the_acks_of_those_handled_after_it(make_broker: BrokerFactory):
    """Acks go out together (RabbitMQ: one `basic.ack multiple` for a run of settled deliveries), but never
    wait for a slow one: held, they would fill the prefetch window and stall the consumer. When the slow one
    is done, one ack covers the run, and none is acked twice (RabbitMQ would close the channel, and every
    message still unacked on it would be handled again)."""
    broker = await make_broker()
    release = asyncio.Event()
    handled: list[str] = []

    async def slow_first(message: Message[SkuProcessed]) -> None:
        if message.body.sku == "SKU-0":
            await release.wait()
        handled.append(message.body.sku)

    events = [broker.envelope("sku_processed", SkuProcessed(sku=f"SKU-{n}")) for n in range(10)]
    await broker.publish_many([Outgoing(event, "sku_processed") for event in events])  # all waiting at once
    consumer = await broker.consume(sku_processed(QUEUE, slow_first), prefetch=3)
    await wait_until(lambda: broker.stats.acked == 9, what="the 9 after the slow one handled and acked")
    assert consumer.in_flight == 1

    release.set()
    await wait_until(lambda: broker.stats.acked == 10, what="the slow one acked too")
    await publish_event(broker, "SKU-10")  # the channel still delivers: no ack was refused
    await wait_until(lambda: broker.stats.acked == 11 and consumer.in_flight == 0, what="one more handled")
    await consumer.stop()  # whatever was left unacked would go back to the queue here

    assert sorted(handled) == sorted(f"SKU-{n}" for n in range(11))  # each once: nothing delivered again
    assert await broker.depth(QUEUE) == 0


async def test_a_handler_that_runs_too_long_is_retried(make_broker: BrokerFactory):
    import dataclasses

    broker = await make_broker(options=dataclasses.replace(TEST_OPTIONS, handler_timeout=0.1))
    attempts: list[int] = []

    async def slow_once(message: Message[SkuProcessed]) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            await asyncio.sleep(10)

    await broker.consume(sku_processed(QUEUE, slow_once))
    await publish_event(broker, "SKU-1")
    await wait_until(lambda: broker.stats.acked == 1, what="the second attempt to succeed")
    assert attempts == [1, 2]


async def test_consuming_needs_the_queue_and_its_retry_queues_declared(make_broker: BrokerFactory, broker_url: str):
    import dataclasses

    from skuflow.messaging import create_broker

    await make_broker(options=dataclasses.replace(TEST_OPTIONS, retry_delays=(7.0,)))  # declares .retry.7000ms

    async def handler(_: Message[SkuProcessed]) -> None:
        pass

    # A client with other retry delays, which did not declare its own wait queues, is told so at once.
    undeclared = create_broker(broker_url, "test", TEST_OPTIONS)
    await undeclared.connect()
    try:
        with pytest.raises(LookupError, match=r"retry\.200ms.*declare the topology"):
            await undeclared.consume(sku_processed(QUEUE, handler))
        with pytest.raises(LookupError, match=r"no queue 'no\.such\.queue'"):
            await undeclared.depth("no.such.queue")
    finally:
        await undeclared.close()
