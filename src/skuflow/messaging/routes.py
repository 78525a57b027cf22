"""Every message of skuflow and its route, in one table (CONTRACT section 2): read it top to bottom.

For each message type: the exchange it is published to, who produces it, and the contract's JSON Schemas of
its body and of its own headers. For each queue: its exchange and binding, the one message type it carries,
and the service that consumes it. Everything else is derived from this table: the topology every service
declares (`SKUFLOW`), the subscriptions each service makes (`Route.bind`), the typed constructors publishers
build messages with (`sku_processed(sku)`, ...), the route table of `docs/architecture.md` and the AsyncAPI
document (`asyncapi.py`).

Services name services here only as the strings of the contract (producer, consumer): the messaging layer
still imports no service, and each service validates bodies with its own model (a test holds each model to
the schema written here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic

from skuflow.messaging.broker import BatchHandler, Outgoing, Subscription
from skuflow.messaging.envelope import Envelope
from skuflow.messaging.topology import Exchange, Queue, Topology
from skuflow.messaging.tracing import processed_destination

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)

FLOW_ID = "flow_id"  # the header of a command naming its flow
MAX_BATCH = 100  # messages a handler takes at once, at most


@dataclass(frozen=True, slots=True)
class MessageType:
    name: str  # the envelope's `type`
    exchange: Exchange
    producers: tuple[str, ...]
    schema: Mapping[str, Any]  # the contract's JSON Schema of the body
    summary: str
    # Headers of its own (name -> JSON Schema), required, besides the envelope's that every message may carry
    headers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Route:
    """A queue, the message type it carries, and the service that consumes it."""

    queue: Queue
    message: MessageType
    consumer: str

    def __post_init__(self) -> None:
        if self.queue.exchange != self.message.exchange:
            raise ValueError(f"{self.queue.name} is bound to {self.queue.exchange.name}, not {self.message.name}'s")

    @property
    def name(self) -> str:
        return self.queue.name

    def bind(
        self, model: type[ModelT], handler: BatchHandler[ModelT], max_batch: int = MAX_BATCH
    ) -> Subscription[ModelT]:
        """The subscription of `handler` to this queue, validating bodies with the consumer's own `model`;
        `handler` takes the messages that arrive together (at most `max_batch`, and never more than the
        consumer's prefetch holds)."""
        queue = self.queue
        destination = processed_destination(queue.exchange.name, queue.routing_key, queue.name)
        return Subscription.batched(
            queue.name,
            self.message.name,
            model,
            handler,
            max_batch,
            destination=destination,
            routing_key=queue.routing_key,
        )


# -- The bodies' rules (CONTRACT sections 2 and 7; docs/contract.md) ----------------------------------------

_IDENTIFIER = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"}
_REVISION = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
_AVAILABLE_FOR_SALE = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
_COMMAND_HEADERS = {  # a command names its flow
    FLOW_ID: {**_IDENTIFIER, "description": "The command's flow; a command without it is performed without a reply."}
}
STEPS = ("recalculate_sku", "update_sku_availability", "update_wishlists_for_sku")


def _body(**properties: Mapping[str, Any]) -> Mapping[str, Any]:
    """An object of exactly these fields, all required unless their schema allows null."""
    required = [name for name, schema in properties.items() if "null" not in str(schema.get("type"))]
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


# -- Exchanges ----------------------------------------------------------------------------------------------

SKU_EVENTS = Exchange("sku_processed", "fanout")
COMMANDS = Exchange("commands", "direct")

# -- Message types ------------------------------------------------------------------------------------------

SKU_PROCESSED = MessageType(
    "sku_processed",
    SKU_EVENTS,
    producers=("inventory",),
    schema=_body(sku=_IDENTIFIER),
    summary="Choreography: a SKU's numbers changed; each consumer asks inventory for the rest.",
)
RECALCULATE_SKU = MessageType(
    "recalculate_sku",
    COMMANDS,
    producers=("inventory",),
    schema=_body(sku=_IDENTIFIER),
    summary="Orchestration, step 1: recalculate the SKU's availability for sale, then reply.",
    headers=_COMMAND_HEADERS,
)
_NEWS = _body(sku=_IDENTIFIER, available_for_sale=_AVAILABLE_FOR_SALE, revision=_REVISION)  # what step 1 found
UPDATE_SKU_AVAILABILITY = MessageType(
    "update_sku_availability",
    COMMANDS,
    producers=("inventory",),
    schema=_NEWS,
    summary="Orchestration, step 2: mark the product available or not, then reply.",
    headers=_COMMAND_HEADERS,
)
UPDATE_WISHLISTS_FOR_SKU = MessageType(
    "update_wishlists_for_sku",
    COMMANDS,
    producers=("inventory",),
    schema=_NEWS,
    summary="Orchestration, step 3: record availability for the wishlists, email if it became available.",
    headers=_COMMAND_HEADERS,
)
STEP_FINISHED = MessageType(
    "step_finished",
    COMMANDS,
    producers=("inventory", "catalog", "users"),
    schema=_body(
        flow_id=_IDENTIFIER,
        sku=_IDENTIFIER,
        step={"type": "string", "enum": list(STEPS)},
        revision={"type": "integer", "minimum": 0, "maximum": 2**31 - 1},  # 0: failed before any revision
        ok={"type": "boolean"},
        error={"type": ["string", "null"], "maxLength": 1000, "pattern": "^[^\\x00]*$"},
    ),
    summary="Orchestration: a step's owner replies that the step is done (or failed, with the error).",
)
MESSAGE_TYPES = (SKU_PROCESSED, RECALCULATE_SKU, UPDATE_SKU_AVAILABILITY, UPDATE_WISHLISTS_FOR_SKU, STEP_FINISHED)

# -- Queues: who consumes what ------------------------------------------------------------------------------

INVENTORY_SKU_PROCESSED = Route(Queue("inventory.sku_processed", SKU_EVENTS), SKU_PROCESSED, "inventory")
CATALOG_SKU_PROCESSED = Route(Queue("catalog.sku_processed", SKU_EVENTS), SKU_PROCESSED, "catalog")
USERS_SKU_PROCESSED = Route(Queue("users.sku_processed", SKU_EVENTS), SKU_PROCESSED, "users")
INVENTORY_RECALCULATE_SKU = Route(Queue("inventory.recalculate_sku", COMMANDS), RECALCULATE_SKU, "inventory")
CATALOG_UPDATE_SKU_AVAILABILITY = Route(
    Queue("catalog.update_sku_availability", COMMANDS), UPDATE_SKU_AVAILABILITY, "catalog"
)
USERS_UPDATE_WISHLISTS_FOR_SKU = Route(
    Queue("users.update_wishlists_for_sku", COMMANDS), UPDATE_WISHLISTS_FOR_SKU, "users"
)
INVENTORY_FLOW_REPLIES = Route(Queue("inventory.flow_replies", COMMANDS), STEP_FINISHED, "inventory")

ROUTES = (
    INVENTORY_SKU_PROCESSED,
    CATALOG_SKU_PROCESSED,
    USERS_SKU_PROCESSED,
    INVENTORY_RECALCULATE_SKU,
    CATALOG_UPDATE_SKU_AVAILABILITY,
    USERS_UPDATE_WISHLISTS_FOR_SKU,
    INVENTORY_FLOW_REPLIES,
)
FLOW_REPLIES = INVENTORY_FLOW_REPLIES.name

SKUFLOW = Topology(exchanges=(SKU_EVENTS, COMMANDS), queues=tuple(route.queue for route in ROUTES))
"""The topology every service declares: the queues of the table, on their exchanges."""


def consumed_by(service: str) -> tuple[Route, ...]:
    return tuple(route for route in ROUTES if route.consumer == service)


# -- Typed constructors: how publishers build each message --------------------------------------------------


def sku_processed(sku: str) -> Outgoing:
    return _outgoing(SKU_PROCESSED, {"sku": sku}, app_id="inventory")


def recalculate_sku(sku: str, *, flow_id: str, correlation_id: str) -> Outgoing:
    return _command(RECALCULATE_SKU, {"sku": sku}, flow_id, correlation_id)


def update_sku_availability(
    sku: str, *, available_for_sale: int, revision: int, flow_id: str, correlation_id: str
) -> Outgoing:
    news = {"sku": sku, "available_for_sale": available_for_sale, "revision": revision}
    return _command(UPDATE_SKU_AVAILABILITY, news, flow_id, correlation_id)


def update_wishlists_for_sku(
    sku: str, *, available_for_sale: int, revision: int, flow_id: str, correlation_id: str
) -> Outgoing:
    news = {"sku": sku, "available_for_sale": available_for_sale, "revision": revision}
    return _command(UPDATE_WISHLISTS_FOR_SKU, news, flow_id, correlation_id)


def step_finished(
    *, flow_id: str, sku: str, step: str, revision: int, error: str | None, sender: str, command: Envelope
) -> Outgoing:
    """A step owner's reply (`sender`: the owner) to `command`, in the command's flow and caused by it."""
    body = {"flow_id": flow_id, "sku": sku, "step": step, "revision": revision, "ok": error is None, "error": error}
    ids = {"correlation_id": command.correlation_id, "causation_id": command.message_id}
    return _outgoing(STEP_FINISHED, body, app_id=sender, routing_key=FLOW_REPLIES, **ids)


def _command(message: MessageType, body: dict[str, Any], flow_id: str, correlation_id: str) -> Outgoing:
    (route,) = (route for route in ROUTES if route.message == message)
    return _outgoing(
        message,
        body,
        app_id="inventory",
        routing_key=route.queue.routing_key,
        correlation_id=correlation_id,
        headers={FLOW_ID: flow_id},
    )


def _outgoing(message: MessageType, body: dict[str, Any], *, app_id: str, routing_key: str = "", **kw: Any) -> Outgoing:
    assert app_id in message.producers, f"{app_id} does not produce {message.name}"
    assert set(kw.get("headers") or ()) == set(message.headers), f"{message.name}'s headers are {message.headers}"
    return Outgoing(Envelope.new(message.name, body, app_id=app_id, **kw), message.exchange.name, routing_key)
