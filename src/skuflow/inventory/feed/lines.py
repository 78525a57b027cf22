"""A warehouse CSV file read as a stream of checked lines, in batches, so memory stays bounded.

The rules are the HTTP API's (`skuflow.inventory.fields`): the same identifiers, the same range of
`on_hand`, the same `as_of` parsing and future limit. The header is line 1 and names the columns, in any
order: `warehouse_id`, `sku`, `on_hand` and optionally `as_of`. An empty `as_of` cell, or no such column,
means the time the import began. Blank lines are skipped. A line appearing twice for the same warehouse and
SKU is found later, in the database (see `staging`), as keeping every pair in memory would not be bounded.

Memory is bounded per line too: a line (a CSV record, its quoted line breaks included) of more than
`MAX_LINE_BYTES` or `MAX_FIELDS` is refused as it is read, before the csv module splits it (one line of
millions of tiny fields would otherwise become millions of strings), and reading goes on after it. Values
quoted in a reason are cut short, so that a report line stays short whatever the line held.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

from pydantic import TypeAdapter, ValidationError

from skuflow.inventory.fields import MAX_ON_HAND, AsOf
from skuflow.platform.identifiers import IDENTIFIER_RULE, is_identifier

REQUIRED = ("warehouse_id", "sku", "on_hand")
OPTIONAL = ("as_of",)
HEADER_HINT = "warehouse_id,sku,on_hand[,as_of]"
BATCH = 5000
MAX_LINE_BYTES = 64 * 1024  # the line's bytes as sent, its line break not counted
MAX_FIELDS = 100  # a valid line has 3 or 4; the cap keeps the split of a bad one small
SHOWN = 40  # characters of a value quoted in a reason
_CACHED_AS_OF = 64  # characters: an as_of text longer than any valid one is checked, never kept

log = logging.getLogger("skuflow.inventory.feed")

# (line number, warehouse_id, sku, on_hand, as_of)
Row = tuple[int, str, str, int, datetime]

_as_of = TypeAdapter(AsOf)


@dataclass(frozen=True, slots=True)
class BadLine:
    number: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.number}: {self.reason}"


@dataclass(slots=True)
class Batch:
    rows: list[Row] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


def read_batches(path: Path, now: datetime, size: int = BATCH) -> Generator[Batch, None, None]:
    """The file's lines, checked, `size` at a time. A bad header ends the file at line 1."""
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as text:
        lines = _MeasuredLines(text)
        reader = csv.reader(lines)
        header, problem = _header(reader)
        if problem:
            yield Batch(bad=[BadLine(1, problem)])
            return
        check = _LineChecker(header, now)
        batch = Batch()
        while True:
            number = lines.number + 1  # where the record starts (a quoted field may span lines)
            lines.new_record()
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                batch.bad.append(BadLine(number, f"not readable as CSV: {error}"))
            except _OverLimit as over:
                batch.bad.append(BadLine(number, str(over)))
            else:
                if not fields:
                    continue
                row = check.guarded(number, fields, batch.bad)
                if row is not None:
                    batch.rows.append(row)
            if len(batch.rows) + len(batch.bad) >= size:  # bad lines count too: a batch of them is bounded
                yield batch
                batch = Batch()
        if batch.rows or batch.bad:
            yield batch


def _header(reader: Iterator[list[str]]) -> tuple[list[str], str | None]:
    try:
        given = next(reader)
    except StopIteration:
        return [], f"the file is empty: expected the header {HEADER_HINT}"
    except csv.Error as error:
        return [], f"not readable as CSV: {error}"
    except _OverLimit as over:
        return [], str(over)
    header = [name.strip().lower() for name in given]
    unknown = [name for name, known in zip(given, header, strict=True) if known not in REQUIRED + OPTIONAL]
    missing = [name for name in REQUIRED if name not in header]
    repeated = sorted({name for name in header if header.count(name) > 1})
    problems = []
    if missing:
        problems.append("missing column " + ", ".join(missing))
    if unknown:
        problems.append("unknown column " + ", ".join(_shown(name) for name in unknown))
    if repeated:
        known = REQUIRED + OPTIONAL
        problems.append("repeated column " + ", ".join(name if name in known else _shown(name) for name in repeated))
    if problems:
        return header, f"bad header ({'; '.join(problems)}): expected {HEADER_HINT}"
    return header, None


