"""The process's resident memory, sampled while a block runs (for `bench ftp` and `compare`)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident() -> int:
    """This process's resident size now, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


@contextlib.contextmanager
def peak_resident(every: float = 0.01) -> Iterator[Callable[[], tuple[float, float]]]:
    """Sample the resident size every `every` seconds; yields a function answering its peak and the peak
    above the start, in MB. (The growth alone can mislead: memory freed by an earlier run is reused.)"""
    start = resident()
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(every):
            peak[0] = max(peak[0], resident())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield lambda: (peak[0] / 2**20, (peak[0] - start) / 2**20)
    finally:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], resident())
