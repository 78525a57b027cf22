"""The messages users receives, validated with its own models (CONTRACT section 2)."""

from __future__ import annotations

import pydantic

from skuflow.platform.identifiers import Identifier
from skuflow.platform.message_fields import MESSAGE_MODEL, AvailableForSale, Revision


class SkuProcessed(pydantic.BaseModel):
    model_config = MESSAGE_MODEL
    sku: Identifier


class UpdateWishlistsForSku(pydantic.BaseModel):
    """Orchestration's command: inventory's recalculated availability, so that users need not ask."""

    model_config = MESSAGE_MODEL
    sku: Identifier
    available_for_sale: AvailableForSale
    revision: Revision
