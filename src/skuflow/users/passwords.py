"""Argon2 hashes of passwords and client secrets, computed off the event loop.

Hashing takes tens of milliseconds and 64 MiB by design (argon2-cffi's defaults), so it runs in worker
threads, never on the event loop. The threads are a pool of their own, of bounded size: a storm of logins
then waits its turn instead of taking one default-executor thread (and 64 MiB) per request.

The pool's queue is bounded too (`HashQueue`): a request that would hash (sign-up, the token endpoint)
first takes a place, and without one it is answered 503 at once, instead of waiting behind every hash
asked for before it. Without that bound, token requests naming a new username each time (which no
per-username limit stops) queued hashes without end, and every login waited behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

T = TypeVar("T")

# argon2-cffi's defaults (RFC 9106's low-memory profile). The tests put a cheaper one here: the hashes
# record their own parameters, so what is stored verifies whichever hasher is current.
hasher = PasswordHasher()
THREADS = min(4, os.cpu_count() or 1)
_threads = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="argon2")

# The bound on hashes waiting or running for requests: 8 rounds of the pool. A request that gets a place
# is answered within about 8 hash times (~2 s on 2 cores at argon2's defaults, 250 ms a hash there; ~0.5 s
# on 4 free cores), where an HTTP client still waits; more places would only make every caller wait longer.
# One network (an IPv4 address, an IPv6 /64) may hold at most one round of them (`THREADS`): a flood from
# one place keeps the pool busy but cannot make anyone else wait behind more than one round of its hashes.
QUEUE_ROUNDS = 8


class Busy(Exception):
    """No place in the hash queue: answer 503, `retry_after` seconds (an estimate of its draining time)."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class HashQueue:
    """Places for hashes waiting or running: at most `capacity` in all and `share` per network.

    A plain counter under a thread lock, not an asyncio semaphore: taking a place never waits (a request
    without one is refused at once), and the counter is not tied to one event loop."""

    def __init__(self, capacity: int, share: int) -> None:
        self.capacity = capacity
        self.share = share
        self._held: dict[str, int] = {}  # network -> places it holds (only networks holding some)
        self._total = 0
        self._lock = threading.Lock()
        self.refused = 0  # requests answered 503 since start (a metric)

    @property
    def held(self) -> int:
        return self._total

    @contextlib.contextmanager
    def place(self, network: str) -> Iterator[None]:
        """Hold a place for the block (one request's hashing); raise `Busy` at once when there is none."""
        with self._lock:
            reason = self._no_place(network)
            if reason is not None:
                self.refused += 1
                raise Busy(reason, self._retry_after())
            self._total += 1
            self._held[network] = self._held.get(network, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._total -= 1
                if self._held[network] <= 1:
                    del self._held[network]
                else:
                    self._held[network] -= 1

    def _no_place(self, network: str) -> str | None:
        if self._total >= self.capacity:
            return f"the server is busy checking passwords ({self._total} waiting or running)"
        if self._held.get(network, 0) >= self.share:
            return f"too many password checks at once from {network}"
        return None

    def _retry_after(self) -> int:
        """Seconds until the queue has drained, from the time hashes take now; at least 1."""
        return max(1, math.ceil(self._total / THREADS * hash_seconds.value))


class _Average:
    """An exponentially weighted mean of the seconds a hash takes, for `Retry-After`."""

    def __init__(self, first: float) -> None:
        self.value = first

    def add(self, seconds: float) -> None:
        self.value += (seconds - self.value) / 8


hash_seconds = _Average(0.25)
queue = HashQueue(capacity=QUEUE_ROUNDS * THREADS, share=THREADS)


async def hash_secret(secret: str) -> str:
    return await _in_pool(hasher.hash, secret)


async def verify_secret(secret_hash: str | None, secret: str) -> bool:
    """Whether `secret` matches `secret_hash`. Without a hash (unknown user or client) a dummy one is
    checked all the same, so that the answer's timing does not tell whether the account exists."""
    return await _in_pool(_verify, secret_hash, secret)


async def _in_pool(work: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(_threads, _timed, work, *args)


def _timed(work: Callable[..., T], *args: object) -> T:
    started = time.perf_counter()
    try:
        return work(*args)
    finally:
        hash_seconds.add(time.perf_counter() - started)


def _verify(secret_hash: str | None, secret: str) -> bool:
    try:
        return hasher.verify(secret_hash or _dummy_hash(), secret) and secret_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return hasher.hash("no account has this secret")
