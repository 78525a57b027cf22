from datetime import UTC, datetime, timedelta

import pytest

from skuflow.inventory.domain import (
    RecordedLevel,
    ReportedLevel,
    SkuTotals,
    available_for_sale,
    duplicate_items,
    is_stale,
    plan_report,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def test_available_for_sale_never_goes_below_zero():
    assert available_for_sale(10, 3) == 7
    assert available_for_sale(2, 5) == 0


def test_a_number_not_newer_than_the_recorded_one_is_stale():
    assert is_stale(T0, T0)
    assert is_stale(T0 - timedelta(seconds=1), T0)
    assert not is_stale(T0 + timedelta(seconds=1), T0)
    assert not is_stale(T0, None)


def test_a_first_report_creates_the_sku_at_revision_one_even_with_zero():
    plan = plan_report([ReportedLevel("WH-1", "A", 0, T0)], {}, {})
    assert plan.changed == {"A": SkuTotals(on_hand=0, revision=1)}
    assert plan.new_levels == {("WH-1", "A")}
    assert (plan.accepted, plan.stale) == (1, 0)


def test_a_new_warehouse_adds_to_the_sum_and_bumps_the_revision():
    plan = plan_report(
        [ReportedLevel("WH-2", "A", 4, T0)], {("WH-1", "A"): RecordedLevel(3, T0)}, {"A": SkuTotals(3, 1)}
    )
    assert plan.changed == {"A": SkuTotals(on_hand=7, revision=2)}


def test_a_repeat_with_a_newer_as_of_is_accepted_but_changes_nothing():
    later = T0 + timedelta(hours=1)
    plan = plan_report(
        [ReportedLevel("WH-1", "A", 3, later)], {("WH-1", "A"): RecordedLevel(3, T0)}, {"A": SkuTotals(3, 1)}
    )
    assert (plan.accepted, plan.changed, plan.levels) == (1, {}, [ReportedLevel("WH-1", "A", 3, later)])


def test_stale_items_are_counted_and_left_out():
    recorded = {("WH-1", "A"): RecordedLevel(3, T0)}
    plan = plan_report(
        [ReportedLevel("WH-1", "A", 9, T0), ReportedLevel("WH-1", "B", 1, T0)], recorded, {"A": SkuTotals(3, 1)}
    )
    assert (plan.accepted, plan.stale) == (1, 1)
    assert set(plan.changed) == {"B"}


def test_a_warehouse_naming_a_sku_twice_is_pointed_at():
    assert duplicate_items([("W", "A"), ("W", "B"), ("W", "A"), ("V", "A")]) == {
        2: "warehouse W reports A twice (items 0 and 2)"
    }


def test_an_identifier_is_the_whole_string():
    from skuflow.platform.identifiers import an_identifier

    assert an_identifier("SKU-1") == "SKU-1"
    for bad in ("SKU-1\n", "SKU 1", "-SKU", "x" * 65, ""):
        with pytest.raises(ValueError, match="must be 1-64 of"):
            an_identifier(bad)
