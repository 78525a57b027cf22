"""What `skuflow bench stock` measures: the workload, one run's figures, and the medians and ratios of the runs
(skuflow's and the raw inventory's taking turns, a pair per turn)."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from skuflow.bench.processes import ProcessFigures

SYSTEMS = ("skuflow", "raw")  # the order of each turn
RAW_SYSTEM = "skuflow.bench.raw inventory: aiohttp + asyncpg + aio-pika, a process per worker sharing one socket"


@dataclass(frozen=True)
class StockWorkload:
    seconds: float = 10.0  # the measured window, unless `requests` is given
    requests: int = 0  # reports started in the measured window, over all clients; 0: by `seconds`
    warmup: float = 2.0  # seconds of the same load before the window, not measured
    concurrency: int = 32  # reports in flight, over all clients
    clients: int = 1  # load generator processes, each keeping its share of `concurrency` in flight
    skus: int = 0  # SKUs cycled over, shared out among the reports in flight; 0: a new SKU in every report
    workers: int | None = None  # `skuflow serve inventory --workers N`, and N raw processes; None: one plain process
    runs: int = 1  # turns, each skuflow then raw


@dataclass
class StockRun:
    system: str  # "skuflow" or "raw"
    run: int  # the turn, from 1
    requests: int = 0  # answered 2xx, of the reports started in the measured window
    seconds: float = 0.0  # the window: its start to the last of its answers
    requests_per_second: float = 0.0  # requests / seconds
    answer_ms: dict[str, float] = field(default_factory=dict)  # sent -> answer read, of the 2xx: p50, p99, max, count
    errors: dict[str, int] = field(default_factory=dict)  # any other answer by status, or by exception when none
    stale: int = 0  # 2xx answers that recorded nothing new (skuflow's `stale` count; the raw one has none)
    outbox_backlog: int | None = None  # skuflow on PostgreSQL: events recorded, not yet published, at the end
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # role -> CPU s in the window, its processes summed
    inventory_cpu_ms_per_request: float = 0.0
    processes: list[ProcessFigures] = field(default_factory=list)
    load_average: list[float] = field(default_factory=list)  # 1, 5, 15 minutes, at the window's end


@dataclass
class StockReport:
    workload: StockWorkload
    broker: str  # "memory" or "amqp"
    databases: str  # "sqlite" or "postgresql"
    inventory: str  # how skuflow's inventory runs: "skuflow serve inventory ..." or "skuflow up"
    versions: dict[str, str] = field(default_factory=dict)  # python, skuflow, rabbitmq, postgresql
    machine: dict[str, Any] = field(default_factory=dict)  # cpus, load average at the start
    runs: list[StockRun] = field(default_factory=list)

    def of(self, system: str) -> list[StockRun]:
        return [run for run in self.runs if run.system == system]

    def pairs(self) -> list[tuple[StockRun, StockRun]]:
        """skuflow's and raw's run of each turn both ran."""
        raw = {run.run: run for run in self.of("raw")}
        return [(run, raw[run.run]) for run in self.of("skuflow") if run.run in raw]

    def ratios(self) -> dict[str, list[float]]:
        """Per pair, skuflow / raw: requests/s, and inventory's CPU per request."""
        pairs = self.pairs()
        return {
            "requests_per_second": [_ratio(ours.requests_per_second, raw.requests_per_second) for ours, raw in pairs],
            "inventory_cpu_ms_per_request": [
                _ratio(ours.inventory_cpu_ms_per_request, raw.inventory_cpu_ms_per_request) for ours, raw in pairs
            ],
        }

    def as_dict(self) -> dict[str, Any]:
        ratios = self.ratios()
        return {
            "workload": asdict(self.workload),
            "broker": self.broker,
            "databases": self.databases,
            "inventory": self.inventory,
            "raw": RAW_SYSTEM if self.of("raw") else None,
            "versions": self.versions,
            "machine": self.machine,
            "runs": [asdict(run) for run in self.runs],
            "medians": {system: summary(self.of(system)) for system in SYSTEMS if self.of(system)},
            "ratios": ratios,  # per pair, in turn order
            "ratio": {name: _median(values) for name, values in ratios.items()},  # their medians
        }


def summary(runs: list[StockRun]) -> dict[str, Any]:
    """The medians of one system's runs (errors: all of them, added up)."""
    roles = sorted({role for run in runs for role in run.cpu_seconds})
    backlogs = [run.outbox_backlog for run in runs if run.outbox_backlog is not None]
    errors: Counter[str] = Counter()
    for run in runs:
        errors.update(run.errors)
    return {
        "runs": len(runs),
        "requests_per_second": statistics.median(run.requests_per_second for run in runs),
        "answer_ms": {key: statistics.median(run.answer_ms[key] for run in runs) for key in ("p50", "p99", "max")},
        "errors": dict(errors),
        "stale": sum(run.stale for run in runs),
        "outbox_backlog": statistics.median(backlogs) if backlogs else None,
        "cpu_seconds": {role: statistics.median(run.cpu_seconds.get(role, 0.0) for run in runs) for role in roles},
        "inventory_cpu_ms_per_request": statistics.median(run.inventory_cpu_ms_per_request for run in runs),
    }


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else 0.0


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
