"""A step's reply in the orchestrated flow (CONTRACT sections 2 and 7), for every service that owns a step.

The owner of a step performs its command idempotently, commits, and then replies `step_finished` to
`inventory.flow_replies` before the command is acknowledged. A crash between the commit and the reply
redelivers the command: performing it again changes nothing, and the reply goes out then (the orchestrator
takes each step's first reply and ignores the others).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from skuflow.messaging import FLOW_ID, Message, Outgoing, Reject, routes
from skuflow.messaging.broker import Publish
from skuflow.platform.identifiers import IDENTIFIER_RULE, is_identifier

log = logging.getLogger("skuflow.flows")

Step = Literal["recalculate_sku", "update_sku_availability", "update_wishlists_for_sku"]

ERROR_MAX_CHARS = 1000  # an owner's reason in words (stored in the flow as it is)


class StepReplies:
    """How a step's owner (`sender`) replies `step_finished`: straight to the broker (`publish`)."""

    def __init__(self, sender: str, publish: Publish) -> None:
        self.sender = sender
        self._publish = publish

    async def finish(
        self, command: Message[Any], step: Step, sku: str, revision: int, error: str | None = None
    ) -> None:
        """Reply that `step` is done for the command's flow (or failed, with `error`), in the command's flow.

        A `flow_id` header that no reply may carry is `Reject`ed: the command is done (and idempotent), and its
        dead letter says why no reply went out, rather than being retried to no end."""
        await self.send([self.reply(command, step, sku, revision, error)])

    def reply(
        self, command: Message[Any], step: Step, sku: str, revision: int, error: str | None = None
    ) -> Outgoing | None:
        """The reply `finish` sends, to send with others (`send`); `Reject` as `finish`."""
        return step_finished(command, step, sku, revision, error, sender=self.sender)

    async def finish_each(self, commands: Sequence[Message[Any]], step: Step) -> None:
        """Reply to each command that `step` is done at the revision it carried (`body.sku`, `body.revision`),
        together; `Reject` as `finish`."""
        await self.send([self.reply(command, step, command.body.sku, command.body.revision) for command in commands])

    async def send(self, replies: Sequence[Outgoing | None]) -> None:
        """Send replies together (None: a command that names no flow, to which nobody waits for a reply)."""
        ready = [reply for reply in replies if reply is not None]
        if ready:
            await self._publish(ready)


def step_finished(
    command: Message[Any], step: Step, sku: str, revision: int, error: str | None, *, sender: str
) -> Outgoing | None:
    """The reply to `command` (None: it names no flow to reply to); `Reject` if its flow id cannot be one."""
    header = command.envelope.headers.get(FLOW_ID)
    if not header:
        log.warning("%s for %s carries no %s header: done, but no flow to tell", step, sku, FLOW_ID)
        return None
    # AMQP tables may carry bytes, numbers, lists...: only text can be a flow id.
    flow_id = header.decode(errors="replace") if isinstance(header, bytes | bytearray) else header
    if not isinstance(flow_id, str):
        flow_id = ""
    if not is_identifier(flow_id):
        raise Reject(f"the {FLOW_ID} header {header!r:.80} is not a flow id ({IDENTIFIER_RULE}): no reply sent")
    error = error[:ERROR_MAX_CHARS].replace("\x00", "\ufffd") if error is not None else None
    return routes.step_finished(
        flow_id=flow_id, sku=sku, step=step, revision=revision, error=error, sender=sender, command=command.envelope
    )
