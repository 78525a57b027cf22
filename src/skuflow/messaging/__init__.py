"""The messaging layer: one API over RabbitMQ (`amqp://`) and an in-process broker (`memory://`).

It imports no service: services import it, and share message *contracts* (names, bodies), not code.

    broker = create_broker("amqp://guest:guest@127.0.0.1:5672/", app_id="catalog")
    async with broker:
        await broker.declare(SKUFLOW)
        await broker.consume(routes.CATALOG_SKU_PROCESSED.bind(SkuProcessed, handle_messages))
        await broker.publish_many([routes.sku_processed("SKU-1")])

The route of every message (exchange, queue, type, body schema, producer, consumer) is `routes.py`.
"""

from skuflow.messaging import routes
from skuflow.messaging.broker import (
    DEFAULT_RETRY_DELAYS,
    Broker,
    BrokerOptions,
    BrokerStats,
    Consumer,
    Handler,
    Message,
    Outgoing,
    PublishError,
    PublishRefused,
    QueueState,
    Reject,
    Subscription,
)
from skuflow.messaging.context import FlowContext, current_flow, flow_scope, new_id
from skuflow.messaging.envelope import Envelope
from skuflow.messaging.routes import COMMANDS, FLOW_ID, FLOW_REPLIES, ROUTES, SKUFLOW, MessageType, Route
from skuflow.messaging.topology import Exchange, Queue, Topology, dead_letter_queue, wait_queue

__all__ = [
    "COMMANDS",
    "DEFAULT_RETRY_DELAYS",
    "FLOW_ID",
    "FLOW_REPLIES",
    "ROUTES",
    "SKUFLOW",
    "Broker",
    "BrokerOptions",
    "BrokerStats",
    "Consumer",
    "Envelope",
    "Exchange",
    "FlowContext",
    "Handler",
    "Message",
    "MessageType",
    "Outgoing",
    "PublishError",
    "PublishRefused",
    "Queue",
    "QueueState",
    "Reject",
    "Route",
    "Subscription",
    "Topology",
    "create_broker",
    "current_flow",
    "dead_letter_queue",
    "flow_scope",
    "new_id",
    "routes",
    "wait_queue",
]


def create_broker(url: str, app_id: str, options: BrokerOptions | None = None) -> Broker:
    """A broker client for `url` (not yet connected): `amqp://`/`amqps://` for RabbitMQ, `memory://`."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("amqp", "amqps"):
        from skuflow.messaging.amqp import AmqpBroker

        return AmqpBroker(url, app_id, options)
    if scheme == "memory":
        from skuflow.messaging.memory import MemoryBroker

        return MemoryBroker(url, app_id, options)
    raise ValueError(f"unsupported broker URL {url!r}: use amqp://user:password@host:port/vhost or memory://")
