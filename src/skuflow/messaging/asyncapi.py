"""The messaging topology as an AsyncAPI 3.0.0 document, built from the route table (`routes.py`), never
written by hand: `skuflow asyncapi` prints it, and every service serves it at `GET /asyncapi.json`.

- Channels: one per exchange and routing key a message is published with (AMQP binding `is: routingKey`,
  the routing key as its address, none for a fanout exchange; named as the spans name the destination,
  `{exchange}` or `{exchange}:{routing key}`), one per work queue (`is: queue`; its exchange and binding
  key in `x-binding`), and one per dead-letter queue `Q.dlq`.
- Operations: `publish.<type>` (send, by its producers), `consume.<queue>` (receive, by its consumer; an
  orchestration step's with its reply, `step_finished`), `dead_letter.<queue>` (send, by the consumer's
  policy, through the default exchange). Who sends and who
  receives: the operation's tags and its `x-producers` or `x-consumer`.
- The wait queues `Q.retry.<ms>ms` are not channels: each work queue's description and its `x-wait-queues`
  name them, for the default `SKUFLOW_RETRY_DELAYS` (a service configured otherwise has others).
- Messages: the body's JSON Schema as the payload, the AMQP headers table as `headers`, and the envelope's
  AMQP properties (message id, correlation id, type, app id, timestamp, content type, delivery mode) in
  `x-amqp-properties`, since AsyncAPI has no place of its own for them.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from skuflow.messaging.broker import DEFAULT_RETRY_DELAYS
from skuflow.messaging.envelope import ATTEMPTS, CAUSATION_ID, CONTENT_TYPE, DEATHS, ORIGINAL_QUEUE, REASON, RETRIES
from skuflow.messaging.routes import FLOW_REPLIES, MESSAGE_TYPES, ROUTES, STEP_FINISHED, STEPS, MessageType, Route
from skuflow.messaging.topology import dead_letter_queue, wait_queues
from skuflow.messaging.tracing import sent_destination

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
Format = Literal["json", "yaml"]

_PERSISTENT = 2  # AMQP delivery mode: every message is persistent, every queue and exchange durable
_SERVER = "rabbitmq"


def document(
    routes: Iterable[Route] = ROUTES,
    message_types: Iterable[MessageType] = MESSAGE_TYPES,
    retry_delays: Iterable[float] = DEFAULT_RETRY_DELAYS,
) -> dict[str, Any]:
    """The AsyncAPI document of `routes` and `message_types`, with the wait queues of `retry_delays`."""
    routes, message_types, delays = tuple(routes), tuple(message_types), tuple(retry_delays)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages = {message.name: _message(message) for message in message_types}

    for message in message_types:
        keys = dict.fromkeys(route.queue.routing_key for route in routes if route.message == message)
        for key in keys:
            channel = sent_destination(message.exchange.name, key)
            published = channels.setdefault(channel, _exchange_channel(message, key))
            published["messages"][message.name] = _ref("components", "messages", message.name)
            operation = f"publish.{message.name}" if len(keys) == 1 else f"publish.{message.name}.{key}"
            operations[operation] = {
                "action": "send",
                "channel": _ref("channels", channel),
                "summary": f"{message.name}, sent by {', '.join(message.producers)}",
                "description": message.summary,
                "messages": [_ref("channels", channel, "messages", message.name)],
                "tags": [{"name": producer} for producer in message.producers],
                "bindings": {
                    "amqp": {
                        "deliveryMode": _PERSISTENT,
                        "mandatory": True,
                        "timestamp": True,
                        "bindingVersion": AMQP_BINDING_VERSION,
                    }
                },
                "x-producers": list(message.producers),
            }

    for route in routes:
        queue, message, dlq = route.queue.name, route.message, dead_letter_queue(route.queue.name)
        _unique(channels, queue)
        channels[queue] = _queue_channel(route, delays)
        _unique(channels, dlq)
        channels[dlq] = {
            "address": dlq,
            "title": dlq,
            "description": (
                f"The dead letters of `{queue}`: messages that can never succeed there (wrong type, invalid "
                f"body, rejected by the handler) or failed every retry, each with `{REASON}`, `{ATTEMPTS}` and "
                f"`{ORIGINAL_QUEUE}`. Read by `skuflow dlq list`, put back by `skuflow dlq replay`."
            ),
            "messages": {message.name: _ref("components", "messages", message.name)},
            "bindings": {"amqp": _queue_binding(dlq)},
        }
        operations[f"consume.{queue}"] = {
            "action": "receive",
            "channel": _ref("channels", queue),
            "summary": f"{message.name} from {queue}, received by {route.consumer}",
            "description": (
                f"{message.summary} Acked once the handler returns; a failure waits in a wait queue and "
                f"comes back, and after the last retry, or at once if it can never succeed, goes to `{dlq}`."
            ),
            "messages": [_ref("channels", queue, "messages", message.name)],
            "tags": [{"name": route.consumer}],
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
            "x-consumer": route.consumer,
        }
        replies = sent_destination(STEP_FINISHED.exchange.name, FLOW_REPLIES)
        if message.name in STEPS and replies in channels:  # an orchestration step's command: its owner replies
            operations[f"consume.{queue}"]["reply"] = {
                "channel": _ref("channels", replies),
                "messages": [_ref("channels", replies, "messages", STEP_FINISHED.name)],
            }
        operations[f"dead_letter.{queue}"] = {
            "action": "send",
            "channel": _ref("channels", dlq),
            "summary": f"{message.name} dead-lettered from {queue}, sent by {route.consumer}",
            "description": f"A copy published to `{dlq}` through the default exchange, then the original acked.",
            "messages": [_ref("channels", dlq, "messages", message.name)],
            "tags": [{"name": route.consumer}],
            "bindings": {"amqp": {"deliveryMode": _PERSISTENT, "bindingVersion": AMQP_BINDING_VERSION}},
            "x-consumer": route.consumer,
        }

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "skuflow",
            "version": importlib.metadata.version("skuflow"),
            "description": (
                "The messages inventory, catalog and users exchange over RabbitMQ, generated from "
                "`skuflow.messaging.routes` (`skuflow asyncapi`; `GET /asyncapi.json` on every service). Every "
                "exchange and queue is durable, every message persistent and confirmed."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            _SERVER: {
                "host": "{host}:{port}",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "RabbitMQ (SKUFLOW_BROKER_URL); the in-process broker (memory://) behaves the same.",
                "variables": {"host": {"default": "127.0.0.1"}, "port": {"default": "5672"}},
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render(doc: Mapping[str, Any], format: Format = "json") -> str:
    """The document as JSON (indented) or YAML (block style, in the document's order)."""
    if format == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False)
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no type hints

    plain = json.loads(json.dumps(doc))  # shared objects as copies: no YAML anchors and aliases
    text: str = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, width=120)
    return text


