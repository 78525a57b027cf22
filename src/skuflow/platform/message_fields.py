"""What every service's message models are held to (CONTRACT section 2): one place for the rules the
consumers of choreography and orchestration share, apart from the flows (platform/flows.py)."""

from __future__ import annotations

from typing import Annotated

import pydantic

# The contract's fields only, each of the contract's JSON type (strict: "5", 5.0 or true is no <int>, "true"
# or 1 no <bool>).
MESSAGE_MODEL = pydantic.ConfigDict(extra="forbid", strict=True)

# Inventory's revision, carried by commands and replies, is a 32-bit column in every service's database, and
# `available_for_sale` a 64-bit one: a number beyond them would fail at the database on every attempt.
REVISION_MAX = 2**31 - 1
Revision = Annotated[int, pydantic.Field(ge=1, le=REVISION_MAX)]
AvailableForSale = Annotated[int, pydantic.Field(ge=0, le=2**63 - 1)]
