"""The flow a piece of work belongs to, carried in a context variable.

An HTTP request or a consumed message binds its correlation id (the flow) and its own id (the cause of
whatever it publishes); envelopes built inside that scope pick both up, so a handler's own publishes are
linked to the message that caused them without passing ids around by hand.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FlowContext:
    correlation_id: str
    causation_id: str | None = None


_current: ContextVar[FlowContext | None] = ContextVar("skuflow_flow_context", default=None)


def new_id() -> str:
    """A fresh, unique id for messages, requests and flows."""
    return uuid.uuid4().hex


def current_flow() -> FlowContext | None:
    return _current.get()


class flow_scope:
    """Bind a flow for the duration of the block (and every task started inside it).

    A class rather than a generator-based context manager: it runs once per message, and this is cheaper."""

    __slots__ = ("_context", "_token")

    def __init__(self, correlation_id: str, causation_id: str | None = None) -> None:
        self._context = FlowContext(correlation_id, causation_id)

    def __enter__(self) -> FlowContext:
        self._token = _current.set(self._context)
        return self._context

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)
