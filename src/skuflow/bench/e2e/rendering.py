"""How `skuflow bench e2e` shows its figures: a rich table (one column per mode and phase), and progress
bars while it runs (also `skuflow compare`'s)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from skuflow.bench.e2e.figures import RATIOS, PhaseFigures, Report


@contextlib.contextmanager
def progress_bars(console: Console, transient: bool) -> Iterator[Callable[[str, int, int], None]]:
    """Bars on `console`, one per phase, moved by the callback this yields; gone at the end if `transient`."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=transient) as bars:
        tasks: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bars.add_task(phase, total=total)
            bars.update(tasks[phase], completed=done, total=total)

        yield progress


def rows(phases: list[PhaseFigures]) -> list[tuple[str, list[str]]]:
    def each(read: Callable[[PhaseFigures], Any]) -> list[str]:
        return [shown(read(figures)) for figures in phases]

    def by_role(role: str, read: Callable[[list[Any]], float]) -> list[str]:
        return [shown(round(read([p for p in f.processes if p.role == role]), 2)) for f in phases]

    return [
        ("SKU changes/s converged", each(lambda f: round(f.changes_per_second, 1))),
        ("time to converge (s)", each(lambda f: round(f.converge_seconds, 2))),
        ("SKUs / HTTP reports", each(lambda f: f"{f.skus} / {f.reports}")),
        ("reports refused (503, sent again)", each(lambda f: f.refused)),
        ("report -> catalog p50 / p99 / max (ms)", each(lambda f: triple(f.catalog_latency_ms))),
        ("report -> email p50 / p99 / max (ms)", each(lambda f: triple(f.email_latency_ms))),
        ("POST /v1/stock answer p50 / p99 (ms)", each(lambda f: pair(f.answer_ms))),
        ("emails accepted / due", each(lambda f: f"{f.emails} / {f.due_emails}")),
        ("messages published", each(lambda f: sum(f.published.values()))),
        ("deliveries", each(lambda f: sum(f.delivered.values()))),
        ("HTTP calls between services", each(lambda f: sum(f.http_calls.values()))),
        ("deliveries retried / dead-lettered", each(lambda f: f"{f.retried:g} / {f.dead_lettered:g}")),
        ("flow steps resent / failed", each(lambda f: f"{f.steps_resent:g} / {f.steps_failed:g}")),
        ("CPU s, system", by_role("system", lambda ps: sum(p.cpu_seconds for p in ps))),
        ("CPU s, bench (load, SMTP, FTP)", by_role("bench", lambda ps: sum(p.cpu_seconds for p in ps))),
        ("peak RSS MB, system", by_role("system", lambda ps: sum(p.peak_rss_mb for p in ps))),
        ("peak RSS MB, bench", by_role("bench", lambda ps: sum(p.peak_rss_mb for p in ps))),
        ("load average (1 min)", each(lambda f: f.load_average[0] if f.load_average else 0.0)),
    ]


def table(report: Report) -> Table:
    workload = report.workload
    pace = f"{workload.rate:g} reports/s" if workload.rate else f"{workload.concurrency} in flight"
    versions = ", ".join(f"{name} {version}" for name, version in report.versions.items())
    title = (
        f"skuflow bench e2e: {workload.skus} SKUs, {workload.users} users x {workload.wishes} wishes, "
        f"{workload.batch} SKU(s) per report, {pace}; {report.broker} + {report.databases}, {report.system}"
        f"{traced(report)}\n{versions}"
    )
    ratio = "".join(
        f"\n{numerator} / {denominator}, {name}: {value:.2f}x"
        for numerator, denominator in RATIOS.values()
        for name, value in report.ratio(numerator, denominator).items()
    )
    columns = [
        f"{'' if figures.system == 'skuflow' else f'{figures.system}, '}{figures.mode}\n{figures.phase}"
        for figures in report.phases
    ]
    return figures_table(title + ratio, columns, rows(report.phases))


def traced(report: Report) -> str:
    if not report.traced:
        return ", not traced"
    received = ", ".join(f"{mode} {spans:,}" for mode, spans in report.spans.items())
    return f", traced (spans received over OTLP: {received})"


def figures_table(title: str, columns: list[str], rows: list[tuple[str, list[str]]]) -> Table:
    """A table of one labelled row per figure and one column per mode (and phase)."""
    result = Table(title=title)
    result.add_column("figure")
    for column in columns:
        result.add_column(column, justify="right")
    for label, values in rows:
        result.add_row(label, *values)
    return result


def pair(percentiles: dict[str, float]) -> str:
    return f"{percentiles.get('p50', 0):.0f} / {percentiles.get('p99', 0):.0f}"


def triple(percentiles: dict[str, float]) -> str:
    return f"{pair(percentiles)} / {percentiles.get('max', 0):.0f}"


def shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
