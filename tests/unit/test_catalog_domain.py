from decimal import Decimal

import pytest

from skuflow.catalog.domain import format_price, is_newer, parse_price
from skuflow.platform.identifiers import is_identifier


@pytest.mark.parametrize(
    ("text", "price"),
    [
        ("19.90", Decimal("19.90")),
        ("19.9", Decimal("19.90")),
        ("7", Decimal("7.00")),
        ("0", Decimal("0.00")),
        ("0.05", Decimal("0.05")),
        ("10.500", Decimal("10.50")),  # trailing zeros are not decimal places of the value
        ("9999999999.99", Decimal("9999999999.99")),
        ("0009999999999", Decimal("9999999999.00")),  # leading zeros are not digits of the value
    ],
)
def test_an_acceptable_price_is_read_exactly_with_two_decimals(text: str, price: Decimal):
    parsed = parse_price(text)
    assert parsed == price
    assert parsed.as_tuple().exponent == -2


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("-0.01", "must not be negative"),
        ("-5", "must not be negative"),
        ("19.999", "at most 2 decimal places"),
        ("0.001", "at most 2 decimal places"),
        ("10000000000", "at most 10 digits before the decimal point"),
        ("abc", "decimal number written as a string"),
        ("", "decimal number written as a string"),
        ("1e3", "decimal number written as a string"),
        ("NaN", "decimal number written as a string"),
        ("Infinity", "decimal number written as a string"),
        ("1,50", "decimal number written as a string"),
        (" 1.50", "decimal number written as a string"),
        ("1.", "decimal number written as a string"),
        (".5", "decimal number written as a string"),
        ("+1", "decimal number written as a string"),
    ],
)
def test_an_unacceptable_price_is_refused_saying_why(text: str, complaint: str):
    with pytest.raises(ValueError, match=complaint):
        parse_price(text)


def test_a_price_is_shown_with_two_decimals():
    assert format_price(Decimal("19.9")) == "19.90"
    assert format_price(Decimal("0")) == "0.00"
    assert format_price(Decimal("9999999999.99")) == "9999999999.99"
    assert format_price(parse_price("3")) == "3.00"


def test_only_a_newer_revision_replaces_the_stored_availability():
    assert is_newer(1, 0), "anything beats nothing learned yet"
    assert is_newer(5, 4)
    assert not is_newer(4, 4), "a duplicate changes nothing"
    assert not is_newer(3, 4), "an older answer arriving late changes nothing"


def test_sku_ids_follow_the_identifier_rule():
    for good in ("SKU-1", "a", "A.b_c-9", "9" * 64):
        assert is_identifier(good), good
    for bad in ("", "-SKU", ".x", "SK U", "a/b", "9" * 65, "é"):
        assert not is_identifier(bad), bad
