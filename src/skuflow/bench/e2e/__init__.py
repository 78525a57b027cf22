"""`skuflow bench e2e`: the whole flow measured end to end, the system in its own process and the load
generator in this one. `skuflow compare` is a view of the same harness (both modes, one mixed phase).

For each mode, a fresh system (`system`: `skuflow up` as a subprocess on free ports, a scratch data folder,
the bench's SMTP sink and FTP server) on a scratch stack (`stack`: the in-process broker and SQLite, or a
scratch RabbitMQ vhost and scratch PostgreSQL databases). Setup, not measured (`driver`): N products at 0 on
hand, M users each wishing for K of them, then rest. Each phase changes every SKU from 0 to available once
and is measured until converged: catalog shows every SKU available, the sink has every due email, no flow
runs. Between phases every SKU goes back to 0 (not measured). Counts come from the services' `/metrics`
before and after a phase at rest; CPU and peak memory per process from /proc (`skuflow.bench.processes`);
what each figure means is in `figures`; `rendering` shows them.

With `systems` holding "raw" or "faststream", the same HTTP phase also runs against the flow written the
obvious way on the raw building blocks (`skuflow.bench.raw`) or with its messaging in FastStream
(`skuflow.bench.faststream_flow`), each started and set up by `raw` on a scratch stack of its own, and the report
gives skuflow's throughput as a share of each.

`traced`: the system's processes export their spans over OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT) to the bench's
sink (`skuflow.bench.otlp_sink`, a process of its own), or (False) trace nothing whatever the caller's variables
say; the report gives the spans the sink received in each mode (setup and phases, up to the system's stop,
which flushes what is still queued). The baselines never trace.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import random
import tempfile
import time
from pathlib import Path

from skuflow.bench.e2e.driver import Driver
from skuflow.bench.e2e.figures import (
    BenchError,
    NotConverged,
    PhaseFigures,
    Progress,
    Report,
    Workload,
    as_bench_errors,
    count_messages,
    machine,
    platform_versions,
)
from skuflow.bench.e2e.raw import RawDriver, running_raw
from skuflow.bench.e2e.rendering import progress_bars, table
from skuflow.bench.e2e.stack import StackChoice, scratch_stack
from skuflow.bench.e2e.system import running, tracing_environment
from skuflow.bench.otlp_sink import otlp_sink
from skuflow.bench.processes import Watch

__all__ = [
    "MODES",
    "PHASES",
    "SYSTEMS",
    "BenchError",
    "NotConverged",
    "PhaseFigures",
    "Report",
    "StackChoice",
    "Workload",
    "progress_bars",
    "run",
    "systems_named",
    "table",
]

MODES = ("choreography", "orchestration")
PHASES = ("http", "ftp", "mixed")  # every SKU over HTTP; every SKU in one snapshot; half and half (compare's)
SYSTEMS = ("skuflow", "raw", "faststream")  # measured in this order, whatever order they are named in
BASELINES = SYSTEMS[1:]  # choreography over HTTP only
SYSTEM_NAMES = {"both": "skuflow,raw", "all": ",".join(SYSTEMS)}


def systems_named(value: str) -> tuple[str, ...] | None:
    """`skuflow`, `raw`, `faststream`, a comma list of them, `both` (skuflow and raw) or `all`; None if not."""
    named = SYSTEM_NAMES.get(value, value).split(",")
    if not named or not set(named) <= set(SYSTEMS) or len(set(named)) != len(named):
        return None
    return tuple(system for system in SYSTEMS if system in named)


async def run(
    choice: StackChoice,
    workload: Workload,
    progress: Progress,
    modes: tuple[str, ...] = MODES,
    phases: tuple[str, ...] = ("http", "ftp"),
    seed: int = 7,
    systems: tuple[str, ...] = ("skuflow",),
    traced: bool | None = None,
) -> Report:
    """Each mode in turn, each phase in turn, on the same workload; then each baseline in `systems` (raw,
    faststream): its choreography over HTTP. `traced`: skuflow's spans exported to the bench's OTLP sink, or
    (False) not traced; None: as the caller's OTEL_ variables say. `BenchError` (or `NotConverged`) says why not."""
    report = Report(workload, choice.broker, choice.databases, choice.system, traced=traced is True)
    report.versions = platform_versions()
    report.machine = machine()
    with as_bench_errors():
        if "skuflow" in systems:
            async with contextlib.AsyncExitStack() as stack:
                sink = await stack.enter_async_context(otlp_sink()) if traced else None
                environment = None if traced is None else tracing_environment(sink.endpoint if sink else None)
                for mode in modes:
                    before = (await sink.received()).spans if sink else 0
                    report.phases += await _one_mode(
                        mode, choice, workload, phases, progress, seed, report.versions, environment
                    )
                    if sink:  # the system has stopped: what its processes still held is flushed
                        report.spans[mode] = (await sink.received()).spans - before
        for flow in BASELINES:
            if flow in systems:
                report.phases.append(await _baseline(flow, choice, workload, progress, seed, report.versions))
    return report


