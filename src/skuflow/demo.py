"""`skuflow demo`: one event's round trip through the broker, visible, until `skuflow up` exists.

Declares the system's topology, listens on the three `sku_processed` queues as inventory, catalog and
users will, publishes one `sku_processed` event as inventory does, and shows each queue receiving it with
its envelope; then a consumer answers with a command, which shows the flow's ids carried along.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pydantic

from skuflow.messaging import SKUFLOW, Broker, Message, create_broker, flow_scope, new_id, routes
from skuflow.messaging.broker import BatchHandler
from skuflow.platform.settings import Settings, without_password


class SkuProcessed(pydantic.BaseModel):
    sku: str


class RecalculateSku(pydantic.BaseModel):
    sku: str


LISTENERS = ("inventory", "catalog", "users")


ROUND_TRIP_SECONDS = 15.0


class RoundTripError(Exception):
    """The round trip did not complete: the broker is unreachable, or a delivery did not come in time."""


async def round_trip(settings: Settings, sku: str, say: Callable[[str], None]) -> int:
    """Returns the number of deliveries seen (4: three events and one command); raises `RoundTripError`."""
    try:
        return await _round_trip(settings, sku, say)
    except TimeoutError:
        raise RoundTripError(f"the round trip did not complete within {ROUND_TRIP_SECONDS:.0f} s") from None
    except OSError as error:
        raise RoundTripError(f"cannot reach the broker at {without_password(settings.broker_url)}: {error}") from None


async def _round_trip(settings: Settings, sku: str, say: Callable[[str], None]) -> int:
    brokers: list[Broker] = []
    seen: asyncio.Queue[str] = asyncio.Queue()
    try:
        for app_id in LISTENERS:
            broker = create_broker(settings.broker_url, app_id, settings.broker_options())
            await broker.connect()
            await broker.declare(SKUFLOW)
            brokers.append(broker)
        inventory = brokers[0]

        def listener(route: routes.Route) -> BatchHandler[SkuProcessed]:
            async def on_events(messages: Sequence[Message[SkuProcessed]]) -> None:
                for message in messages:
                    env = message.envelope
                    await seen.put(
                        f"[bold]{route.name}[/] got {message.body!r} (message_id={env.message_id[:8]}…, "
                        f"correlation_id={env.correlation_id}, app_id={env.app_id})"
                    )
                    if route.consumer == "inventory":
                        command = routes.recalculate_sku(
                            message.body.sku, flow_id="demo", correlation_id=env.correlation_id
                        )
                        await inventory.publish_many([command])

            return on_events

        async def on_commands(messages: Sequence[Message[RecalculateSku]]) -> None:
            for message in messages:
                env = message.envelope
                cause = (env.causation_id or "")[:8]
                await seen.put(
                    f"[bold]{routes.INVENTORY_RECALCULATE_SKU.name}[/] got {message.body!r} "
                    f"(correlation_id={env.correlation_id}, causation_id={cause}…)"
                )

        listened = (routes.INVENTORY_SKU_PROCESSED, routes.CATALOG_SKU_PROCESSED, routes.USERS_SKU_PROCESSED)
        for broker, route in zip(brokers, listened, strict=True):
            await broker.consume(route.bind(SkuProcessed, listener(route)))
        await inventory.consume(routes.INVENTORY_RECALCULATE_SKU.bind(RecalculateSku, on_commands))

        correlation_id = f"demo-{new_id()[:8]}"
        with flow_scope(correlation_id):
            await inventory.publish_many([routes.sku_processed(sku)])
        broker_shown = without_password(settings.broker_url)
        say(f"published sku_processed {{'sku': {sku!r}}} via {broker_shown} (correlation_id={correlation_id})")

        received = 0
        async with asyncio.timeout(ROUND_TRIP_SECONDS):
            while received < len(LISTENERS) + 1:
                say(await seen.get())
                received += 1
        return received
    finally:
        for broker in brokers:
            await broker.close()
