"""A step's reply in the orchestrated flow (CONTRACT sections 2 and 7), for every service that owns a step.

The owner of a step performs its command idempotently, commits, and then replies `step_finished` to
`inventory.flow_replies` before the command is acknowledged. A crash between the commit and the reply
redelivers the command: performing it again changes nothing, and the reply goes out then (the orchestrator
takes each step's first reply and ignores the others).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import pydantic

from skuflow.messaging import COMMANDS, FLOW_ID, FLOW_REPLIES, Message
from skuflow.platform.runtime import ServiceRuntime

log = logging.getLogger("skuflow.flows")

STEP_FINISHED = "step_finished"
Step = Literal["recalculate_sku", "update_sku_availability", "update_wishlists_for_sku"]


class StepFinished(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    flow_id: str
    sku: str
    step: Step
    revision: int
    ok: bool
    error: str | None = None


async def finish_step(
    runtime: ServiceRuntime,
    command: Message[Any],
    step: Step,
    sku: str,
    revision: int,
    error: str | None = None,
) -> None:
    """Reply that `step` is done for the command's flow (or failed, with `error`), in the command's flow."""
    flow_id = command.envelope.headers.get(FLOW_ID)
    if not flow_id:
        log.warning("%s for %s carries no %s header: done, but no flow to tell", step, sku, FLOW_ID)
        return
    reply = StepFinished(flow_id=str(flow_id), sku=sku, step=step, revision=revision, ok=error is None, error=error)
    await runtime.broker.publish(runtime.broker.envelope(STEP_FINISHED, reply), COMMANDS.name, FLOW_REPLIES)