def _exchange_channel(message: MessageType, routing_key: str) -> dict[str, Any]:
    exchange = message.exchange
    how = "every queue bound to it gets a copy" if exchange.kind == "fanout" else f"routing key `{routing_key}`"
    return {
        "address": routing_key or None,  # a fanout exchange takes no routing key
        "title": f"{exchange.name} ({exchange.kind})",
        "description": f"Published to the {exchange.kind} exchange `{exchange.name}`: {how}.",
        "messages": {},
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {"name": exchange.name, "type": exchange.kind, "durable": True, "autoDelete": False},
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }


def _queue_channel(route: Route, delays: tuple[float, ...]) -> dict[str, Any]:
    queue, exchange = route.queue, route.queue.exchange
    waits = wait_queues(queue.name, delays)
    key = "(none: fanout)" if exchange.kind == "fanout" else f"`{queue.routing_key}`"
    return {
        "address": queue.name,
        "title": queue.name,
        "description": (
            f"{route.consumer}'s queue of {route.message.name}, bound to `{exchange.name}` ({exchange.kind}), "
            f"binding key {key}. A message to retry waits in one of {', '.join(f'`{w}`' for w in waits)} "
            "(one per delay of the default `SKUFLOW_RETRY_DELAYS`; each expires back into this queue); "
            f"dead letters go to `{dead_letter_queue(queue.name)}`."
        ),
        "messages": {route.message.name: _ref("components", "messages", route.message.name)},
        "bindings": {"amqp": _queue_binding(queue.name)},
        "x-binding": {"exchange": exchange.name, "bindingKey": queue.routing_key},
        "x-wait-queues": waits,
        "x-dead-letter-queue": dead_letter_queue(queue.name),
    }


