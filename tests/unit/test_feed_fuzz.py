"""The feed's line reader on fuzzed files (hypothesis, tests/support/feed_files.py): every file is read to
its end, in batches, into rows that pass the HTTP API's rules or bad lines that a report can hold, in a
bounded time; never an exception.

CI runs a bounded number of examples (deterministic); SKUFLOW_PROPERTY_EXAMPLES=N runs 20 N."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from skuflow.inventory.feed.lines import read_batches
from skuflow.inventory.fields import EARLIEST_AS_OF, FUTURE_TOLERANCE, MAX_ON_HAND
from skuflow.platform.identifiers import is_identifier
from tests.support.feed_files import REPORT_LINE, feed_files

EXAMPLES = 20 * int(os.environ.get("SKUFLOW_PROPERTY_EXAMPLES", "10"))
BATCH = 4

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")  # a failing example's huge line


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 200,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(content=feed_files())
def test_any_file_is_read_to_its_end_into_valid_rows_or_reportable_bad_lines(tmp_path: Path, content: bytes):
    path = tmp_path / "fuzzed.csv"
    path.write_bytes(content)
    now = datetime.now(UTC)
    started = time.monotonic()
    numbers: list[int] = []  # of the lines, batch after batch
    for batch in read_batches(path, now, BATCH):
        assert 1 <= len(batch.rows) + len(batch.bad) <= BATCH
        for _, warehouse, sku, on_hand, as_of in batch.rows:
            assert is_identifier(warehouse)
            assert is_identifier(sku)
            assert 0 <= on_hand <= MAX_ON_HAND
            assert as_of.tzinfo is not None
            assert EARLIEST_AS_OF <= as_of <= now + FUTURE_TOLERANCE
        for bad in batch.bad:
            assert REPORT_LINE.fullmatch(str(bad)), str(bad)[:500]
            assert len(str(bad).encode("utf-8")) < 2000
        numbers += sorted([row[0] for row in batch.rows] + [bad.number for bad in batch.bad])
    assert numbers == sorted(set(numbers)), "each line once, in order"
    assert time.monotonic() - started < 10, "a file of a few kilobytes took seconds"
