"""E-mail, as pure rules without I/O: the address rule at sign-up, when a wishlist email is due (CONTRACT
section 7), and what becomes of one the SMTP server refuses (CONTRACT section 8): its outcomes and the mailer's
backoff."""

from __future__ import annotations

from skuflow.platform.smtp import mailbox

# -- The address --

MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a path


def normalize_email(text: str, *, new: bool = True) -> str:
    """The address as stored and compared: one mailbox (`platform.smtp.mailbox`), trimmed and lower-cased,
    so that one person has one account; a domain in Unicode is kept in its ASCII (IDNA) form, so every stored
    address is plain ASCII. A `new` address (sign-up) must also have a domain that can receive mail."""
    try:
        email = mailbox(text.strip(), deliverable=new).lower()
    except ValueError as error:
        raise ValueError(f"not one e-mail address (expected name@example.com): {error}") from None
    if len(email) > MAX_EMAIL_LENGTH:
        raise ValueError(f"an e-mail address has at most {MAX_EMAIL_LENGTH} characters")
    return email


# -- When an email is due (CONTRACT section 7) --


def is_news(incoming_revision: int, known_revision: int | None) -> bool:
    """Only a newer revision than the one users has recorded changes anything: redeliveries and late,
    older revisions are ignored."""
    return known_revision is None or incoming_revision > known_revision


def email_due(was_available: bool | None, now_available: bool) -> bool:
    """An email goes out when a SKU users recorded as not available (or had not heard of) becomes available."""
    return now_available and not was_available


# -- Outcomes and backoff (CONTRACT section 8) --

PERMANENT_FAILURES_ALLOWED = 3  # an email refused for good this often is `failed` (CONTRACT section 8)


def smtp_refused_for_good(code: int) -> bool:
    """An SMTP reply code that refuses for good (RFC 5321 section 4.2.1: 5yz); 4yz asks to try again later."""
    return 500 <= code <= 599


def email_given_up(permanent_failures: int) -> bool:
    return permanent_failures >= PERMANENT_FAILURES_ALLOWED


def next_attempt_delay(attempts: int) -> float:
    """Seconds before retrying an email that failed `attempts` times: 2, 4, 8, ... up to 5 minutes."""
    return float(min(2**attempts, 300))
