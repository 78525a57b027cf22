"""What a reported stock number may be: one set of rules for the HTTP API and the FTP feed (CONTRACT 3, 4);
what an identifier may be is `platform/identifiers.py`, shared by every service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, Field, StrictInt

from skuflow.platform.db import utc

MAX_ON_HAND = 1_000_000_000
FUTURE_TOLERANCE = timedelta(minutes=5)  # clocks drift; a report from further ahead is a mistake


def not_in_the_future(moment: datetime) -> datetime:
    moment = utc(moment)  # a time without an offset is taken as UTC
    if moment > datetime.now(UTC) + FUTURE_TOLERANCE:
        raise ValueError("as_of is in the future")
    return moment


OnHand = Annotated[StrictInt, Field(ge=0, le=MAX_ON_HAND)]
AsOf = Annotated[datetime, AfterValidator(not_in_the_future)]
