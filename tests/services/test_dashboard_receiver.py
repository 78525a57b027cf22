"""The dashboard's receiver: the services export their spans over OTLP/HTTP (the real exporter, as with
`OTEL_EXPORTER_OTLP_ENDPOINT`), and a flow's timeline is read back by its correlation id; bodies that are not
an export are refused with the reason, and nothing is kept of them."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import aiohttp
import pytest

from skuflow.dashboard.app import MAX_BODY, build_app
from skuflow.platform import telemetry
from tests.conftest import Stack
from tests.services.conftest import System
from tests.support.servers import RunningServer, serve
from tests.support.waiting import wait_until


@pytest.fixture
async def dashboard(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningServer]:
    """The dashboard on a free port, and every service built after it exporting there (ask before `system`)."""
    server = await serve(build_app())
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", server.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # ms: the batches go at once, the test need not wait
    try:
        yield server
    finally:
        telemetry.reset()
        await server.stop()


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
async def test_services_export_their_spans_to_the_dashboard_and_a_flow_is_read_back(
    dashboard: RunningServer, system: System, stack: Stack
):
    warehouse = await system.client_token()
    body = {"warehouse_id": "WH-1", "items": [{"sku": "SKU-O", "on_hand": 2}]}
    headers = {"X-Correlation-ID": "otlp-1"}
    status, _, _ = await system.call("POST", "/v1/stock", token=warehouse, json=body, headers=headers)
    assert status == 202

    async def flow() -> dict:
        async with system.http.get(f"{dashboard.url}/api/flows/otlp-1") as response:
            return await response.json() if response.status == 200 else {}

    async def every_service() -> bool:
        return {"inventory", "catalog", "users"} <= set((await flow()).get("services", []))

    await wait_until(every_service, timeout=20, what="the flow's spans from every service, over OTLP")
    drawn = await flow()
    assert drawn["correlation_id"] == "otlp-1"
    assert {span["kind"] for span in drawn["spans"]} >= {"server", "producer", "consumer"}
    async with system.http.get(f"{dashboard.url}/api/flows") as response:
        assert "otlp-1" in (await response.json())["items"]


async def test_what_is_not_an_export_is_refused_naming_why():
    server = await serve(build_app())
    protobuf = {"Content-Type": "application/x-protobuf"}
    try:
        async with aiohttp.ClientSession() as http:

            async def post(data: bytes, headers: dict[str, str]) -> tuple[int, str]:
                async with http.post(f"{server.url}/v1/traces", data=data, headers=headers) as response:
                    return response.status, await response.text()

            assert (await post(b"{}", {"Content-Type": "application/json"}))[0] == 415
            status, text = await post(b"\xff\xfe garbage", protobuf)
            assert (status, "not an OTLP" in text) == (400, True)
            assert (await post(b"x" * (MAX_BODY + 1), protobuf))[0] == 413
            bomb = gzip.compress(b"\0" * (MAX_BODY + 1))  # a few kilobytes that unzip past the bound
            assert (await post(bomb, {**protobuf, "Content-Encoding": "gzip"}))[0] == 413
            assert (await post(b"not gzip", {**protobuf, "Content-Encoding": "gzip"}))[0] == 400
            assert (await post(b"", protobuf))[0] == 200  # an empty export is an export of nothing
            async with http.get(f"{server.url}/api/flows/not%20an%20id") as response:
                assert response.status == 422
            async with http.get(f"{server.url}/api/flows/unknown") as response:
                assert response.status == 404
            async with http.get(f"{server.url}/api/flows?limit=0") as response:
                assert response.status == 422
            async with http.get(f"{server.url}/api/flows") as response:
                assert (await response.json())["items"] == []
        assert server.app.state.store.received == 0, "nothing kept of what was refused"
    finally:
        await server.stop()
