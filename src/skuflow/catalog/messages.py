"""The messages catalog receives, validated with its own models (CONTRACT section 2)."""

from __future__ import annotations

import pydantic

from skuflow.platform.identifiers import Identifier
from skuflow.platform.message_fields import MESSAGE_MODEL, AvailableForSale, Revision


class SkuProcessed(pydantic.BaseModel):
    """Inventory changed a SKU's numbers: `{"sku"}`, nothing else (ask inventory for the rest)."""

    model_config = MESSAGE_MODEL
    sku: Identifier


class UpdateSkuAvailability(pydantic.BaseModel):
    """Orchestration's command: inventory's recalculated availability, so that catalog need not ask."""

    model_config = MESSAGE_MODEL
    sku: Identifier
    available_for_sale: AvailableForSale
    revision: Revision
