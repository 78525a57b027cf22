"""What an identifier (a SKU, a warehouse) may be, for every service (CONTRACT sections 3 and 4): one rule,
stated in words in the errors clients see, never as the regular expression behind it.

`Identifier` is the one type that states it: every SKU or warehouse id of an HTTP model (request or response),
a path parameter (FastAPI takes it as one as it is) and a message model."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
IDENTIFIER_RULE = "1-64 of A-Z a-z 0-9 . _ -, not starting with . _ -"

is_identifier = re.compile(IDENTIFIER).fullmatch  # fullmatch: `$` alone would let a final newline through


def an_identifier(value: str) -> str:
    if not is_identifier(value):
        raise PydanticCustomError("identifier", "must be {rule}", {"rule": IDENTIFIER_RULE})
    return value


Identifier = Annotated[
    str, AfterValidator(an_identifier), Field(description=IDENTIFIER_RULE, json_schema_extra={"pattern": IDENTIFIER})
]
