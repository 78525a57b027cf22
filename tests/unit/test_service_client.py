"""The one client of the services' APIs (the CLI's commands and `skuflow compare` use it): a token per
client asked once, every page of a list, readable refusals, and waiting until a condition holds."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from skuflow.platform.settings import Settings
from skuflow.service_client import ServiceClient, ServiceError, until


class FakeResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body

    async def json(self, content_type: str | None = None) -> Any:
        return self.body


class FakeHttp:
    """Answers each request with the next answer for its (method, path), and keeps what was asked."""

    def __init__(self, answers: dict[tuple[str, str], list[tuple[int, Any]]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str, dict[str, Any]]] = []

    @contextlib.asynccontextmanager
    async def request(self, method: str, url: str, **kwargs: Any) -> AsyncIterator[FakeResponse]:
        path = "/" + url.split("/", 3)[3]
        self.asked.append((method, path, kwargs))
        yield FakeResponse(*self.answers[method, path.split("?")[0]].pop(0))


def client(http: FakeHttp, tmp_path) -> ServiceClient:
    settings = Settings(data_dir=tmp_path, admin_secret=SecretStr("s3cret"), warehouse_secret=None)
    return ServiceClient(http, settings)  # type: ignore[arg-type]


async def test_a_clients_token_is_asked_once_and_sent_with_each_call(tmp_path):
    http = FakeHttp(
        {
            ("POST", "/v1/auth/token"): [(200, {"access_token": "t-1"})],
            ("GET", "/v1/flows"): [(200, {"items": [1]}), (200, {"items": [2]})],
        }
    )
    services = client(http, tmp_path)
    first = await services.call("GET", "inventory", "/v1/flows", as_client="admin")
    second = await services.call("GET", "inventory", "/v1/flows", as_client="admin")
    assert (first["items"], second["items"]) == ([1], [2])
    token_requests = [asked for asked in http.asked if asked[1] == "/v1/auth/token"]
    assert len(token_requests) == 1
    assert token_requests[0][2]["data"]["client_secret"] == "s3cret"
    assert all(kwargs["headers"]["Authorization"] == "Bearer t-1" for _, path, kwargs in http.asked[1:])


async def test_every_page_of_a_list_is_read_by_its_cursor(tmp_path):
    pages = [(200, {"items": [1, 2], "next_cursor": "c2"}), (200, {"items": [3], "next_cursor": None})]
    http = FakeHttp({("GET", "/v1/skus"): pages})
    assert await client(http, tmp_path).all("inventory", "/v1/skus", limit=2) == [1, 2, 3]
    assert [path for _, path, _ in http.asked] == ["/v1/skus?limit=2", "/v1/skus?limit=2&cursor=c2"]


async def test_a_refusal_reads_as_one_line_naming_the_service(tmp_path):
    problem = {"detail": [{"loc": ["body", "items", 0, "on_hand"], "msg": "Input should be >= 0", "input": -5}]}
    http = FakeHttp({("POST", "/v1/stock"): [(422, problem)]})
    with pytest.raises(ServiceError, match=r"^inventory refused the request \(422\): items\[0\]\.on_hand: "):
        await client(http, tmp_path).call("POST", "inventory", "/v1/stock", json={})


async def test_a_missing_secret_says_where_it_was_looked_for(tmp_path):
    with pytest.raises(ServiceError, match="no warehouse secret: SKUFLOW_WAREHOUSE_SECRET is unset"):
        await client(FakeHttp({}), tmp_path).token("warehouse")


async def test_until_waits_for_the_condition_and_gives_up_with_the_error_asked_for():
    looks = iter([False, False, True])

    async def ready() -> bool:
        return next(looks)

    await until(ready, "the third look", within=5, every=0)

    async def never() -> bool:
        return False

    class Late(Exception):
        pass

    with pytest.raises(Late, match="timed out waiting for nothing"):
        await until(never, "nothing", within=0.05, every=0.01, error=Late)