class _LineChecker:
    """Checks one line against the rules; fast, as it runs a million times for a big file."""

    def __init__(self, header: list[str], now: datetime) -> None:
        self.width = len(header)
        self.warehouse, self.sku, self.on_hand = (header.index(name) for name in REQUIRED)
        self.as_of_at = header.index("as_of") if "as_of" in header else None
        self.now = now
        self._times: dict[str, datetime | str] = {}  # as_of text -> its time, or why it is not one
        self._faulted = False

    def guarded(self, number: int, fields: list[str], bad: list[BadLine]) -> Row | None:
        """The line checked; a fault of the checks themselves is a bad line too, not a file retried for ever."""
        try:
            return self(number, fields, bad)
        except Exception as error:  # a bug of ours: the line is reported, the first trace logged for us
            if not self._faulted:
                log.exception("line %d could not be checked", number)
                self._faulted = True
            bad.append(BadLine(number, f"could not be checked ({type(error).__name__}); please report this"))
            return None

    def __call__(self, number: int, fields: list[str], bad: list[BadLine]) -> Row | None:
        if len(fields) != self.width:
            bad.append(BadLine(number, f"expected {self.width} fields, found {len(fields)}"))
            return None
        problems = ["not valid UTF-8"] if any(_undecodable(value) for value in fields) else []
        warehouse, sku, on_hand_text = fields[self.warehouse], fields[self.sku], fields[self.on_hand]
        if not is_identifier(warehouse):
            problems.append(f"warehouse_id {_shown(warehouse)} is not an identifier ({IDENTIFIER_RULE})")
        if not is_identifier(sku):
            problems.append(f"sku {_shown(sku)} is not an identifier ({IDENTIFIER_RULE})")
        on_hand = _on_hand(on_hand_text)
        if on_hand is None:
            problems.append(f"on_hand {_shown(on_hand_text)} is not a whole number from 0 to {MAX_ON_HAND}")
        as_of = self._as_of(fields[self.as_of_at]) if self.as_of_at is not None else self.now
        if isinstance(as_of, str):
            problems.append(as_of)
        if problems:
            bad.append(BadLine(number, "; ".join(problems)))
            return None
        assert on_hand is not None
        assert isinstance(as_of, datetime)
        return (number, warehouse, sku, on_hand, as_of)

    def _as_of(self, text: str) -> datetime | str:
        if not text.strip():
            return self.now
        known = self._times.get(text)
        if known is None:
            try:
                known = _as_of.validate_python(text.strip())
            except ValidationError as error:
                reason = error.errors()[0]["msg"].removeprefix("Value error, ")
                known = f"as_of {_shown(text)}: {reason}"
            if len(text) <= _CACHED_AS_OF:  # a file's times are mostly a few repeated ones
                if len(self._times) > 10_000:
                    self._times.clear()
                self._times[text] = known
        return known


class _OverLimit(Exception):
    """A line over a limit, found before the csv module split it; the message says which limit."""


class _MeasuredLines:
    """The file's physical lines for the csv module, each measured as it is read (never more than
    MAX_LINE_BYTES of it held): a record whose lines together pass a limit raises `_OverLimit` from within
    the csv module's read, which drops the record and reads on from the next line."""

    def __init__(self, text: TextIO) -> None:
        self._text = text
        self.number = 0  # physical lines read so far
        self._bytes = 0  # of the record being read
        self._separators = 0

    def new_record(self) -> None:
        self._bytes = self._separators = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self._text.readline(MAX_LINE_BYTES + 2)  # room for the longest allowed line and its "\r\n"
        if not line:
            raise StopIteration
        self.number += 1
        content = line.rstrip("\r\n")
        self._bytes += _size(content)
        if self._bytes > MAX_LINE_BYTES:
            if content == line:  # cut short by the read: measure the rest of it without keeping it
                self._bytes += self._skip_rest()
            raise _OverLimit(f"{self._bytes:,} bytes, over the {MAX_LINE_BYTES:,}-byte limit of a line")
        self._separators += content.count(",")
        if self._separators >= MAX_FIELDS:
            raise _OverLimit(f"{self._separators + 1:,} fields, over the limit of {MAX_FIELDS} fields in a line")
        return line

    def _skip_rest(self) -> int:
        """Read to the end of the current line, a piece at a time; answer its bytes (the ending not counted)."""
        skipped = 0
        while piece := self._text.readline(MAX_LINE_BYTES):  # ends: every read consumes the file
            content = piece.rstrip("\r\n")
            skipped += _size(content)
            if content != piece:
                break
        return skipped


def _shown(value: str) -> str:
    """A value as a reason quotes it: escaped (a report line stays one line of UTF-8) and cut short."""
    if len(value) <= SHOWN:
        return repr(value)
    return f"{value[:SHOWN]!r}... ({len(value):,} characters)"


def _size(content: str) -> int:
    """Bytes the text was in the file (undecodable bytes arrive as lone surrogates, one each)."""
    return len(content) if content.isascii() else len(content.encode("utf-8", "surrogateescape"))


def _on_hand(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    value = int(text)
    return value if value <= MAX_ON_HAND else None


def _undecodable(value: str) -> bool:
    """Bytes that were not UTF-8 arrive as lone surrogates (errors="surrogateescape")."""
    if value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
