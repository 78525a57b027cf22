"""What a reported stock number may be: one set of rules for the HTTP API and the FTP feed (CONTRACT 3, 4);
what an identifier may be is `platform/identifiers.py`, shared by every service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, StrictInt

from skuflow.platform.db import utc

MAX_ON_HAND = 1_000_000_000
FUTURE_TOLERANCE = timedelta(minutes=5)  # clocks drift; a report from further ahead is a mistake
EARLIEST_AS_OF = datetime(1970, 1, 1, tzinfo=UTC)
AS_OF_RANGE = "as_of must be from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z once its offset is applied"


def as_of_rule(moment: datetime) -> datetime:
    """A time in UTC from 1970 up to a few minutes from now (CONTRACT 8). A time without an offset is UTC."""
    try:
        moment = utc(moment)
    except OverflowError:  # the offset moves it before year 1 or after 9999: no datetime holds it
        raise ValueError(AS_OF_RANGE) from None
    if moment < EARLIEST_AS_OF:
        raise ValueError(AS_OF_RANGE)
    if moment > datetime.now(UTC) + FUTURE_TOLERANCE:
        raise ValueError("as_of is in the future")
    return moment


def as_of_text(value: object) -> object:
    """An ISO-8601 text (or a datetime, from our own code), never a number: pydantic would read 1.0 as seconds
    since 1970, and the contract's `as_of` is a date-time text (found by the API fuzzer)."""
    if isinstance(value, int | float):
        raise ValueError("as_of must be an ISO-8601 date-time text, e.g. 2026-11-25T08:00:00Z, not a number")
    return value


OnHand = Annotated[StrictInt, Field(ge=0, le=MAX_ON_HAND)]
AsOf = Annotated[datetime, BeforeValidator(as_of_text), AfterValidator(as_of_rule)]