async def _one_mode(
    mode: str,
    choice: StackChoice,
    workload: Workload,
    phases: tuple[str, ...],
    progress: Progress,
    seed: int,
    versions: dict[str, str],
    environment: dict[str, str | None] | None = None,
) -> list[PhaseFigures]:
    """The mode's phases on a fresh system, stopped before this returns."""
    rng = random.Random(seed)  # the same workload in every mode
    skus = _skus(workload)
    results = []
    with tempfile.TemporaryDirectory(prefix=f"skuflow-bench-{mode}-") as scratch:
        async with (
            scratch_stack(choice) as stack,
            running(mode, Path(scratch), stack, choice.processes, environment=environment) as system,
        ):
            versions.update(stack.versions)
            driver = Driver(system, workload, lambda phase, done, total: progress(f"{mode}: {phase}", done, total))
            await driver.setup(skus, rng)
            watch = Watch({"system": [system.process.pid]}, os.getpid())
            for n, phase in enumerate(phases):
                if n:
                    await driver.reset(skus)
                results.append(await _phase(driver, watch, phase, skus, workload.poll))
    return results


async def _baseline(
    flow: str, choice: StackChoice, workload: Workload, progress: Progress, seed: int, versions: dict[str, str]
) -> PhaseFigures:
    """A baseline (raw or faststream) on a scratch stack of its own: choreography, the HTTP phase."""
    skus = _skus(workload)
    with tempfile.TemporaryDirectory(prefix=f"skuflow-bench-{flow}-") as scratch:
        async with scratch_stack(choice) as stack, running_raw(Path(scratch), stack, flow) as system:
            versions.update(stack.versions)
            if flow == "faststream":
                versions["faststream"] = importlib.metadata.version("faststream")
            driver = RawDriver(system, workload, lambda phase, done, total: progress(f"{flow}: {phase}", done, total))
            await driver.setup(skus, random.Random(seed))
            figures = await _phase(driver, Watch({"system": system.pids}, os.getpid()), "http", skus, workload.poll)
    figures.system = flow
    return figures


async def _phase(driver: Driver, watch: Watch, phase: str, skus: list[str], poll: float) -> PhaseFigures:
    """One measured phase, from rest to convergence; its figures."""
    system = driver.system
    before = await system.settled(poll)
    mails_before = len(system.mailbox.accepted)
    half = len(skus) // 2 if phase == "mixed" else len(skus) if phase == "http" else 0
    watch.start()
    started = time.monotonic()
    sent = await driver.change(phase, skus[:half], skus[half:])
    await driver.converge(phase, skus, started, mails_before)
    figures = PhaseFigures(system.mode, phase, processes=watch.stop())
    figures.load_average = [round(n, 2) for n in os.getloadavg()]
    figures.peak_memory_mb = sum(p.peak_rss_mb for p in figures.processes if p.role == "system")
    count_messages(figures, before, await system.settled(poll))
    await driver.figures(figures, skus, sent, mails_before)
    return figures


def _skus(workload: Workload) -> list[str]:
    return [f"SKU-{n:05d}" for n in range(workload.skus)]
