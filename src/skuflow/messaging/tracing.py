"""Spans for sending and processing messages, to the OpenTelemetry semantic conventions for messaging, version
`SEMCONV_VERSION` (its RabbitMQ page; the messaging conventions are still marked Development there, and their
names move between versions: this version's are the ones written, and its schema URL names it).

- Sending: a PRODUCER span `publish {destination}` per message (`messaging.operation.type` `send`), from the
  publish until the broker confirms it, parented to the context the message was created in (kept in its
  `traceparent` header: an outbox row keeps the context of the transaction that wrote it), else to the
  current one. Its own context then goes in the message's `traceparent`/`tracestate` headers (W3C Trace
  Context), as the message's creation context.
- Processing: a CONSUMER span `process {destination}` per delivery, parented to that context, current while
  the handler runs (its database and HTTP spans are its children), ended at the settlement, with the
  delivery tag, the attempt and the outcome. A retry or a dead letter is published from inside it, so the
  next attempt, or the replay, stays in the trace.
- A batch handled together is one span (`handle {destination}`, a root of its own) linked to each message's
  processing span: each message keeps its own span in its own trace.

The broker's `tracing` does nothing until a tracer is given (`use`): then a message costs two spans.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from skuflow.messaging.broker import Message, Outgoing, Subscription
    from skuflow.messaging.envelope import Envelope

SEMCONV_VERSION = "1.44.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
TRACE_HEADERS = ("traceparent", "tracestate")
ATTEMPT = "skuflow.messaging.attempt"  # an attribute of ours: which delivery of the message this is (1 = first)
OUTCOME = "skuflow.messaging.outcome"  # acked, retried or dead_lettered

_w3c = TraceContextTextMapPropagator()


def sent_destination(exchange: str, routing_key: str) -> str:
    """`messaging.destination.name` when sending: `{exchange}:{routing key}`, an empty part left out, and
    `amq.default` for the default exchange without a key."""
    return ":".join(part for part in (exchange, routing_key) if part) or "amq.default"


def processed_destination(exchange: str, routing_key: str, queue: str) -> str:
    """`messaging.destination.name` when processing: `{exchange}:{routing key}:{queue}`, an empty part left
    out, and the routing key once when it is the queue's name."""
    key = "" if routing_key == queue else routing_key
    return ":".join(part for part in (exchange, key, queue) if part)


def current_trace_headers() -> dict[str, str]:
    """The current span's context as W3C headers (`traceparent`, `tracestate`); none outside a span. An
    envelope built inside a span carries them, through the outbox if it goes that way."""
    if not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    _w3c.inject(carrier)
    return carrier


def creation_context(headers: Mapping[str, Any]) -> Context | None:
    """The context a message was created in, from its W3C headers (None without a valid one)."""
    carrier = {name: _text(headers[name]) for name in TRACE_HEADERS if name in headers}
    if not carrier:
        return None
    context = _w3c.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


class MessageTracing:
    def __init__(self, system: str) -> None:
        """`system`: `messaging.system` (`rabbitmq`; the in-process broker says `memory`)."""
        self.system = system
        self.tracer: Tracer | None = None

    def use(self, tracer: Tracer | None) -> None:
        self.tracer = tracer

    def sending(self, messages: Sequence[Outgoing]) -> tuple[list[Outgoing], list[Span]]:
        """The messages with their creation context in their headers, and each one's started span."""
        from skuflow.messaging.broker import Outgoing

        assert self.tracer is not None
        traced: list[Outgoing] = []
        spans: list[Span] = []
        for outgoing in messages:
            envelope = outgoing.envelope
            destination = sent_destination(outgoing.exchange, outgoing.routing_key)
            attributes = self._about("send", "publish", destination, outgoing.routing_key, envelope)
            span = self.tracer.start_span(
                f"publish {destination}",
                context=creation_context(envelope.headers),  # None: the current context
                kind=SpanKind.PRODUCER,
                attributes=attributes,
            )
            carrier: dict[str, str] = {}
            _w3c.inject(carrier, context=trace.set_span_in_context(span))
            traced.append(Outgoing(envelope.with_headers(**carrier), outgoing.exchange, outgoing.routing_key))
            spans.append(span)
        return traced, spans

    @staticmethod
    def sent(
        spans: Sequence[Span], messages: Sequence[Outgoing], error: BaseException | None, refused: Mapping[str, str]
    ) -> None:
        """End the sending spans: confirmed, or refused (those `refused` names, by message id), or all failed."""
        for span, outgoing in zip(spans, messages, strict=True):
            reason = refused.get(outgoing.envelope.message_id) if refused else None
            if reason is not None or (error is not None and not refused):
                span.set_attribute("error.type", type(error).__name__ if error is not None else "_OTHER")
                span.set_status(Status(StatusCode.ERROR, reason or str(error)))
            span.end()

    @contextmanager
    def processing(
        self, subscription: Subscription[Any], envelope: Envelope, attempt: int, tag: int | None
    ) -> Iterator[Span]:
        """The delivery's span, current for the block."""
        assert self.tracer is not None
        destination = subscription.destination or subscription.queue
        attributes = self._about("process", "process", destination, subscription.routing_key, envelope)
        attributes[ATTEMPT] = attempt
        if tag is not None:
            attributes["messaging.rabbitmq.message.delivery_tag"] = tag
        span = self.tracer.start_span(
            f"process {destination}",
            context=creation_context(envelope.headers) or Context(),  # never the consumer's own context
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            yield span

    @contextmanager
    def batch(self, subscription: Subscription[Any], messages: Sequence[Message[Any]]) -> Iterator[None]:
        """One span for a batch handled together, linked to each message's processing span."""
        if self.tracer is None:
            yield
            return
        destination = subscription.destination or subscription.queue
        links = [Link(m.span.get_span_context()) for m in messages if m.span is not None]
        attributes = self._about("process", "process", destination, subscription.routing_key)
        attributes["messaging.batch.message_count"] = len(messages)
        with self.tracer.start_as_current_span(
            f"handle {destination}", context=Context(), kind=SpanKind.INTERNAL, links=links, attributes=attributes
        ):
            yield

    def _about(
        self, operation: str, name: str, destination: str, routing_key: str, envelope: Envelope | None = None
    ) -> dict[str, Any]:
        """The attributes every messaging span of the conventions carries, and one message's when it has one."""
        attributes: dict[str, Any] = {
            "messaging.system": self.system,
            "messaging.operation.type": operation,
            "messaging.operation.name": name,
            "messaging.destination.name": destination,
        }
        if routing_key:
            attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
        if envelope is not None:
            attributes["messaging.message.id"] = envelope.message_id
            attributes["messaging.message.conversation_id"] = envelope.correlation_id
            attributes["messaging.message.body.size"] = len(envelope.body)
        return attributes


def settled(span: Span, outcome: str, reason: str | None = None) -> None:
    span.set_attribute(OUTCOME, outcome)
    if reason is not None:
        span.set_attribute("error.type", "dead_lettered" if outcome == "dead_lettered" else "retried")
        span.set_status(Status(StatusCode.ERROR, reason))


def _text(value: Any) -> str:
    """A header as text (AMQP tables may carry bytes): `envelope.text`'s twin, which this module cannot import
    (the envelope imports it, to carry the trace context from the moment it is built)."""
    return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else str(value or "")
