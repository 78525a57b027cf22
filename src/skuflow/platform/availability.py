"""Asking inventory for a SKU's availability (CONTRACT section 3: `GET /v1/skus/{sku}/availability`), as
catalog and users do when a `sku_processed` event arrives and when they reconcile: one client of inventory's
public API, with its own model of the answer, so that no service imports another."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import aiohttp
import pydantic

from skuflow.platform.http import ServiceUnavailable, call_json


class Availability(NamedTuple):
    """Whether a SKU is available for sale, at inventory's revision of it."""

    available: bool
    revision: int


class UnexpectedAnswer(Exception):
    """Inventory answered in a way the contract does not foresee (retried, then dead-lettered)."""


class AvailabilitySource(Protocol):
    async def availability(self, sku: str) -> Availability | None:
        """The SKU's availability; None when inventory does not know the SKU."""


class _Answer(pydantic.BaseModel):
    """The part of inventory's answer that its clients use."""

    available: bool
    revision: int = pydantic.Field(ge=1)


class InventoryAvailability:
    """`AvailabilitySource` over HTTP. `http` gives the process's session (it exists once the service runs)."""

    def __init__(self, inventory_url: str, http: Callable[[], aiohttp.ClientSession]) -> None:
        self.inventory_url = inventory_url.rstrip("/")
        self._http = http

    async def availability(self, sku: str) -> Availability | None:
        url = f"{self.inventory_url}/v1/skus/{sku}/availability"
        status, body = await call_json(self._http(), "GET", url)  # ServiceUnavailable: unreachable
        if status == 404:
            return None
        if status >= 500:
            raise ServiceUnavailable(f"GET {url} answered {status}")
        if status != 200:
            raise UnexpectedAnswer(f"GET {url} answered {status}: {body!r:.200}")
        try:
            answer = _Answer.model_validate(body)
        except pydantic.ValidationError as error:
            raise UnexpectedAnswer(f"GET {url} answered 200 with an unusable body: {error}") from None
        return Availability(answer.available, answer.revision)
