"""CPU seconds and peak resident memory of processes, from Linux's /proc (no psutil: not a dependency), for
the benchmarks that run what they measure in processes of their own (`bench e2e`, `bench stock`).

The peak is the kernel's high-water mark (VmHWM), so no sampling thread is needed and no short peak is
missed; writing 5 to /proc/<pid>/clear_refs resets it, so that a phase's peak is its own."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcessFigures:
    role: str  # the part it plays: "system" or "bench" in `bench e2e`; "inventory", "users", "load", "bench" in stock
    pid: int
    command: str
    cpu_seconds: float = 0.0  # user + system, over the measured span
    peak_rss_mb: float = 0.0  # the kernel's high-water mark, reset at the span's start when it allows


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (`skuflow up --processes` and `skuflow serve --workers N` have children)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += parents.get(current, [])
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used (its own, not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime and stime: the 14th and 15th fields


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak(pid: int) -> None:
    """Start the high-water mark again from the current size (allowed for one's own processes)."""
    with contextlib.suppress(OSError):  # an old or locked-down kernel: the peak is then since the start
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def command(pid: int) -> str:
    parts = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return " ".join(part.decode(errors="replace") for part in parts if part)[:120]


class Watch:
    """Each process's CPU over a span, and its peak memory in it: `start()`, then `stop()` for the figures."""

    def __init__(self, roles: Mapping[str, Sequence[int]], bench: int) -> None:
        self.roles = roles  # role -> the roots of its processes, each counted with its descendants
        self.bench = bench  # this process alone (the roots are its children)
        self._cpu: dict[int, float] = {}

    def pids(self) -> list[tuple[str, int]]:
        found = [(role, pid) for role, roots in self.roles.items() for root in roots for pid in tree(root)]
        return [*found, ("bench", self.bench)]

    def start(self) -> None:
        self._cpu = {}
        for _, pid in self.pids():
            try:
                self._cpu[pid] = cpu_seconds(pid)
                reset_peak(pid)
            except OSError:
                continue

    def stop(self) -> list[ProcessFigures]:
        figures = []
        for role, pid in self.pids():
            try:
                used = cpu_seconds(pid) - self._cpu.get(pid, 0.0)
                figures.append(ProcessFigures(role, pid, command(pid), round(used, 3), round(peak_rss_mb(pid), 1)))
            except OSError:
                continue
        return figures
