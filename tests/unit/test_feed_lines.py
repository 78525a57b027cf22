"""Reading a warehouse CSV file: the header, each line's checks (the HTTP API's rules), line numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from skuflow.inventory.feed.lines import BadLine, read_batches

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def read(tmp_path: Path, content: bytes | str, size: int = 5000) -> tuple[list[tuple], list[str]]:
    path = tmp_path / "stock.csv"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    rows, bad = [], []
    for batch in read_batches(path, NOW, size):
        rows += batch.rows
        bad += [str(line) for line in batch.bad]
    return rows, bad


def test_good_lines_become_rows_with_their_line_numbers_and_the_import_time(tmp_path: Path):
    rows, bad = read(tmp_path, "warehouse_id,sku,on_hand\nWH-1,SKU-1,12\n\nWH-2,SKU-1,0\n")
    assert bad == []
    assert rows == [(2, "WH-1", "SKU-1", 12, NOW), (4, "WH-2", "SKU-1", 0, NOW)]  # a blank line 3 is skipped


def test_columns_may_come_in_any_order_with_as_of_and_a_byte_order_mark(tmp_path: Path):
    content = "\ufeffAs_Of,sku,warehouse_id,on_hand\r\n2026-11-24T10:00:00+01:00,SKU-1,WH-1,7\r\n,SKU-2,WH-1,3\r\n"
    rows, bad = read(tmp_path, content)
    assert bad == []
    assert rows == [
        (2, "WH-1", "SKU-1", 7, datetime(2026, 11, 24, 9, 0, tzinfo=UTC)),
        (3, "WH-1", "SKU-2", 3, NOW),  # an empty as_of cell: the import time
    ]


def test_a_time_without_offset_is_utc(tmp_path: Path):
    rows, _ = read(tmp_path, "warehouse_id,sku,on_hand,as_of\nWH-1,SKU-1,1,2026-11-24T10:00:00\n")
    assert rows[0][4] == datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("WH-1,SKU 1,3,", "sku 'SKU 1' is not an identifier"),
        ("-WH,SKU-1,3,", "warehouse_id '-WH' is not an identifier"),
        ("WH-1,SKU-1,-3,", "on_hand '-3' is not a whole number from 0 to 1000000000"),
        ("WH-1,SKU-1,3.5,", "on_hand '3.5' is not"),
        ("WH-1,SKU-1,1000000001,", "on_hand '1000000001' is not"),
        ("WH-1,SKU-1,,", "on_hand '' is not"),
        ("WH-1,SKU-1,3,yesterday", "as_of 'yesterday': Input should be a valid datetime"),
        ("WH-1,SKU-1,3,2999-01-01T00:00:00Z", "as_of is in the future"),
        ("WH-1,SKU-1,3", "expected 4 fields, found 3"),
        ("WH-1,SKU-1,3,,extra", "expected 4 fields, found 5"),
        # Issue 14, defect 4: years 1970 to 9999 once the offset is applied (these raised OverflowError).
        ("WH-1,SKU-1,3,0001-01-01T00:00:00+05:00", "as_of must be from 1970-01-01T00:00:00Z to 9999"),
        ("WH-1,SKU-1,3,9999-12-31T23:59:59-05:00", "as_of must be from 1970-01-01T00:00:00Z to 9999"),
        ("WH-1,SKU-1,3,1970-01-01T00:30:00+01:00", "as_of must be from 1970-01-01T00:00:00Z to 9999"),
    ],
)
def test_a_bad_line_is_named_with_its_number_and_reason(tmp_path: Path, line: str, reason: str):
    rows, bad = read(tmp_path, f"warehouse_id,sku,on_hand,as_of\nWH-1,SKU-0,1,\n{line}\n")
    assert len(rows) == 1
    assert len(bad) == 1
    assert bad[0].startswith("line 3: ")
    assert reason in bad[0]


def test_every_fault_of_a_line_is_listed(tmp_path: Path):
    _, bad = read(tmp_path, "warehouse_id,sku,on_hand\nW H,S K,x\n")
    assert bad == [
        "line 2: warehouse_id 'W H' is not an identifier (1-64 of A-Z a-z 0-9 . _ -, not starting with . _ -); "
        "sku 'S K' is not an identifier (1-64 of A-Z a-z 0-9 . _ -, not starting with . _ -); "
        "on_hand 'x' is not a whole number from 0 to 1000000000"
    ]


def test_bytes_that_are_not_utf8_are_named(tmp_path: Path):
    _, bad = read(tmp_path, b"warehouse_id,sku,on_hand\nWH-1,SKU-\xff,1\n")
    assert bad[0].startswith("line 2: not valid UTF-8")


def test_a_record_spanning_lines_is_named_by_its_first_line_and_counts_them_all(tmp_path: Path):
    rows, bad = read(tmp_path, 'warehouse_id,sku,on_hand\n"WH\n1",SKU-1,1\nWH-1,SKU-2,2\n')
    assert bad[0].startswith("line 2: warehouse_id 'WH\\n1'")
    assert rows == [(4, "WH-1", "SKU-2", 2, NOW)]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("warehouse_id,sku\n", "bad header (missing column on_hand)"),
        ("warehouse_id,sku,on_hand,colour\n", "bad header (unknown column 'colour')"),
        ("warehouse_id,sku,on_hand,sku\n", "bad header (repeated column sku)"),
        ("WH-1,SKU-1,3\n", "missing column warehouse_id, sku, on_hand"),
    ],
)
def test_a_bad_header_rejects_the_file_at_line_1(tmp_path: Path, header: str, reason: str):
    rows, bad = read(tmp_path, header + "WH-1,SKU-1,3\n")
    assert rows == []
    assert len(bad) == 1
    assert bad[0].startswith("line 1: ")
    assert reason in bad[0]


def test_an_empty_file_is_named_so(tmp_path: Path):
    expected = "line 1: the file is empty: expected the header warehouse_id,sku,on_hand[,as_of]"
    assert read(tmp_path, "") == ([], [expected])


def test_batches_hold_at_most_the_batch_size(tmp_path: Path):
    path = tmp_path / "big.csv"
    path.write_text("warehouse_id,sku,on_hand\n" + "".join(f"WH-1,SKU-{n},{n}\n" for n in range(1050)))
    sizes = [len(batch.rows) + len(batch.bad) for batch in read_batches(path, NOW, size=100)]
    assert sizes == [100] * 10 + [50]


def test_a_bad_line_prints_as_the_errors_report_wants_it():
    assert str(BadLine(7, "on_hand 'x' is not a whole number")) == "line 7: on_hand 'x' is not a whole number"


def test_the_future_limit_is_the_http_apis(tmp_path: Path):
    soon = (datetime.now(UTC) + timedelta(minutes=4)).isoformat()
    rows, bad = read(tmp_path, f"warehouse_id,sku,on_hand,as_of\nWH-1,SKU-1,1,{soon}\n")
    assert (len(rows), bad) == (1, [])


def test_the_earliest_as_of_is_1970_in_utc(tmp_path: Path):
    rows, bad = read(tmp_path, "warehouse_id,sku,on_hand,as_of\nWH-1,SKU-1,1,1969-12-31T23:30:00-01:00\n")
    assert (rows[0][4], bad) == (datetime(1970, 1, 1, 0, 30, tzinfo=UTC), [])
