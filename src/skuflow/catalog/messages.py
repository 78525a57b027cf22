"""The messages catalog receives, validated with its own models (CONTRACT section 2)."""

from __future__ import annotations

import pydantic

from skuflow.catalog.domain import SKU_PATTERN

SKU_PROCESSED = "sku_processed"


class SkuProcessed(pydantic.BaseModel):
    """Inventory changed a SKU's numbers: `{"sku"}`, nothing else (ask inventory for the rest)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    sku: str = pydantic.Field(pattern=SKU_PATTERN)
