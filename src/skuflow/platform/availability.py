"""Asking inventory for a SKU's availability (CONTRACT section 3: `GET /v1/skus/{sku}/availability`), as
catalog and users do when a `sku_processed` event arrives and when they reconcile: one client of inventory's
public API, with its own model of the answer, so that no service imports another."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import urlencode

import aiohttp
import pydantic

from skuflow.platform.http import ServiceUnavailable, call_json


class Availability(NamedTuple):
    """Whether a SKU is available for sale, at inventory's revision of it."""

    available: bool
    revision: int


def newest(news: Iterable[tuple[str, Availability]]) -> dict[str, Availability]:
    """Each SKU's availability at the newest revision among `news` (several commands of one batch, say)."""
    kept: dict[str, Availability] = {}
    for sku, availability in news:
        if sku not in kept or availability.revision > kept[sku].revision:
            kept[sku] = availability
    return kept


class UnexpectedAnswer(Exception):
    """Inventory answered in a way the contract does not foresee (retried, then dead-lettered)."""


class AvailabilitySource(Protocol):
    async def availability(self, sku: str) -> Availability | None:
        """The SKU's availability; None when inventory does not know the SKU."""

    async def availabilities(self, skus: Sequence[str]) -> dict[str, Availability]:
        """The availability of each SKU inventory knows among `skus` (those it does not know are left out)."""


AnswerT = TypeVar("AnswerT", bound=pydantic.BaseModel)


class _Answer(pydantic.BaseModel):
    """The part of inventory's answer that its clients use."""

    available: bool
    revision: int = pydantic.Field(ge=1)


class _Listed(_Answer):
    sku: str


class _Page(pydantic.BaseModel):
    items: list[_Listed]


PAGE = 500  # SKUs per look-up: the most a page of `GET /v1/skus` holds


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
        answer = _read(_Answer, url, status, body)
        return Availability(answer.available, answer.revision)

    async def availabilities(self, skus: Sequence[str]) -> dict[str, Availability]:
        """One call per PAGE SKUs (`GET /v1/skus?sku=...`), where each SKU alone would be one call."""
        wanted = sorted(set(skus))
        found: dict[str, Availability] = {}
        for start in range(0, len(wanted), PAGE):
            chunk = wanted[start : start + PAGE]
            asked = set(chunk)
            query = urlencode([("limit", PAGE), *(("sku", sku) for sku in chunk)])
            url = f"{self.inventory_url}/v1/skus?{query}"
            status, body = await call_json(self._http(), "GET", url)
            for item in _read(_Page, url.split("?")[0], status, body).items:
                if item.sku in asked:  # what was asked, nothing else
                    found[item.sku] = Availability(item.available, item.revision)
        return found


def _read(model: type[AnswerT], url: str, status: int, body: Any) -> AnswerT:
    if status >= 500:
        raise ServiceUnavailable(f"GET {url} answered {status}")
    if status != 200:
        raise UnexpectedAnswer(f"GET {url} answered {status}: {body!r:.200}")
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as error:
        raise UnexpectedAnswer(f"GET {url} answered 200 with an unusable body: {error}") from None
