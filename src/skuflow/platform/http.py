"""The one HTTP client of a process, for calls between services.

aiohttp, chosen on figures: under 50 concurrent requests httpx's connection pool fell to ~350-400
requests/s on this machine kind, while aiohttp's held ~1,000-1,200 events/s in the same storm
(../shared/FIELD-NOTES.md). One session per process: keep-alive connections, bounded timeouts, and a
bounded retry for requests that are safe to repeat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp

from skuflow.messaging import current_flow

log = logging.getLogger("skuflow.http")

RETRYABLE_STATUS = frozenset({502, 503, 504})


class ServiceUnavailable(Exception):
    """Another service could not be reached, or kept failing, within the bounds."""


def new_session(traces: Sequence[aiohttp.TraceConfig] = ()) -> aiohttp.ClientSession:
    """`traces`: what watches each request (the metrics' count, the tracing's spans)."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=10, connect=3),
        connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=30),
        raise_for_status=False,
        trace_configs=list(traces) or None,
    )


async def call_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    json: Any = None,
    attempts: int = 3,
) -> tuple[int, Any]:
    """Send a JSON request (carrying the flow's correlation id); retry connection errors and 502/503/504.

    Only for requests that are safe to repeat. Returns the status and the decoded body.
    """
    headers = {"Accept": "application/json"}
    flow = current_flow()
    if flow is not None:
        headers["X-Correlation-ID"] = flow.correlation_id
    delay = 0.1
    for attempt in range(1, attempts + 1):
        try:
            async with session.request(method, url, json=json, headers=headers) as response:
                if response.status in RETRYABLE_STATUS and attempt < attempts:
                    raise ServiceUnavailable(f"{method} {url} answered {response.status}")
                return response.status, await _json_or_none(response)
        except (aiohttp.ClientError, TimeoutError, ServiceUnavailable) as error:
            if attempt == attempts:
                raise ServiceUnavailable(f"{method} {url} failed after {attempts} attempts: {error!r}") from error
            log.warning("%s %s failed (%r); retrying in %.1fs", method, url, error, delay)
            await asyncio.sleep(delay)
            delay *= 4
    raise AssertionError("unreachable")


async def _json_or_none(response: aiohttp.ClientResponse) -> Any:
    """The body as JSON; None when there is none or it is not JSON (a proxy's or a crash's error page)."""
    if response.content_length == 0:
        return None
    try:
        return await response.json(content_type=None)
    except ValueError:
        return None
