"""One load generator of `skuflow bench stock`, a process of its own (`python -m skuflow.bench.stock.client`): an
aiohttp client on uvloop keeping `in_flight` stock reports in flight, one SKU each, closed loop (the next one sent
as one is answered), so that the generator, spread over processes, is not what limits the rate.

It reads its `Plan` as one JSON line on stdin, prints `ready` once it can send, and starts sending when a second
line arrives: the measured window's start (epoch seconds), the reports before it being the warm-up. It counts the
reports started in the window (for `seconds`, or `requests` of them), waits for their answers, and prints its
`Tally` as one JSON line.

Every report records something: its SKU is new (`skus` 0), or the SKU's number differs from its previous report's,
as of a later moment. Each of the reports in flight has SKUs of its own (`SKU-<client>-<sender>-<n>`), reported
one after another, so that two reports of one SKU are never in flight at once, where the later could be recorded
first and make the earlier stale.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp

from skuflow.platform.event_loop import run_in

AS_OF = datetime(2020, 1, 1, tzinfo=UTC)  # the first report's moment; each next one a millisecond later
REQUEST_SECONDS = 60.0  # for one answer, all told


@dataclass(frozen=True)
class Plan:
    url: str  # POST /v1/stock's
    token: str  # the warehouse's bearer token
    client: int  # this generator's number, in its SKUs' names
    in_flight: int  # senders, each sending a report once its previous one is answered
    skus: int  # SKUs it cycles over, shared out among its senders; 0: a new SKU in every report
    seconds: float  # the measured window, unless `requests`
    requests: int  # reports started in the window; 0: by `seconds`

    def report(self, sender: int, n: int) -> bytes:
        """The sender's n-th report: a SKU of its own, at a number other than the SKU's previous report's, as of a
        later moment."""
        own = share(self.skus, self.in_flight, sender)
        round_, sku = divmod(n, own) if own else (0, n)
        body = {
            "warehouse_id": "WH-1",
            "as_of": (AS_OF + timedelta(milliseconds=n)).isoformat(),
            "items": [{"sku": f"SKU-{self.client}-{sender}-{sku}", "on_hand": round_ + 1}],
        }
        return json.dumps(body).encode()


def share(total: int, parts: int, part: int) -> int:
    """Part `part`'s share of `total` shared out among `parts`, the first ones taking one more when it does not
    divide."""
    return total // parts + (part < total % parts)


@dataclass
class Tally:
    """What the reports of the measured window got, and what the window cost this process."""

    pid: int = field(default_factory=os.getpid)
    answers_ms: list[float] = field(default_factory=list)  # of the 2xx answers
    errors: Counter[str] = field(default_factory=Counter)  # any other answer, by status or exception
    stale: int = 0  # 2xx answers that recorded nothing new
    seconds: float = 0.0  # the window's start to its last answer
    cpu_seconds: float = 0.0  # this process's, over the window
    peak_rss_mb: float = 0.0


class Window:
    """Which reports to send and which of them count: those started from `start` (monotonic seconds) on, for
    the plan's seconds or requests."""

    def __init__(self, plan: Plan, start: float) -> None:
        self.plan = plan
        self.start = start
        self.counted = 0  # reports started in the window
        self.last = start  # the window's last answer
        self.tally = Tally()

    def next(self) -> bool | None:
        """Whether the next report counts; None once the window has had its reports: send no more."""
        if time.monotonic() < self.start:
            return False  # the warm-up
        if self.plan.requests:
            if self.counted >= self.plan.requests:
                return None
        elif time.monotonic() >= self.start + self.plan.seconds:
            return None
        self.counted += 1
        return True

    def record(self, started: float, status: int | str, body: bytes) -> None:
        now = time.monotonic()
        self.last = max(self.last, now)
        if isinstance(status, int) and 200 <= status < 300:
            self.tally.answers_ms.append(round((now - started) * 1000, 3))
            self.tally.stale += json.loads(body).get("stale", 0)
        else:
            self.tally.errors[str(status)] += 1


async def main(plan: Plan) -> Tally:
    headers = {"Authorization": f"Bearer {plan.token}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=plan.in_flight)
    timeout = aiohttp.ClientTimeout(total=REQUEST_SECONDS)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        print("ready", flush=True)
        at = float(await asyncio.to_thread(sys.stdin.readline))
        window = Window(plan, time.monotonic() + at - time.time())

        async def keep_sending(sender: int) -> None:
            n = 0
            while (counts := window.next()) is not None:
                report, n = plan.report(sender, n), n + 1
                started = time.monotonic()
                try:
                    async with http.post(plan.url, data=report, headers=headers) as response:
                        status: int | str = response.status
                        body = await response.read()
                except (aiohttp.ClientError, TimeoutError) as error:
                    status, body = type(error).__name__, b""
                if counts:
                    window.record(started, status, body)

        async def cpu_at_start() -> float:
            await asyncio.sleep(max(0.0, window.start - time.monotonic()))
            return time.process_time()

        cpu_start = asyncio.create_task(cpu_at_start())
        await asyncio.gather(*(keep_sending(sender) for sender in range(plan.in_flight)))
    tally = window.tally
    tally.cpu_seconds = round(time.process_time() - await cpu_start, 3)
    tally.seconds = window.last - window.start
    tally.peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    return tally


if __name__ == "__main__":
    plan = Plan(**json.loads(sys.stdin.readline()))
    print(json.dumps(asdict(run_in("uvloop", main(plan)))), flush=True)
