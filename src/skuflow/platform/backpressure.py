"""Bounded backpressure above saturation: while the work a service has taken on and not yet handed on is at
a bound, it takes no more (inventory's writes answer 503 with `Retry-After`; its FTP feed leaves the files
on the server), so that a burst beyond capacity waits at its sender instead of growing the tables, the
queues behind them and everyone's latency.

A request's check reads numbers in memory. Each process counts the backlogs in the database every half
second: the table is what every process of the service shares (on PostgreSQL, several inventory processes
see one outbox), so no process needs to know what the others added. A count stops at twice the bound, so it
costs an index range scan of at most that many entries however long the backlog grows. The bound is soft:
what is admitted within one refresh passes it, and a request (or a file) is recorded whole.

While a backlog is at its bound, the refresh also counts what left it in the last few seconds (the messages
the relays published, the flows that ended), and `Retry-After` is the excess at that drain rate: 1 to 60 s,
60 when nothing drains (the broker unreachable, the relay stopped).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from skuflow.platform.background import Periodic
from skuflow.platform.db import Database
from skuflow.platform.metrics import ServiceMetrics

log = logging.getLogger("skuflow.backpressure")

REFRESH_SECONDS = 0.5
DRAIN_WINDOW_SECONDS = 5  # the drain rate is what left a backlog in this many seconds
RETRY_AFTER = (1, 60)  # the least and the most `Retry-After` says, in seconds
SETTING = "SKUFLOW_MAX_BACKLOG"


@dataclass(frozen=True)
class Backlog:
    """One kind of work waiting: `waiting` selects a row per item waiting, `left_since(moment)` a row per
    item that stopped waiting since then. Both should be index range scans: they are counted twice a second."""

    name: str  # in /metrics (`skuflow_backlog_<name>`) and /readyz: outbox_messages, running_flows
    described: str  # after the count, in words: "outbox messages wait to be published"
    waiting: Select[Any]
    left_since: Callable[[datetime], Select[Any]]


class Saturated(Exception):
    """A backlog is at its bound: take no more work; `retry_after`: when to try again (seconds, an estimate)."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Backpressure:
    """The backlogs of a service held to `bound` (0: no bound, nothing counted)."""

    def __init__(self, db: Database, bound: int, backlogs: Sequence[Backlog], metrics: ServiceMetrics) -> None:
        self.db = db
        self.bound = bound
        self.backlogs = tuple(backlogs)
        self.seen = {backlog.name: 0 for backlog in backlogs}  # at the last count, up to twice the bound
        self.counted_at: datetime | None = None
        self.retry_after = RETRY_AFTER[0]
        self.problem: str | None = None  # why the last count failed (the one before stands)
        self.refused = 0  # requests refused by this process
        self._periodic = Periodic("backlog count", self.refresh, REFRESH_SECONDS)
        self._service = metrics.service
        self._refusals = Counter(
            "skuflow_backpressure_refused",
            f"Requests answered 503 because a backlog was at its bound ({SETTING})",
            ["service", "method", "route"],
            registry=metrics.registry,
        )
        if bound:
            for backlog in backlogs:
                metrics.watch_gauge(
                    f"skuflow_backlog_{backlog.name}",
                    f"{backlog.described.capitalize()}, at this process's last count (which stops at twice {SETTING})",
                    self._reading(backlog.name),
                )

    async def start(self) -> None:
        if self.bound:
            await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    def saturated(self) -> Saturated | None:
        """Why no more work is taken now, or None: read from the last count, no I/O."""
        full = [backlog for backlog in self.backlogs if self.bound and self.seen[backlog.name] >= self.bound]
        if not full:
            return None
        counted = "; ".join(f"{self._shown(backlog.name)} {backlog.described}" for backlog in full)
        return Saturated(f"the backlog is at its bound ({SETTING}={self.bound}): {counted}", self.retry_after)

    def count_refusal(self, method: str, route: str) -> None:
        self.refused += 1
        self._refusals.labels(self._service, method, route).inc()

    async def refresh(self) -> None:
        """Count each backlog now and, while one is at the bound, its drain. A count that fails (the database
        unreachable) leaves the last one standing, logged once until a count works again."""
        if not self.bound:
            return
        now = datetime.now(UTC)
        try:
            async with self.db.reading() as session:
                seen = {item.name: await _count(session, item.waiting, 2 * self.bound) for item in self.backlogs}
                retry_after = await self._retry_after(session, seen, now)
        except Exception as error:
            if self.problem is None:
                log.warning("backlog: cannot count it (%r); the last count stands until it can", error)
            self.problem = f"cannot count it: {error!r}"
            return
        if self.problem is not None:
            log.info("backlog: counted again")
        self.seen, self.retry_after, self.counted_at, self.problem = seen, retry_after, now, None

    def report(self) -> dict[str, Any]:
        """For /readyz's details."""
        saturated = self.saturated()
        return {
            "bound": self.bound,
            **self.seen,
            "counted_up_to": 2 * self.bound,
            "counted_at": self.counted_at.isoformat() if self.counted_at else None,
            "saturated": str(saturated) if saturated else None,
            "retry_after": saturated.retry_after if saturated else None,
            "refused": self.refused,
            "problem": self.problem,
        }

    async def _retry_after(self, session: AsyncSession, seen: dict[str, int], now: datetime) -> int:
        """Seconds until every backlog is below the bound again, at the rate each drained lately."""
        least, most = RETRY_AFTER
        wait = least
        since = now - timedelta(seconds=DRAIN_WINDOW_SECONDS)
        for backlog in self.backlogs:
            excess = seen[backlog.name] - self.bound + 1
            if excess <= 0:
                continue
            # Counted no further than what would drain the excess within a second: Retry-After is 1 then.
            left = await _count(session, backlog.left_since(since), excess * DRAIN_WINDOW_SECONDS)
            wait = max(wait, math.ceil(excess * DRAIN_WINDOW_SECONDS / left) if left else most)
        return min(wait, most)

    def _reading(self, name: str) -> Callable[[], float]:
        return lambda: self.seen[name]

    def _shown(self, name: str) -> str:
        """A count as words: `20,000+` once it reached the count's stop."""
        count = self.seen[name]
        return f"{count:,}+" if count >= 2 * self.bound else f"{count:,}"


async def _count(session: AsyncSession, rows: Select[Any], cap: int) -> int:
    """How many rows `rows` selects, counting no further than `cap`."""
    return int(await session.scalar(select(func.count()).select_from(rows.limit(cap).subquery())) or 0)
