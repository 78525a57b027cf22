"""Importing warehouse files straight through the importer, on the test's stack: the set-based statements
against the domain's rules on random files, and memory that does not grow with the file."""

from __future__ import annotations

import hashlib
import itertools
import os
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from skuflow.inventory import domain
from skuflow.inventory.db import outbox, skus, stock_levels, warehouse_files
from skuflow.inventory.feed.importer import Delivery, Outcome, import_delivery
from skuflow.platform.db import utc
from skuflow.platform.runtime import ServiceRuntime
from tests.conftest import Stack
from tests.support.feed_files import check_report, feed_files

EXAMPLES = int(os.environ.get("SKUFLOW_PROPERTY_EXAMPLES", "10"))
T0 = datetime(2026, 11, 1, tzinfo=UTC)
_examples = itertools.count()
_files = itertools.count()


@pytest.fixture
async def inventory(stack: Stack) -> AsyncIterator[ServiceRuntime]:
    from skuflow.inventory.service import build_runtime

    runtime = build_runtime(stack.settings())
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


def delivery_of(folder: Path, content: str | bytes) -> tuple[Delivery, Path]:
    """A file as the watcher hands it over (downloaded, hashed), and a work folder of its own."""
    number = next(_files)
    local = folder / f"file-{number}.csv"
    local.write_bytes(content if isinstance(content, bytes) else content.encode())
    workdir = folder / f"work-{number}"
    workdir.mkdir()
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    return Delivery(f"/outbox/file-{number}.csv", local, digest, local.stat().st_size, snapshot=False), workdir


async def import_text(runtime: ServiceRuntime, folder: Path, content: str) -> Outcome:
    return await import_delivery(runtime, *delivery_of(folder, content))


