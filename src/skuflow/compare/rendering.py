"""How `skuflow compare` shows its figures: a rich table and Markdown (its progress bars are the harness's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.table import Table

from skuflow.bench.e2e import PhaseFigures
from skuflow.bench.e2e.rendering import figures_table
from skuflow.compare.figures import Comparison


def rows(comparison: Comparison) -> list[tuple[str, list[str]]]:
    """The comparison as (figure, one value per mode) rows, for the table and the Markdown."""
    modes = comparison.modes

    def each(read: Callable[[PhaseFigures], Any]) -> list[str]:
        return [_shown(read(figures)) for figures in modes]

    def keys(read: Callable[[PhaseFigures], dict[str, Any]]) -> list[str]:
        return sorted({key for figures in modes for key in read(figures)})

    def breakdown(read: Callable[[PhaseFigures], dict[str, float]]) -> list[tuple[str, list[str]]]:
        return [(f"  {key}", [_shown(read(f).get(key, 0)) for f in modes]) for key in keys(read)]

    table: list[tuple[str, list[str]]] = [
        ("time to converge (s)", each(lambda f: round(f.converge_seconds, 2))),
        ("messages published", each(lambda f: sum(f.published.values()))),
    ]
    table += breakdown(lambda f: f.published)
    table.append(("deliveries", each(lambda f: sum(f.delivered.values()))))
    table += breakdown(lambda f: f.delivered)
    table.append(("HTTP calls between services", each(lambda f: sum(f.http_calls.values()))))
    table += breakdown(lambda f: f.http_calls)
    table += [
        ("report -> catalog updated, p50 / p99 (ms)", each(lambda f: _pair(f.catalog_latency_ms))),
        ("report -> email accepted, p50 / p99 (ms)", each(lambda f: _pair(f.email_latency_ms))),
        ("emails accepted", each(lambda f: f.emails)),
        ("deliveries retried / dead-lettered", each(lambda f: f"{f.retried:g} / {f.dead_lettered:g}")),
        ("flow steps resent / failed", each(lambda f: f"{f.steps_resent:g} / {f.steps_failed:g}")),
        ("peak memory, system process (MB)", each(lambda f: round(f.peak_memory_mb))),
    ]
    for service in keys(lambda f: f.knows):
        table.append((f"{service} used", ["; ".join(f.knows.get(service, [])) or "-" for f in modes]))
    return table


def table(comparison: Comparison) -> Table:
    report = comparison.report
    workload = report.workload
    title = (
        f"skuflow compare: {workload.skus} SKUs, {workload.users} users x {workload.wishes} wishes, "
        f"{report.broker} + {report.databases}"
    )
    return figures_table(title, [figures.mode for figures in comparison.modes], rows(comparison))


def markdown(comparison: Comparison) -> str:
    header = ["figure", *(figures.mode for figures in comparison.modes)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, values in rows(comparison):
        lines.append("| " + " | ".join([label.strip().replace("|", "\\|"), *values]) + " |")
    return "\n".join(lines)


def _pair(percentiles: dict[str, float]) -> str:
    return f"{percentiles.get('p50', 0):.0f} / {percentiles.get('p99', 0):.0f}"


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
