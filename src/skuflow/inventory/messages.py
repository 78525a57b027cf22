"""The messages inventory sends and receives, validated with its own models (CONTRACT section 2)."""

from __future__ import annotations

import pydantic

from skuflow.platform.identifiers import Identifier
from skuflow.platform.message_fields import MESSAGE_MODEL

SKU_PROCESSED = "sku_processed"
RECALCULATE_SKU = "recalculate_sku"


class SkuProcessed(pydantic.BaseModel):
    model_config = MESSAGE_MODEL
    sku: Identifier


class RecalculateSku(pydantic.BaseModel):
    """Orchestration's first command: recalculate a SKU's availability, then reply."""

    model_config = MESSAGE_MODEL
    sku: Identifier
