"""One run's load and its figures: the generator processes (`client`) started, told at once when the measured
window begins (after the warm-up), and their tallies gathered; the CPU of the processes under load read from
/proc over the same window (the generators report their own: one may end before the bench looks)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from skuflow.bench.e2e.figures import BenchError, percentiles
from skuflow.bench.processes import ProcessFigures, Watch
from skuflow.bench.stock.client import Plan, share
from skuflow.bench.stock.figures import StockRun, StockWorkload
from skuflow.bench.stock.targets import Target

READY_SECONDS = 30.0  # for a generator to start and say it is ready


async def measure(system: str, turn: int, target: Target, workload: StockWorkload, scratch: Path) -> StockRun:
    plans = [
        Plan(
            url=target.url,
            token=target.token,
            client=client,
            in_flight=share(workload.concurrency, workload.clients, client),
            skus=share(workload.skus, workload.clients, client),  # at least in_flight, as concurrency <= skus
            seconds=workload.seconds,
            requests=share(workload.requests, workload.clients, client),
        )
        for client in range(workload.clients)
    ]
    async with _generators(plans, scratch) as clients:
        start = time.time() + workload.warmup
        for client in clients:
            assert client.stdin is not None
            client.stdin.write(f"{start}\n".encode())
            await client.stdin.drain()
        await asyncio.sleep(max(0.0, start - time.time()))
        watch = Watch(target.roles, os.getpid())
        watch.start()
        tallies = await asyncio.gather(*(_tally(client, scratch, n) for n, client in enumerate(clients)))
        processes = watch.stop()
    figures = StockRun(system, turn, load_average=[round(n, 2) for n in os.getloadavg()])
    figures.outbox_backlog = await target.backlog()
    _add_up(figures, tallies, processes)
    return figures


@contextlib.asynccontextmanager
async def _generators(plans: list[Plan], scratch: Path) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """A generator process per plan, each ready to send; any still running after the block is killed."""
    clients: list[asyncio.subprocess.Process] = []
    try:
        for plan in plans:
            with _log(scratch, plan.client).open("wb") as log:
                client = await asyncio.create_subprocess_exec(
                    *(sys.executable, "-m", "skuflow.bench.stock.client"),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                )
            clients.append(client)
            assert client.stdin is not None
            client.stdin.write(json.dumps(asdict(plan)).encode() + b"\n")
            await client.stdin.drain()
        for n, client in enumerate(clients):
            assert client.stdout is not None
            try:
                ready = await asyncio.wait_for(client.stdout.readline(), READY_SECONDS)
            except TimeoutError:
                ready = b""
            if ready.strip() != b"ready":
                raise BenchError(f"load generator {n} did not start:\n{_tail(scratch, n)}")
        yield clients
    finally:
        for client in clients:
            if client.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    client.kill()
                await client.wait()


async def _tally(client: asyncio.subprocess.Process, scratch: Path, n: int) -> dict[str, Any]:
    """The generator's tally, once it has every answer of the window (read to the end: it is one long line)."""
    assert client.stdout is not None
    output = await client.stdout.read()
    await client.wait()
    try:
        tally: dict[str, Any] = json.loads(output)
    except json.JSONDecodeError:
        ended = f"load generator {n} ended ({client.returncode}) without its tally:\n{_tail(scratch, n)}"
        raise BenchError(ended) from None
    return tally


def _add_up(figures: StockRun, tallies: list[dict[str, Any]], processes: list[ProcessFigures]) -> None:
    """One run's figures from the generators' tallies and the processes' CPU."""
    answers = [ms for tally in tallies for ms in tally["answers_ms"]]
    errors: Counter[str] = Counter()
    for tally in tallies:
        errors.update(tally["errors"])
    figures.requests = len(answers)
    figures.seconds = round(max(tally["seconds"] for tally in tallies), 3)
    figures.requests_per_second = round(figures.requests / figures.seconds, 1) if figures.seconds else 0.0
    figures.answer_ms = percentiles(answers)
    figures.errors = dict(errors)
    figures.stale = sum(tally["stale"] for tally in tallies)
    command = "python -m skuflow.bench.stock.client"
    load = [ProcessFigures("load", t["pid"], command, t["cpu_seconds"], t["peak_rss_mb"]) for t in tallies]
    figures.processes = processes + load
    for process in figures.processes:
        figures.cpu_seconds[process.role] = round(figures.cpu_seconds.get(process.role, 0.0) + process.cpu_seconds, 3)
    inventory = figures.cpu_seconds.get("inventory", 0.0)
    figures.inventory_cpu_ms_per_request = round(inventory * 1000 / figures.requests, 3) if figures.requests else 0.0


def _log(scratch: Path, n: int) -> Path:
    return scratch / f"load-{n}.log"


def _tail(scratch: Path, n: int) -> str:
    return _log(scratch, n).read_text(errors="replace")[-2000:]
