"""Catalog's rules, as plain functions over plain values: no I/O, tested in milliseconds.

- A price is a decimal written as a string ("19.90"): money never passes through a float. It is at least
  0, has at most 2 decimal places and at most 10 digits before the point; it is shown with 2 decimals.
- Availability comes from inventory with inventory's `revision`. It is applied only when its revision is
  newer than the one stored: an older answer arriving late, or a duplicate, changes nothing.
"""

from __future__ import annotations

import re
from decimal import Decimal

PRICE_INTEGER_DIGITS = 10
PRICE_DECIMAL_PLACES = 2
_PLAIN_DECIMAL = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")  # no exponent, sign only to say "negative" clearly


def parse_price(text: str) -> Decimal:
    """The price written in `text`; ValueError, saying what is wrong, if it is not an acceptable one."""
    if not _PLAIN_DECIMAL.match(text):
        raise ValueError(f'price must be a decimal number written as a string, e.g. "19.90" (got {text!r})')
    price = Decimal(text)
    if price < 0:
        raise ValueError("price must not be negative")
    whole, _, fraction = text.lstrip("-").partition(".")
    if len(fraction.rstrip("0")) > PRICE_DECIMAL_PLACES:
        raise ValueError(f"price has at most {PRICE_DECIMAL_PLACES} decimal places")
    if len(whole.lstrip("0")) > PRICE_INTEGER_DIGITS:
        raise ValueError(f"price has at most {PRICE_INTEGER_DIGITS} digits before the decimal point")
    return price.quantize(Decimal(1).scaleb(-PRICE_DECIMAL_PLACES))


def format_price(price: Decimal) -> str:
    """A price as shown: always with 2 decimals ("19.90", "0.00")."""
    return f"{price:.{PRICE_DECIMAL_PLACES}f}"


def is_newer(revision: int, stored_revision: int) -> bool:
    """Whether inventory's answer at `revision` should replace what is stored (0: nothing learned yet)."""
    return revision > stored_revision