def _queue_binding(name: str) -> dict[str, Any]:
    return {
        "is": "queue",
        "queue": {"name": name, "durable": True, "exclusive": False, "autoDelete": False},
        "bindingVersion": AMQP_BINDING_VERSION,
    }


def _message(message: MessageType) -> dict[str, Any]:
    return {
        "name": message.name,
        "title": message.name,
        "summary": message.summary,
        "contentType": CONTENT_TYPE,
        "payload": _plain(message.schema),
        "headers": _headers(message),
        "bindings": {"amqp": {"messageType": message.name, "bindingVersion": AMQP_BINDING_VERSION}},
        "x-amqp-properties": _properties(message),
    }


def _headers(message: MessageType) -> dict[str, Any]:
    """The AMQP headers table: the message type's own, then the envelope's, then those of retries and dead
    letters. Other headers may be present (another publisher's); none of these is read from the body."""
    own = {
        name: {"description": "The message type's own header.", **_plain(schema)}
        for name, schema in message.headers.items()
    }
    return {
        "type": "object",
        "properties": {
            **own,
            CAUSATION_ID: {
                "type": "string",
                "description": "The message id of the message, or the X-Request-ID of the request, that caused "
                "this one; absent when neither did.",
            },
            "traceparent": {
                "type": "string",
                "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                "description": "W3C Trace Context: the publishing span's context, when tracing is on.",
            },
            "tracestate": {"type": "string", "description": "W3C Trace Context, with `traceparent`."},
            RETRIES: {
                "type": "integer",
                "minimum": 1,
                "description": "skuflow's count of trips through the queue's wait queues, set on a retried copy.",
            },
            DEATHS: {
                "type": "array",
                "items": {"type": "object"},
                "description": "RabbitMQ's record of expiries from the wait queues (its dead-lettering).",
            },
            REASON: {"type": "string", "description": "On a dead letter: why it was dead-lettered."},
            ATTEMPTS: {"type": "integer", "minimum": 1, "description": "On a dead letter: attempts made."},
            ORIGINAL_QUEUE: {"type": "string", "description": "On a dead letter: the work queue it came from."},
        },
        **({"required": list(own)} if own else {}),
    }


def _properties(message: MessageType) -> dict[str, Any]:
    """The envelope's AMQP properties, as a JSON Schema of their values."""
    return {
        "type": "object",
        "properties": {
            "message_id": {"type": "string", "description": "Unique per message (a retry keeps it)."},
            "correlation_id": {"type": "string", "description": "The flow: the X-Correlation-ID that started it."},
            "type": {"const": message.name},
            "app_id": {"enum": list(message.producers), "description": "The service that published it."},
            "timestamp": {"type": "integer", "description": "When it was created, in seconds since the epoch."},
            "content_type": {"const": CONTENT_TYPE},
            "delivery_mode": {"const": _PERSISTENT},
        },
        "required": ["message_id", "correlation_id", "type", "app_id", "timestamp", "content_type", "delivery_mode"],
    }


def _ref(*path: str) -> dict[str, str]:
    """A reference to the document's own `path` (JSON Pointer, RFC 6901)."""
    return {"$ref": "#/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in path)}


def _plain(value: Any) -> Any:
    """A copy in plain dicts and lists (the route table's schemas share parts and may be any Mapping)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _unique(channels: Mapping[str, Any], name: str) -> None:
    if name in channels:
        raise ValueError(f"two channels would be named {name!r}")
