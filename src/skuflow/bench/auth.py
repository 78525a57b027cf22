"""`skuflow bench auth`: what each way of verifying a token costs, each beside a baseline in the same run.

The system: `skuflow serve users` and `skuflow serve inventory`, each in a process of its own on scratch
stacks of RabbitMQ and PostgreSQL (as deployed), or with `embedded` `skuflow up` (one process, the in-process
broker and SQLite). The callers run in this process, each a closed loop (the next call as soon as the last
answered), for `seconds` after a warm-up, at 1 and at 50 callers. Measured, each pair back to back:

- `rest`: `POST /v1/auth/verify` on users, as inventory asks it (`RestAsk`), beside `rest baseline`: users'
  `GET /healthz`, an endpoint of the same server stack that answers a constant;
- `grpc`: `skuflow.auth.v1.Auth/Verify` over one channel (`GrpcAsk`), beside `grpc baseline`: the standard
  health `Check` on the same server and channel;
- `cache hit`: the verifier itself (`TokenVerifier.verify`) with the answer cached: no call at all;
- `protected` and `unprotected`: inventory's `GET /v1/flows?limit=1` (scope `stock:write`, its verifier's
  cache warm) and `GET /v1/skus?limit=1` (public): one empty page each, read the same way. Inventory has no
  endpoint that is both; these two are the nearest pair, so the ratio bounds what the check adds.

Each figure: calls per second, and each call's latency p50 / p99 (ms). The ratios: grpc / rest and each
against its baseline (calls/s), protected / unprotected (p50 latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table

from skuflow.bench.e2e.figures import BenchError
from skuflow.bench.e2e.stack import StackChoice, scratch_stack
from skuflow.bench.e2e.system import running, users_and_inventory
from skuflow.platform.auth import TokenVerifier
from skuflow.platform.settings import Settings
from skuflow.platform.token_transports import GrpcAsk, RestAsk
from skuflow.service_client import ServiceClient

CALLERS = (1, 50)
SUBJECTS = ("rest", "rest baseline", "grpc", "grpc baseline", "cache hit", "protected", "unprotected")
RATIOS = (  # (name, side, baseline, figure): calls/s ratios, and the latency ratio of the protected endpoint
    ("grpc / rest", "grpc", "rest", "calls_per_second"),
    ("rest / its baseline", "rest", "rest baseline", "calls_per_second"),
    ("grpc / its baseline", "grpc", "grpc baseline", "calls_per_second"),
    ("protected / unprotected (p50)", "protected", "unprotected", "p50_ms"),
)

Call = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Figures:
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


@dataclass
class AuthReport:
    seconds: float
    runs: int
    callers: tuple[int, ...]
    stack: str  # "postgresql": `skuflow serve` per service; "embedded": `skuflow up`
    # measured[callers][subject]: one Figures per run
    measured: dict[int, dict[str, list[Figures]]] = field(default_factory=dict)

    def median(self, callers: int, subject: str, figure: str) -> float:
        return float(statistics.median(getattr(one, figure) for one in self.measured[callers][subject]))

    def ratio(self, callers: int, side: str, baseline: str, figure: str) -> float:
        """The median of the runs' ratios: each pair was measured back to back."""
        pairs = zip(self.measured[callers][side], self.measured[callers][baseline], strict=True)
        return float(statistics.median(getattr(a, figure) / getattr(b, figure) for a, b in pairs))

    def as_dict(self) -> dict[str, object]:
        summary = {
            str(callers): {
                subject: {
                    "calls_per_second": self.median(callers, subject, "calls_per_second"),
                    "p50_ms": self.median(callers, subject, "p50_ms"),
                    "p99_ms": self.median(callers, subject, "p99_ms"),
                    "runs": [asdict(one) for one in self.measured[callers][subject]],
                }
                for subject in SUBJECTS
            }
            for callers in self.callers
        }
        ratios = {
            str(callers): {name: self.ratio(callers, side, base, figure) for name, side, base, figure in RATIOS}
            for callers in self.callers
        }
        return {
            "seconds": self.seconds,
            "runs": self.runs,
            "callers": list(self.callers),
            "stack": self.stack,
            "figures": summary,
            "ratios": ratios,
        }

    def table(self) -> Table:
        table = Table(
            title=f"bench auth ({self.stack}): {self.runs} run(s) of {self.seconds:g} s a figure, closed-loop callers",
            caption="medians of the runs; ratios: the median of each run's pair",
        )
        table.add_column("subject")
        for callers in self.callers:
            table.add_column(f"{callers} caller(s): calls/s", justify="right")
            table.add_column("p50 / p99 ms", justify="right")
        for subject in SUBJECTS:
            cells = []
            for callers in self.callers:
                cells.append(f"{self.median(callers, subject, 'calls_per_second'):,.0f}")
                p50, p99 = self.median(callers, subject, "p50_ms"), self.median(callers, subject, "p99_ms")
                cells.append(f"{p50:.2f} / {p99:.2f}")
            table.add_row(subject, *cells)
        for name, side, base, figure in RATIOS:
            cells = []
            for callers in self.callers:
                cells += [f"{self.ratio(callers, side, base, figure):.2f}x", ""]
            table.add_row(name, *cells, style="bold")
        return table