# A file: up to 6 lines (warehouse, SKU, on_hand, as_of), each warehouse and SKU at most once.
Line = tuple[int, int, int, int]
a_file = st.lists(
    st.tuples(st.integers(0, 1), st.integers(0, 2), st.integers(0, 3), st.integers(0, 2)),
    min_size=1,
    max_size=6,
    unique_by=lambda line: (line[0], line[1]),
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 20,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(files=st.lists(a_file, min_size=1, max_size=4))
async def test_a_file_records_what_the_domain_rules_say(inventory: ServiceRuntime, tmp_path: Path, files: list):
    """Split by warehouse, a file is a series of HTTP reports (domain.plan_report); all together, it changes
    each SKU at most once: revision + 1 and one sku_processed when its on_hand moved or the file created it."""
    example = next(_examples)
    names = [f"R{example}-{n}" for n in range(3)]
    levels: dict[tuple[str, str], domain.RecordedLevel] = {}
    totals: dict[str, domain.SkuTotals] = {}
    for lines in files:
        before = dict(totals)
        accepted = stale = 0
        for warehouse in sorted({line[0] for line in lines}):
            reported = [
                domain.ReportedLevel(f"WH-{w}", names[s], on_hand, T0 + timedelta(hours=t))
                for w, s, on_hand, t in lines
                if w == warehouse
            ]
            plan = domain.plan_report(reported, levels, totals)
            accepted, stale = accepted + plan.accepted, stale + plan.stale
            levels.update({(lv.warehouse_id, lv.sku): domain.RecordedLevel(lv.on_hand, lv.as_of) for lv in plan.levels})
            totals.update(plan.changed)
        changed = {sku for sku in totals if sku not in before or totals[sku].on_hand != before[sku].on_hand}
        for sku in totals:
            revision = before[sku].revision if sku in before else 0
            totals[sku] = domain.SkuTotals(totals[sku].on_hand, revision + (sku in changed))

        content = "warehouse_id,sku,on_hand,as_of\n" + "".join(
            f"WH-{w},{names[s]},{on_hand},{(T0 + timedelta(hours=t)).isoformat()}\n" for w, s, on_hand, t in lines
        )
        outcome = await import_text(inventory, tmp_path, content)

        assert (outcome.status, outcome.accepted, outcome.stale, outcome.changed_skus) == (
            "imported",
            accepted,
            stale,
            len(changed),
        )
        async with inventory.db.reading() as session:
            recorded_skus = {
                row.sku: domain.SkuTotals(row.on_hand, row.revision)
                for row in await session.execute(select(skus).where(skus.c.sku.in_(names)))
            }
            recorded_levels = {
                (row.warehouse_id, row.sku): domain.RecordedLevel(row.on_hand, utc(row.as_of))
                for row in await session.execute(select(stock_levels).where(stock_levels.c.sku.in_(names)))
            }
            announced = [
                row.body
                for row in await session.execute(
                    select(outbox.c.body).where(outbox.c.correlation_id == outcome.correlation_id)
                )
            ]
        assert recorded_skus == totals
        assert recorded_levels == levels
        assert sorted(announced) == sorted(f'{{"sku":"{sku}"}}'.encode() for sku in changed)


async def test_memory_does_not_grow_with_the_size_of_the_file(inventory: ServiceRuntime, tmp_path: Path):
    """Python's peak allocations while importing 5,000 lines and 50,000 lines: about the same (one batch
    of lines and one page of outbox rows at a time), where holding the file would cost ten times more."""
    await import_text(inventory, tmp_path, "warehouse_id,sku,on_hand\nWH-1,WARM-UP,1\n")  # first-use allocations
    peaks = {}
    for lines in (5_000, 50_000):
        content = "warehouse_id,sku,on_hand\n" + "".join(f"WH-1,M{lines}-{n},{n % 7}\n" for n in range(lines))
        delivery, workdir = delivery_of(tmp_path, content)
        del content
        tracemalloc.start()
        try:
            outcome = await import_delivery(inventory, delivery, workdir)
            peaks[lines] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert (outcome.status, outcome.lines, outcome.changed_skus) == ("imported", lines, lines)
    assert peaks[50_000] < 2 * peaks[5_000], f"peak bytes by lines: {peaks}"


async def test_one_huge_line_of_tiny_fields_is_rejected_in_bounded_memory(inventory: ServiceRuntime, tmp_path: Path):
    """Issue 14, defect 3: a line of seven million one-letter fields became seven million strings (a 20 MB
    line raised the service's peak by 470 MB). Now it is measured as it is read and refused unsplit."""
    await import_text(inventory, tmp_path, "warehouse_id,sku,on_hand\nWH-1,WARM-UP,1\n")  # first-use allocations
    delivery, workdir = delivery_of(tmp_path, "warehouse_id,sku,on_hand\n" + "a," * 7_000_000 + "\nWH-1,SKU-H,1\n")
    tracemalloc.start()
    try:
        outcome = await import_delivery(inventory, delivery, workdir)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (outcome.status, outcome.lines, outcome.bad_lines) == ("rejected", 2, 1)
    assert outcome.errors_report is not None
    assert outcome.errors_report.read_text() == "line 2: 14,000,000 bytes, over the 65,536-byte limit of a line\n"
    assert peak < 8 * 1024 * 1024, f"peak {peak:,} bytes"
    async with inventory.db.reading() as session:
        assert (await session.execute(select(skus.c.sku).where(skus.c.sku == "SKU-H"))).first() is None


@pytest.mark.parametrize("as_of", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
async def test_an_as_of_out_of_range_once_its_offset_is_applied_rejects_the_file(
    inventory: ServiceRuntime, tmp_path: Path, as_of: str
):
    """Issue 14, defect 4: these raised OverflowError out of the import (the file was downloaded again at
    every poll); now the file is rejected with a report line naming the rule."""
    outcome = await import_text(inventory, tmp_path, f"warehouse_id,sku,on_hand,as_of\nWH-1,SKU-1,1,{as_of}\n")
    assert outcome.status == "rejected"
    assert outcome.errors_report is not None
    assert outcome.errors_report.read_text() == (
        f"line 2: as_of '{as_of}': as_of must be from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z once its offset "
        "is applied\n"
    )


async def _counts(runtime: ServiceRuntime) -> dict[str, int]:
    async with runtime.db.reading() as session:
        return {
            table.name: int(await session.scalar(select(func.count()).select_from(table)) or 0)
            for table in (skus, stock_levels, outbox)
        }


@settings(
    max_examples=5 * EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 20,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(content=feed_files())
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
async def test_any_file_is_imported_whole_or_rejected_whole_with_its_report(
    inventory: ServiceRuntime, tmp_path: Path, content: bytes
):
    """Fuzzed files (tests/support/feed_files.py) into the importer: an outcome every time, never an
    exception (which the watcher would retry for ever); a rejected file records nothing and is reported
    line by line; the ledger has the file once."""
    before = await _counts(inventory)
    delivery, workdir = delivery_of(tmp_path, content)
    outcome = await import_delivery(inventory, delivery, workdir)

    assert outcome.status in ("imported", "rejected")
    if outcome.status == "rejected":
        assert outcome.errors_report is not None
        check_report(outcome.errors_report.read_bytes().decode("utf-8"), outcome.bad_lines)
        assert await _counts(inventory) == before
    else:
        assert outcome.bad_lines == 0
    async with inventory.db.reading() as session:
        ledger = (
            await session.execute(select(warehouse_files.c.status).where(warehouse_files.c.path == delivery.path))
        ).all()
    assert [entry.status for entry in ledger] == [outcome.status]
