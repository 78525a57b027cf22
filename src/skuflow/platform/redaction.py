"""Secrets out of what is shown: a URL's password masked, for logs, /readyz and command output. One masker
for every URL (broker, databases, SMTP, FTP), so that each is shown the same way wherever it appears."""

from __future__ import annotations

import re

_CREDENTIALS = re.compile(
    r"(?P<prefix>[^A-Za-z]*[A-Za-z][A-Za-z0-9+.-]*:/*)?(?P<user>[^:]*):(?P<password>.*)", re.DOTALL
)
_PASSWORD_PARAMETER = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def without_password(url: str) -> str:
    """The URL with its password masked, to be logged or shown (the last `@` ends the credentials), also
    when the URL is malformed (`amqp:/user:password@host`, `user:password@host`): that is when it is shown."""
    url = _PASSWORD_PARAMETER.sub(r"\1***", url)  # postgresql://host/db?password=...
    credentials, at, address = url.rpartition("@")
    if not at:
        return url
    found = _CREDENTIALS.fullmatch(credentials)
    if found is not None and not found["prefix"] and found["password"].startswith("/"):  # "scheme://user@"
        return url
    if found is None:
        return f"***@{address}"  # credentials of a shape we do not know: hide them all
    return f"{found['prefix'] or ''}{found['user']}:***@{address}"
