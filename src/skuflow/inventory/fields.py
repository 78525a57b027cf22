"""What a reported stock number may be: one set of rules for the HTTP API and the FTP feed (CONTRACT 3, 4)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, Field, StrictInt
from pydantic_core import PydanticCustomError

from skuflow.platform.db import utc

IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
IDENTIFIER_RULE = "1-64 of A-Z a-z 0-9 . _ -, not starting with . _ -"
MAX_ON_HAND = 1_000_000_000
FUTURE_TOLERANCE = timedelta(minutes=5)  # clocks drift; a report from further ahead is a mistake

is_identifier = re.compile(IDENTIFIER).fullmatch  # fullmatch: `$` alone would let a final newline through


def not_in_the_future(moment: datetime) -> datetime:
    moment = utc(moment)  # a time without an offset is taken as UTC
    if moment > datetime.now(UTC) + FUTURE_TOLERANCE:
        raise ValueError("as_of is in the future")
    return moment


def an_identifier(value: str) -> str:
    """The rule in words, not the regular expression, in the error a client sees."""
    if not is_identifier(value):
        raise PydanticCustomError("identifier", "must be {rule}", {"rule": IDENTIFIER_RULE})
    return value


Identifier = Annotated[
    str, AfterValidator(an_identifier), Field(description=IDENTIFIER_RULE, json_schema_extra={"pattern": IDENTIFIER})
]
OnHand = Annotated[StrictInt, Field(ge=0, le=MAX_ON_HAND)]
AsOf = Annotated[datetime, AfterValidator(not_in_the_future)]
