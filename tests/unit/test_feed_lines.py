"""Reading a warehouse CSV file: the header, each line's checks (the HTTP API's rules), line numbers."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from skuflow.inventory.feed import lines
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


def test_a_line_over_64_kib_is_named_with_its_size_and_the_lines_after_it_are_still_read(tmp_path: Path):
    long = "WH-1,SKU-1,1," + "x" * (70_001 - 13)
    rows, bad = read(tmp_path, f"warehouse_id,sku,on_hand,as_of\n{long}\nWH-1,SKU-2,2,\nWH-1,SKU 3,3,\n")
    assert bad[0] == "line 2: 70,001 bytes, over the 65,536-byte limit of a line"
    assert bad[1:] == ["line 4: sku 'SKU 3' is not an identifier (1-64 of A-Z a-z 0-9 . _ -, not starting with . _ -)"]
    assert rows == [(3, "WH-1", "SKU-2", 2, NOW)]


def test_the_byte_limit_counts_bytes_not_characters_and_a_record_spanning_lines_counts_whole(tmp_path: Path):
    wide = "é" * 32_769  # 65,538 bytes in 32,769 characters
    spanning = '"' + "\n".join(["y" * 30_000] * 3) + '",SKU-1,1'  # three lines of 30,000 bytes, one record
    rows, bad = read(tmp_path, f"warehouse_id,sku,on_hand\n{wide}\n{spanning}\nWH-1,SKU-2,2\n")
    assert bad[0] == "line 2: 65,538 bytes, over the 65,536-byte limit of a line"
    assert bad[1].startswith("line 3: ")
    assert bad[1].endswith("over the 65,536-byte limit of a line")
    assert rows[-1][1:3] == ("WH-1", "SKU-2")


def test_a_line_of_too_many_fields_is_refused_before_it_is_split(tmp_path: Path):
    rows, bad = read(tmp_path, "warehouse_id,sku,on_hand\n" + "," * 5000 + "\nWH-1,SKU-1,1\n")
    assert bad == ["line 2: 5,001 fields, over the limit of 100 fields in a line"]
    assert len(rows) == 1


def test_a_header_of_too_many_fields_rejects_the_file_at_line_1(tmp_path: Path):
    rows, bad = read(tmp_path, "sku," * 1000 + "\nWH-1,SKU-1,1\n")
    assert (rows, bad) == ([], ["line 1: 1,001 fields, over the limit of 100 fields in a line"])
    rows, bad = read(tmp_path, "sku," * 100_000 + "\nWH-1,SKU-1,1\n")  # its columns once took minutes to check
    assert (rows, bad) == ([], ["line 1: 400,000 bytes, over the 65,536-byte limit of a line"])


def test_every_reason_can_be_written_to_the_utf8_report_and_shows_long_values_shortened(tmp_path: Path):
    # A header repeating a column whose name is not UTF-8 once crashed the import while writing the report.
    _, bad = read(tmp_path, b"warehouse_id,sku,on_hand,\xff,\xff\n")
    assert bad[0].startswith("line 1: bad header")
    for line in bad:
        line.encode("utf-8")
    _, bad = read(tmp_path, "warehouse_id,sku,on_hand\nWH-1," + "s" * 60_000 + ",1\n")
    assert len(bad[0]) < 300, bad[0][:300]
    assert "'sssss" in bad[0]
    assert "(60,000 characters)" in bad[0]


def test_many_long_distinct_as_of_values_do_not_fill_memory(tmp_path: Path):
    """Each line's as_of a different 3,000 characters: the reader's cache of times and the bad lines'
    reasons once kept them all (10,000 of them) and the batch's reasons whole."""
    path = tmp_path / "stock.csv"
    with path.open("w") as out:
        out.write("warehouse_id,sku,on_hand,as_of\n")
        for n in range(10_000):
            out.write(f"WH-1,SKU-{n},1,{n:05d}{'x' * 3000}\n")
    tracemalloc.start()
    try:
        bad = sum(len(batch.bad) for batch in read_batches(path, NOW, 5000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert bad == 10_000
    assert peak < 8 * 1024 * 1024, f"peak {peak:,} bytes"


def test_a_fault_of_the_checks_themselves_is_a_bad_line_not_an_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A bug of ours in a check (injected here) must not escape: the importer would fail the same way at
    every poll. The line is reported and the rest of the file is still read."""

    def broken(text: str) -> int | None:
        if text == "7":
            raise ArithmeticError("injected")
        return int(text)

    monkeypatch.setattr(lines, "_on_hand", broken)
    rows, bad = read(tmp_path, "warehouse_id,sku,on_hand\nWH-1,SKU-1,7\nWH-1,SKU-2,2\n")
    assert bad == ["line 2: could not be checked (ArithmeticError); please report this"]
    assert [row[2] for row in rows] == ["SKU-2"]
