"""What free text a person types (a product's name, a user's name) may hold, for every service: no control
characters and no line or paragraph separators. Such text ends up in email headers, log lines and CSV
reports, where a line break would start a new header, a new log record or a new line (CONTRACT section 8)."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

# Cc: C0 and C1 controls (\n, \r, \v, \x85, NUL...); Cs: lone surrogates, which a JSON "\ud800" decodes to
# and no UTF-8 database column can hold; Zl, Zp: U+2028 and U+2029.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
PLAIN_TEXT_RULE = "no control characters, line breaks or line separators"


def _refused(character: str) -> bool:
    return unicodedata.category(character) in _REFUSED_CATEGORIES


def a_plain_text(value: str) -> str:
    for position, character in enumerate(value):
        if _refused(character):
            raise PydanticCustomError(
                "plain_text",
                "must hold {rule} (found U+{code:04X} at position {position})",
                {"rule": PLAIN_TEXT_RULE, "code": ord(character), "position": position},
            )
    return value


PlainText = Annotated[str, AfterValidator(a_plain_text)]


def a_unicode_text(value: str) -> str:
    """For text kept whatever it holds (a password): only lone surrogates are refused, which no UTF-8 encoder
    (a hash's, a database's) can take."""
    if any(unicodedata.category(character) == "Cs" for character in value):
        raise PydanticCustomError("unicode", "must be valid Unicode (it holds a lone surrogate, such as \\ud800)")
    return value


def one_line(text: str) -> str:
    """`text` as one line for a header or a log line, whatever it holds (it may have been stored before the
    rule above existed): every refused character becomes a space, and runs of blanks one space."""
    return " ".join("".join(" " if _refused(character) else character for character in text).split())
