"""Warehouse CSV files for fuzzing the FTP feed (hypothesis): valid files, near-valid ones shaken in every way
a careless warehouse or a broken link could (encodings, byte-order marks, line endings, quotes, NUL bytes,
huge lines, many fields, extreme `as_of` values, stray bytes, a cut end), and plain random bytes.

The feed's property over all of them: a file is imported whole or rejected whole with a report; nothing
crashes, hangs or is tried again."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

# One line of printable text: no control character or line separator that a reader could split it at.
REPORT_LINE = re.compile("line [1-9][0-9]*: [^\x00-\x1f\x7f-\x9f\u2028\u2029]+")

GOOD_IDS = ["WH-1", "WH-2", "SKU-1", "SKU-2", "SKU-3", "x.y_z", "A" * 64]
# "\udcff" stands for a byte that is not UTF-8 (written as such by the utf-8 encodings below)
BAD_IDS = ["", "-x", "SKU 1", "ü", "A" * 65, "a\x00b", "\ufeffSKU-1", "SKU-1\u2028", "SKU-1\n", "SKU-\udcff"]
GOOD_NUMBERS = ["0", "7", "1000000000"]
BAD_NUMBERS = ["1000000001", "-1", "1.5", "", "٣", " 1", "9" * 30, "0x10", "1e3"]
EXTREME_AS_OF = [
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59-05:00",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "1970-01-01T00:30:00+01:00",
    "2026-11-01T00:00:00+23:59",
    "2026-02-30T00:00:00Z",
    "2026-11-01T24:00:00Z",
    "-62135596800",
    "253402300800",
    "1e308",
    "nan",
    "2026-11-01",
    "2026-11-01T00:00:00.123456789Z",
]
HUGE_LINES = [
    "x" * 70_000,  # one field over the line limit
    "WH-1,SKU-1," + "9" * 66_000,
    "W" * 70_000 + ",SKU-1,1,",  # the right number of fields, one of them huge
    "WH-1,SKU-1,1,2026" + "0" * 66_000,
    "," * 300,  # many empty fields
    "a," * 40_000,  # many tiny fields, over the line limit too
    '"' + "q\n" * 40_000 + '",SKU-1,1',  # a quoted field of many short lines: one long record
]
ODD_FIELDS = ['"unterminated', 'a"b', '""', '"a""b"', '"a\nb"', '"a\r\nb"', "\x00", "\r", "\x1a", " ", "\t"]
HEADERS = [  # mostly good ones, so that the lines after them are checked
    *["warehouse_id,sku,on_hand,as_of"] * 6,
    "warehouse_id,sku,on_hand",
    "\ufeffwarehouse_id,sku,on_hand,as_of",
    "AS_OF,Sku,warehouse_id,on_hand",
    "warehouse_id,sku",
    "warehouse_id,sku,on_hand,on_hand",
    "warehouse_id,sku,on_hand,colour",
    "warehouse_id,sku,on_hand,\udcff,\udcff",
    "",
    '"warehouse_id","sku","on_hand"',
]
OFFSETS = [None, UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=23, minutes=59))]


def _iso(moment: datetime) -> str:
    return moment.isoformat()


recent_as_of = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2026, 1, 1), timezones=st.sampled_from(OFFSETS)
).map(_iso)
any_as_of = st.one_of(
    st.sampled_from(EXTREME_AS_OF),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)).map(_iso),
    recent_as_of,
)

valid_line = st.builds(
    lambda warehouse, sku, on_hand, as_of: f"{warehouse},{sku},{on_hand},{as_of}",
    st.sampled_from(GOOD_IDS),
    st.sampled_from(GOOD_IDS),
    st.sampled_from(GOOD_NUMBERS),
    st.one_of(st.just(""), recent_as_of),
)
a_field = st.one_of(
    st.sampled_from(GOOD_IDS + BAD_IDS),
    st.sampled_from(GOOD_NUMBERS + BAD_NUMBERS),
    any_as_of,
    st.text(max_size=12),
    st.text(max_size=8).map(lambda text: '"' + text.replace('"', '""') + '"'),
    st.sampled_from(ODD_FIELDS),
)
OVERFLOWING = EXTREME_AS_OF[:2]  # years 1 and 9999 with offsets: once OverflowError, a 500 or a file retried
extreme_line = st.sampled_from(OVERFLOWING * 4 + EXTREME_AS_OF).map(lambda as_of: f"WH-1,SKU-1,1,{as_of}")
shaken_line = st.one_of(
    valid_line,
    extreme_line,
    st.lists(a_field, max_size=6).map(",".join),
    st.lists(a_field, min_size=4, max_size=4).map(",".join),
    st.sampled_from(HUGE_LINES),
)
line_ending = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def valid_files(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(valid_line, min_size=1, max_size=8))
    return ("warehouse_id,sku,on_hand,as_of\n" + "".join(f"{line}\n" for line in lines)).encode()


@st.composite
def shaken_files(draw: st.DrawFn) -> bytes:
    ending = draw(line_ending)
    lines = [draw(st.sampled_from(HEADERS)), *draw(st.lists(shaken_line, max_size=8))]
    text = ending.join(lines) + draw(st.sampled_from(["", ending]))
    encoding = draw(st.sampled_from(["utf-8"] * 4 + ["utf-8-sig", "latin-1", "utf-16", "utf-16-be", "cp1252"]))
    content = text.encode(encoding, errors="surrogateescape" if encoding.startswith("utf-8") else "replace")
    if draw(st.integers(0, 3)) == 0:  # stray bytes somewhere (invalid UTF-8 among them)
        at = draw(st.integers(0, len(content)))
        content = content[:at] + draw(st.binary(min_size=1, max_size=6)) + content[at:]
    if draw(st.integers(0, 3)) == 0:  # cut short, as a broken transfer leaves it
        content = content[: draw(st.integers(0, len(content)))]
    return content


def feed_files() -> st.SearchStrategy[bytes]:
    return st.one_of(valid_files(), shaken_files(), st.binary(max_size=2000))


def check_report(text: str, bad_lines: int) -> None:
    """A rejected file's report: one `line <n>: <reason>` per bad line, in line order."""
    lines = text.split("\n")
    assert lines[-1] == "", "the report ends with a line break"
    lines = lines[:-1]
    assert len(lines) == bad_lines >= 1, text[:2000]
    assert all(REPORT_LINE.fullmatch(line) for line in lines), text[:2000]
    numbers = [int(line[5 : line.index(":")]) for line in lines]
    assert numbers == sorted(numbers), text[:2000]
