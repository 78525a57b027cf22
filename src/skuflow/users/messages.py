"""The messages users receives, validated with its own models (CONTRACT section 2)."""

from __future__ import annotations

import pydantic

SKU_PROCESSED = "sku_processed"
UPDATE_WISHLISTS_FOR_SKU = "update_wishlists_for_sku"


class SkuProcessed(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    sku: str = pydantic.Field(min_length=1, max_length=64)


class UpdateWishlistsForSku(pydantic.BaseModel):
    """Orchestration's command: inventory's recalculated availability, so that users need not ask."""

    model_config = pydantic.ConfigDict(extra="forbid")
    sku: str = pydantic.Field(min_length=1, max_length=64)
    available_for_sale: int = pydantic.Field(ge=0)
    revision: int = pydantic.Field(ge=1)
