"""`skuflow bench outbox`: does the outbox relay keep up with the broker?

Each run writes N messages into an outbox table (one transaction, timed apart), then lets a relay publish
them and times the drain; the baseline, in the same run, publishes the same N envelopes straight through
`Broker.publish_many` with the same window of confirms. The ratio says what the outbox costs on top of the
bus: reading its rows and marking them sent.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.table import Table
from sqlalchemy import MetaData

from skuflow.bench.bus import QUEUES_PER_EXCHANGE, bench_names, delete_bench_objects
from skuflow.messaging import BrokerOptions, Envelope, Exchange, Outgoing, Queue, Topology
from skuflow.messaging.amqp import AmqpBroker
from skuflow.platform.db import Database
from skuflow.platform.outbox import Outbox, OutboxRelay, outbox_table

_DELAY = 60.0


@dataclass(frozen=True)
class OutboxRun:
    write: float  # rows/s written into the outbox (one transaction)
    relay: float  # messages/s drained by the relay
    direct: float  # messages/s published straight through the broker


@dataclass(frozen=True)
class OutboxReport:
    database: str
    messages: int
    runs: list[OutboxRun]

    def median(self, figure: str) -> float:
        return float(statistics.median(getattr(run, figure) for run in self.runs))

    def ratio(self) -> float:
        return float(statistics.median(run.relay / run.direct for run in self.runs))

    def as_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            **{f"{figure}_median": self.median(figure) for figure in ("write", "relay", "direct")},
            "relay_ratio": self.ratio(),
        }

    def table(self) -> Table:
        runs = len(self.runs)
        title = f"bench outbox ({self.database}): {self.messages:,} messages x {runs} runs, fanout to 3 queues"
        table = Table(title=title)
        table.add_column("figure (median of runs)")
        table.add_column("rate", justify="right")
        table.add_row("write into the outbox (rows/s, one transaction)", f"{self.median('write'):,.0f}")
        table.add_row("relay drain (msg/s)", f"{self.median('relay'):,.0f}")
        table.add_row("direct publish_many (msg/s)", f"{self.median('direct'):,.0f}")
        table.add_row("relay / direct", f"{self.ratio():.2f}x")
        return table


async def run(
    amqp_url: str, database_url: str | None, messages: int, runs: int, progress: Callable[[str], None]
) -> OutboxReport:
    with tempfile.TemporaryDirectory() as scratch:
        url = database_url or f"sqlite+aiosqlite:///{Path(scratch) / 'outbox.db'}"
        results = []
        for n in range(runs):
            result = await _one_run(amqp_url, url, messages, first="relay" if n % 2 else "direct")
            progress(
                f"run {n + 1}/{runs}: write {result.write:,.0f} rows/s, relay {result.relay:,.0f} msg/s, "
                f"direct {result.direct:,.0f} msg/s"
            )
            results.append(result)
    return OutboxReport(url.split(":", 1)[0], messages, results)


async def _one_run(amqp_url: str, database_url: str, messages: int, first: str) -> OutboxRun:
    exchange_name, queue_names = bench_names("outbox")
    exchange = Exchange(exchange_name, "fanout")
    topology = Topology((exchange,), tuple(Queue(name, exchange) for name in queue_names))
    broker = AmqpBroker(amqp_url, "bench", BrokerOptions(retry_delays=(_DELAY,)))
    metadata = MetaData()
    table = outbox_table(metadata, f"bench_outbox_{uuid.uuid4().hex[:8]}")
    db = Database(database_url, Path("unused"))
    await broker.connect()
    try:
        await broker.declare(topology)
        async with db.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)

        envelopes = [broker.envelope("bench_event", {"sku": f"SKU-{n}", "n": n}) for n in range(messages)]
        outbox = Outbox(db, table)
        started = time.perf_counter()
        async with db.transaction() as session:
            await outbox.add_many(session, [Outgoing(envelope, exchange_name) for envelope in envelopes])
        write = messages / (time.perf_counter() - started)

        async def direct() -> float:
            copies = [Outgoing(envelope, exchange_name) for envelope in _fresh(envelopes)]
            started = time.perf_counter()
            await broker.publish_many(copies)
            return messages / (time.perf_counter() - started)

        async def drain() -> float:
            # The relay's own loop, batch after batch until nothing is pending (its wake-up and polling
            # only matter when it is idle).
            relay = OutboxRelay(outbox, broker)
            started = time.perf_counter()
            while await relay.publish_batch() > 0:
                pass
            return messages / (time.perf_counter() - started)

        # Each side publishes into empty queues, and they take turns going first (fuller queues are slower).
        rates: dict[str, float] = {}
        for side, measure in (
            (("relay", drain), ("direct", direct)) if first == "relay" else (("direct", direct), ("relay", drain))
        ):
            rates[side] = await measure()
            for name in queue_names:
                await broker.purge(name)
        assert await outbox.pending() == 0
        async with db.engine.begin() as connection:
            await connection.run_sync(metadata.drop_all)
        await broker.close()
        await delete_bench_objects(amqp_url, exchange_name, queue_names)
        return OutboxRun(write, rates["relay"], rates["direct"])
    finally:
        await broker.close()
        await db.close()


def _fresh(envelopes: list[Envelope]) -> list[Envelope]:
    """The same messages under new ids (the outbox's message_id is unique)."""
    return [Envelope.new(e.type, e.json(), app_id=e.app_id, correlation_id=e.correlation_id) for e in envelopes]


assert QUEUES_PER_EXCHANGE == 3  # the same fanout shape as `bench bus`
