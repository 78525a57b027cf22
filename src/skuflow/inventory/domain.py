"""Inventory's rules, as plain functions over plain values: no I/O, tested in milliseconds.

- A warehouse reports absolute numbers. A number whose `as_of` is not newer than the one recorded for the
  same warehouse and SKU is stale: ignored, and counted as such.
- A SKU's `on_hand` is the sum over its warehouses; `available_for_sale = max(0, on_hand - safety_stock)`.
- `revision` is 1 when a SKU is created and grows by one with every change of its `on_hand` or
  `safety_stock` (one report changes a SKU at most once: it comes from one warehouse, and a warehouse
  may name a SKU only once per report). Every such change is announced (`sku_processed`).
- A repeated number with a newer `as_of` moves the recorded `as_of` forward and changes nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime


def available_for_sale(on_hand: int, safety_stock: int) -> int:
    return max(0, on_hand - safety_stock)


def is_stale(as_of: datetime, recorded_as_of: datetime | None) -> bool:
    return recorded_as_of is not None and as_of <= recorded_as_of


@dataclass(frozen=True, slots=True)
class ReportedLevel:
    warehouse_id: str
    sku: str
    on_hand: int
    as_of: datetime


@dataclass(frozen=True, slots=True)
class RecordedLevel:
    on_hand: int
    as_of: datetime


@dataclass(frozen=True, slots=True)
class SkuTotals:
    on_hand: int
    revision: int  # 0: the SKU does not exist yet


@dataclass
class ReportPlan:
    """What recording a report does: which levels to write, which SKUs change, what to answer."""

    levels: list[ReportedLevel] = field(default_factory=list)  # new or moved numbers (or only a newer as_of)
    new_levels: set[tuple[str, str]] = field(default_factory=set)  # (warehouse, sku) pairs not yet recorded
    changed: dict[str, SkuTotals] = field(default_factory=dict)  # sku -> its totals after the report
    accepted: int = 0
    stale: int = 0


def duplicate_items(items: Iterable[tuple[str, str]]) -> dict[int, str]:
    """Index -> complaint, for each item that repeats an earlier (warehouse, SKU) of the same report."""
    first_seen: dict[tuple[str, str], int] = {}
    duplicates: dict[int, str] = {}
    for index, key in enumerate(items):
        if key in first_seen:
            duplicates[index] = f"warehouse {key[0]} reports {key[1]} twice (items {first_seen[key]} and {index})"
        else:
            first_seen[key] = index
    return duplicates


def plan_report(
    reported: Iterable[ReportedLevel],
    recorded: Mapping[tuple[str, str], RecordedLevel],
    totals: Mapping[str, SkuTotals],
) -> ReportPlan:
    """Decide what a report changes, given what is recorded for its warehouse/SKU pairs and its SKUs."""
    plan = ReportPlan()
    for level in reported:
        key = (level.warehouse_id, level.sku)
        before = recorded.get(key)
        if before is not None and is_stale(level.as_of, before.as_of):
            plan.stale += 1
            continue
        plan.accepted += 1
        plan.levels.append(level)
        if before is None:
            plan.new_levels.add(key)
        current = totals.get(level.sku, SkuTotals(on_hand=0, revision=0))
        on_hand = current.on_hand - (before.on_hand if before else 0) + level.on_hand
        if current.revision == 0 or on_hand != current.on_hand:
            plan.changed[level.sku] = SkuTotals(on_hand=on_hand, revision=current.revision + 1)
    return plan
