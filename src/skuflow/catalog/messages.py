"""The messages catalog receives, validated with its own models (CONTRACT section 2)."""

from __future__ import annotations

import pydantic

from skuflow.catalog.domain import SKU_PATTERN

SKU_PROCESSED = "sku_processed"
UPDATE_SKU_AVAILABILITY = "update_sku_availability"


class SkuProcessed(pydantic.BaseModel):
    """Inventory changed a SKU's numbers: `{"sku"}`, nothing else (ask inventory for the rest)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    sku: str = pydantic.Field(pattern=SKU_PATTERN)


class UpdateSkuAvailability(pydantic.BaseModel):
    """Orchestration's command: inventory's recalculated availability, so that catalog need not ask."""

    model_config = pydantic.ConfigDict(extra="forbid")
    sku: str = pydantic.Field(pattern=SKU_PATTERN)
    available_for_sale: int = pydantic.Field(ge=0)
    revision: int = pydantic.Field(ge=1)
