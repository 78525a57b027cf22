"""A warehouse CSV file read as a stream of checked lines, in batches, so memory stays bounded.

The rules are the HTTP API's (`skuflow.inventory.fields`): the same identifiers, the same range of
`on_hand`, the same `as_of` parsing and future limit. The header is line 1 and names the columns, in any
order: `warehouse_id`, `sku`, `on_hand` and optionally `as_of`. An empty `as_of` cell, or no such column,
means the time the import began. Blank lines are skipped. A line appearing twice for the same warehouse and
SKU is found later, in the database (see `staging`), as keeping every pair in memory would not be bounded.
"""

from __future__ import annotations

import csv
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from skuflow.inventory.fields import MAX_ON_HAND, AsOf
from skuflow.platform.identifiers import IDENTIFIER_RULE, is_identifier

REQUIRED = ("warehouse_id", "sku", "on_hand")
OPTIONAL = ("as_of",)
HEADER_HINT = "warehouse_id,sku,on_hand[,as_of]"
BATCH = 5000

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
        reader = csv.reader(text)
        header, problem = _header(reader)
        if problem:
            yield Batch(bad=[BadLine(1, problem)])
            return
        check = _LineChecker(header, now)
        batch = Batch()
        while True:
            number = reader.line_num + 1  # where the record starts (a quoted field may span lines)
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                batch.bad.append(BadLine(number, f"not readable as CSV: {error}"))
                continue
            if not fields:
                continue
            row = check(number, fields, batch.bad)
            if row is not None:
                batch.rows.append(row)
            if len(batch.rows) + len(batch.bad) >= size:
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
    header = [name.strip().lower() for name in given]
    unknown = [name for name, known in zip(given, header, strict=True) if known not in REQUIRED + OPTIONAL]
    missing = [name for name in REQUIRED if name not in header]
    repeated = sorted({name for name in header if header.count(name) > 1})
    problems = []
    if missing:
        problems.append("missing column " + ", ".join(missing))
    if unknown:
        problems.append("unknown column " + ", ".join(repr(name) for name in unknown))
    if repeated:
        problems.append("repeated column " + ", ".join(repeated))
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

    def __call__(self, number: int, fields: list[str], bad: list[BadLine]) -> Row | None:
        if len(fields) != self.width:
            bad.append(BadLine(number, f"expected {self.width} fields, found {len(fields)}"))
            return None
        problems = ["not valid UTF-8"] if any(_undecodable(value) for value in fields) else []
        warehouse, sku, on_hand_text = fields[self.warehouse], fields[self.sku], fields[self.on_hand]
        if not is_identifier(warehouse):
            problems.append(f"warehouse_id {warehouse!r} is not an identifier ({IDENTIFIER_RULE})")
        if not is_identifier(sku):
            problems.append(f"sku {sku!r} is not an identifier ({IDENTIFIER_RULE})")
        on_hand = _on_hand(on_hand_text)
        if on_hand is None:
            problems.append(f"on_hand {on_hand_text!r} is not a whole number from 0 to {MAX_ON_HAND}")
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
            if len(self._times) > 10_000:
                self._times.clear()
            try:
                known = _as_of.validate_python(text.strip())
            except ValidationError as error:
                reason = error.errors()[0]["msg"].removeprefix("Value error, ")
                known = f"as_of {text!r}: {reason}"
            self._times[text] = known
        return known


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
