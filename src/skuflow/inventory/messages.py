"""The messages inventory sends and receives, validated with its own models (CONTRACT section 2)."""

from __future__ import annotations

import pydantic

SKU_PROCESSED = "sku_processed"
RECALCULATE_SKU = "recalculate_sku"


class SkuProcessed(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    sku: str = pydantic.Field(min_length=1, max_length=64)


class RecalculateSku(pydantic.BaseModel):
    """Orchestration's first command: recalculate a SKU's availability, then reply."""

    model_config = pydantic.ConfigDict(extra="forbid")
    sku: str = pydantic.Field(min_length=1, max_length=64)
