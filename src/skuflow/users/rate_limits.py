"""The rate limits of the users service (CONTRACT section 7), in memory and without I/O: a sliding window of
attempts per key, the token endpoint's limit per address with a ceiling over all addresses, and the unit an
address is counted by."""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class SlidingWindow:
    """At most `limit` attempts per key in any `window` seconds (a sliding log of attempt times).

    An attempt that is refused is not recorded: the wait it is told (`Retry-After`) is then exact, and a
    client that waits it out gets in. Memory is bounded at `max_keys` keys, at a constant cost per attempt:
    the keys are kept in the order of their last attempt (moved to the end on each), so the least recently
    used is always first. Each new key first sweeps up to `SWEEP` keys whose attempts have all aged out
    (more than it adds: idle keys never pile up), and at `max_keys` the least recently used key is forgotten
    (which can only let someone in early, never lock anyone out). A scan of every key, as before, cost
    ~10 ms per new key at 100,000 keys: a flood of new usernames made each attempt slower.
    """

    SWEEP = 2

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()

    def attempt(self, key: str) -> int | None:
        """Record an attempt for `key`: None when it is allowed, else whole seconds until a slot frees (>= 1)."""
        wait = self.wait(key)
        if wait is None:
            self.record(key)
        return wait

    def wait(self, key: str) -> int | None:
        """None when an attempt for `key` would be allowed now, else whole seconds until a slot frees (>= 1)."""
        now = self.clock()
        times = self._attempts.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            return max(1, math.ceil(times[0] + self.window - now))
        return None

    def record(self, key: str) -> None:
        now = self.clock()
        times = self._attempts.get(key)
        if times is None:
            self._make_room(now)
            times = self._attempts[key] = deque()
        else:
            self._attempts.move_to_end(key)
        times.append(now)

    def _make_room(self, now: float) -> None:
        """Sweep a few idle keys from the front, then forget the least recently used if still full: O(1)."""
        for _ in range(self.SWEEP):
            oldest = next(iter(self._attempts.values()), None)  # O(1) on an OrderedDict: its linked list
            if oldest is None or (oldest and oldest[-1] > now - self.window):
                break
            self._attempts.popitem(last=False)
        if len(self._attempts) >= self.max_keys:
            self._attempts.popitem(last=False)


class TokenAttempts:
    """The token endpoint's limit.

    - `limit` attempts per client or username *from one address* in any window: someone who knows a client
      id (`warehouse`) and guesses its secret locks out only their own address. An IPv6 address counts by
      its /64, which one host can fill.
    - A ceiling of `spread` times as many per client or username from all addresses together, so that
      guessing from many addresses stays slow.
    - An address that got a token for that client or username within `trusted_for` seconds passes the
      ceiling (not its own limit): the warehouse, which asks from the same place every hour, is not shut
      out by a guesser spread over many addresses. A user on a new address can be, while such an attack
      lasts; that is the price of the ceiling.

    Behind a proxy, the address is the one uvicorn takes from `X-Forwarded-For` when the proxy is trusted
    (named in SKUFLOW_FORWARDED_ALLOW_IPS; no peer is, by default)."""

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        *,
        spread: int = 10,
        trusted_for: float = 24 * 3600.0,
        max_trusted: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.from_one_address = SlidingWindow(limit, window, clock=clock)
        self.from_all = SlidingWindow(limit * spread, window, clock=clock)
        self.trusted_for = trusted_for
        self.max_trusted = max_trusted
        self.clock = clock
        # (key, network) -> when it last got a token; in that order, so that the oldest goes first in O(1).
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()

    def attempt(self, key: str, address: str) -> int | None:
        """Record an attempt for `key` from `address`: None when allowed, else seconds to wait (>= 1)."""
        near = f"{key} from {network_of(address)}"
        waits = [self.from_one_address.wait(near)]
        trusted = self._trusted.get((key, network_of(address)))
        if trusted is None or trusted <= self.clock() - self.trusted_for:
            waits.append(self.from_all.wait(key))
        if any(wait is not None for wait in waits):
            return max(wait for wait in waits if wait is not None)
        self.from_one_address.record(near)
        self.from_all.record(key)
        return None

    def succeeded(self, key: str, address: str) -> None:
        """`address` got a token for `key`: it passes the ceiling for a while."""
        trusted = (key, network_of(address))
        if trusted not in self._trusted and len(self._trusted) >= self.max_trusted:
            self._trusted.popitem(last=False)  # the least recently trusted
        self._trusted[trusted] = self.clock()
        self._trusted.move_to_end(trusted)


def network_of(address: str) -> str:
    """The unit an address is counted by: itself for IPv4, its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
