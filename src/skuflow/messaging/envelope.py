"""The envelope every message travels in (CONTRACT section 2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pydantic
import pydantic_core

from skuflow.messaging.context import current_flow, new_id
from skuflow.messaging.tracing import current_trace_headers

CONTENT_TYPE = "application/json"

# Header names; the AMQP properties carry the rest of the envelope.
CAUSATION_ID = "causation_id"
REASON = "x-reason"
ATTEMPTS = "x-attempts"
DEATHS = "x-death"
ORIGINAL_QUEUE = "x-original-queue"
RETRIES = "skuflow-retries"  # our own count of trips through the wait queues (see consumer.py)

Body = pydantic.BaseModel | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message: its JSON body and the properties that say what it is and where it comes from.

    Immutable, and the same on every broker: what a consumer receives is what the producer built,
    plus whatever headers the broker added on the way (`x-death`, `x-reason`, ...).
    """

    type: str
    body: bytes
    app_id: str
    message_id: str
    correlation_id: str
    causation_id: str | None
    timestamp: datetime
    headers: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        type: str,
        body: Body,
        *,
        app_id: str,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> Envelope:
        """Build a message, taking the correlation and causation ids from the current flow when not given."""
        flow = current_flow()
        if correlation_id is None:
            correlation_id = flow.correlation_id if flow else new_id()
        if causation_id is None and flow is not None:
            causation_id = flow.causation_id
        return cls(
            type=type,
            body=encode_body(body),
            app_id=app_id,
            message_id=new_id(),
            correlation_id=correlation_id,
            causation_id=causation_id,
            # AMQP timestamps have a resolution of one second: keep what survives the trip.
            timestamp=datetime.now(UTC).replace(microsecond=0),
            # Inside a span: its context, which the publish's span continues (after the outbox, if any).
            headers=MappingProxyType({**current_trace_headers(), **(headers or {})}),
        )

    def with_headers(self, **extra: Any) -> Envelope:
        return replace(self, headers=MappingProxyType({**self.headers, **extra}))

    def replayed(self) -> Envelope:
        """The same message without the marks of its failed attempts, to be handled afresh (a dead letter
        replayed once its cause is fixed gets every attempt again)."""
        spent = {DEATHS, RETRIES, REASON, ATTEMPTS, ORIGINAL_QUEUE}
        return replace(self, headers=MappingProxyType({k: v for k, v in self.headers.items() if k not in spent}))

    def json(self) -> Any:
        """The body, decoded (for inspection; consumers validate with their own model)."""
        return pydantic_core.from_json(self.body)


def text(value: Any) -> str:
    """A header value as text (AMQP tables may carry bytes, in any encoding a publisher chose)."""
    return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else str(value or "")


def encode_body(body: Body) -> bytes:
    if isinstance(body, pydantic.BaseModel):
        return body.model_dump_json().encode()
    return pydantic_core.to_json(dict(body))
