"""A step's reply in the orchestrated flow (CONTRACT sections 2 and 7), for every service that owns a step.

The owner of a step performs its command idempotently, commits, and then replies `step_finished` to
`inventory.flow_replies` before the command is acknowledged. A crash between the commit and the reply
redelivers the command: performing it again changes nothing, and the reply goes out then (the orchestrator
takes each step's first reply and ignores the others).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import pydantic

from skuflow.messaging import COMMANDS, FLOW_ID, FLOW_REPLIES, Message, Reject
from skuflow.platform.identifiers import IDENTIFIER_RULE, Identifier, is_identifier
from skuflow.platform.message_fields import MESSAGE_MODEL, REVISION_MAX
from skuflow.platform.runtime import ServiceRuntime

log = logging.getLogger("skuflow.flows")

STEP_FINISHED = "step_finished"
Step = Literal["recalculate_sku", "update_sku_availability", "update_wishlists_for_sku"]

ERROR_MAX_CHARS = 1000  # an owner's reason in words (stored in the flow as it is)
# ... in a text column, where PostgreSQL holds any character but NUL.
StepError = Annotated[str, pydantic.Field(max_length=ERROR_MAX_CHARS, pattern=r"^[^\x00]*$")]


class StepFinished(pydantic.BaseModel):
    """A step owner's reply (CONTRACT section 2), as the owners build it and as inventory validates it."""

    model_config = MESSAGE_MODEL
    flow_id: Identifier  # inventory's are 32 hex digits; any identifier fits its 64-character column
    sku: Identifier
    step: Step
    revision: Annotated[int, pydantic.Field(ge=0, le=REVISION_MAX)]  # 0: failed before any revision was known
    ok: bool
    error: StepError | None = None


async def finish_step(
    runtime: ServiceRuntime,
    command: Message[Any],
    step: Step,
    sku: str,
    revision: int,
    error: str | None = None,
) -> None:
    """Reply that `step` is done for the command's flow (or failed, with `error`), in the command's flow.

    A `flow_id` header that no reply may carry is `Reject`ed: the command is done (and idempotent), and its
    dead letter says why no reply went out, rather than being retried to no end."""
    header = command.envelope.headers.get(FLOW_ID)
    if not header:
        log.warning("%s for %s carries no %s header: done, but no flow to tell", step, sku, FLOW_ID)
        return
    # AMQP tables may carry bytes, numbers, lists...: only text can be a flow id.
    flow_id = header.decode(errors="replace") if isinstance(header, bytes | bytearray) else header
    if not isinstance(flow_id, str):
        flow_id = ""
    if not is_identifier(flow_id):
        raise Reject(f"the {FLOW_ID} header {header!r:.80} is not a flow id ({IDENTIFIER_RULE}): no reply sent")
    error = error[:ERROR_MAX_CHARS].replace("\x00", "\ufffd") if error is not None else None
    reply = StepFinished(flow_id=flow_id, sku=sku, step=step, revision=revision, ok=error is None, error=error)
    await runtime.broker.publish(runtime.broker.envelope(STEP_FINISHED, reply), COMMANDS.name, FLOW_REPLIES)