async def measure(call: Call, callers: int, seconds: float, warmup: float) -> Figures:
    """`callers` closed loops of `call` for `warmup` then `seconds`; only the second span is counted."""
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    end = start + seconds

    async def caller() -> None:
        while (now := loop.time()) < end:
            await call()
            if now >= start:
                latencies.append(loop.time() - now)

    await asyncio.gather(*(caller() for _ in range(callers)))
    if not latencies:
        return Figures(0, seconds, 0.0, 0.0)
    latencies.sort()
    return Figures(len(latencies), seconds, 1000 * _at(latencies, 0.50), 1000 * _at(latencies, 0.99))


def _at(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(
    seconds: float,
    warmup: float,
    runs: int,
    callers: tuple[int, ...],
    progress: Callable[[str], None],
    choice: StackChoice | None = None,
) -> AuthReport:
    """`choice`: the RabbitMQ and PostgreSQL to make scratch stacks on; None: embedded (`skuflow up`)."""
    report = AuthReport(seconds, runs, callers, "embedded" if choice is None else "postgresql")
    async with _system(choice) as calls:
        for number in range(1, runs + 1):
            for count in callers:
                into = report.measured.setdefault(count, {subject: [] for subject in SUBJECTS})
                for subject in SUBJECTS:
                    figures = await measure(calls[subject], count, seconds, warmup)
                    into[subject].append(figures)
                    progress(
                        f"run {number}/{runs}, {count} caller(s), {subject}: {figures.calls_per_second:,.0f} calls/s, "
                        f"p50 {figures.p50_ms:.2f} ms"
                    )
    return report


@contextlib.asynccontextmanager
async def _system(choice: StackChoice | None) -> AsyncIterator[dict[str, Call]]:
    """The system under test, in processes of its own, and each subject's call against it."""
    with tempfile.TemporaryDirectory(prefix="skuflow-bench-auth-") as folder:
        scratch = Path(folder)
        if choice is None:
            async with (
                scratch_stack(StackChoice("memory://")) as stack,
                running("choreography", scratch, stack) as up,
                _calls(up.settings, up.client) as calls,
            ):
                yield calls
        else:
            async with users_and_inventory(scratch, choice) as served, _calls(served.settings, served.client) as calls:
                yield calls


@contextlib.asynccontextmanager
async def _calls(settings: Settings, client: ServiceClient) -> AsyncIterator[dict[str, Call]]:
    token = await client.token("warehouse")
    http = client.http
    users, inventory = settings.users_url, settings.inventory_url
    over_rest = RestAsk(users, http)
    over_grpc = GrpcAsk(settings.users_grpc)
    channel = grpc.aio.insecure_channel(settings.users_grpc)
    health = health_pb2_grpc.HealthStub(channel)
    verifier = TokenVerifier(over_rest, cache_seconds=3600)
    bearer = {"Authorization": f"Bearer {token}"}

    async def get(url: str, headers: dict[str, str] | None = None) -> None:
        async with http.get(url, headers=headers) as response:
            if response.status != 200:
                raise BenchError(f"GET {url} answered {response.status}: {await response.text()}")
            await response.read()

    async def verified(ask: Callable[[str], Awaitable[object]]) -> None:
        if await ask(token) is None:
            raise BenchError("the warehouse's token was answered invalid")

    try:
        await verified(verifier.verify)  # and now it is cached
        yield {
            "rest": lambda: verified(over_rest),
            "rest baseline": lambda: get(f"{users}/healthz"),
            "grpc": lambda: verified(over_grpc),
            "grpc baseline": lambda: health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5),
            "cache hit": lambda: verified(verifier.verify),
            "protected": lambda: get(f"{inventory}/v1/flows?limit=1", bearer),
            "unprotected": lambda: get(f"{inventory}/v1/skus?limit=1"),
        }
    finally:
        await over_grpc.close()
        await channel.close()
