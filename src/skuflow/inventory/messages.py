"""The messages inventory sends and receives, validated with its own models (CONTRACT section 2)."""

from __future__ import annotations

from typing import Annotated

import pydantic

from skuflow.platform.flows import ERROR_MAX_CHARS, Step
from skuflow.platform.identifiers import Identifier
from skuflow.platform.message_fields import MESSAGE_MODEL, REVISION_MAX


class SkuProcessed(pydantic.BaseModel):
    model_config = MESSAGE_MODEL
    sku: Identifier


class RecalculateSku(pydantic.BaseModel):
    """Orchestration's first command: recalculate a SKU's availability, then reply."""

    model_config = MESSAGE_MODEL
    sku: Identifier


# ... in a text column, where PostgreSQL holds any character but NUL.
StepError = Annotated[str, pydantic.Field(max_length=ERROR_MAX_CHARS, pattern=r"^[^\x00]*$")]


class StepFinished(pydantic.BaseModel):
    """A step owner's reply (CONTRACT section 2), as inventory validates it."""

    model_config = MESSAGE_MODEL
    flow_id: Identifier  # inventory's are 32 hex digits; any identifier fits its 64-character column
    sku: Identifier
    step: Step
    revision: Annotated[int, pydantic.Field(ge=0, le=REVISION_MAX)]  # 0: failed before any revision was known
    ok: bool
    error: StepError | None = None
