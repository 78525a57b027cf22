"""Email's rules for every part that speaks SMTP: what an address may be (`mailbox`), and where the users
service sends its emails (`SmtpTarget`: `SKUFLOW_SMTP_URL` read into what aiosmtplib needs).

- `smtp://host:port`: plain SMTP (port 25 by default), as a local relay or the embedded sink speaks it;
- `smtp://host:587?starttls=true`: STARTTLS is required; the connection fails rather than go on in clear;
- `smtps://host:465`: TLS from the first byte (implicit TLS, RFC 8314);
- `user:password@` in any of them: SMTP AUTH (aiosmtplib picks the mechanism the server offers).

Certificates are checked against the system's trust store (`SSL_CERT_FILE` names another, as for every
Python TLS client). The password is never shown: `str()` and `repr()` mask it.

An address is one RFC 5321 mailbox, checked by email-validator (the library pydantic's EmailStr uses)
without a DNS look-up: not a list (`a,b@example.com`), a display name, a domain literal (`a@[127.0.0.1]`), a
quoted local part, a local part over 64 characters or one that needs SMTPUTF8.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.headerregistry import Address
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import email_validator

from skuflow.platform.redaction import without_password

DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})
SHAPE = "smtp://[user:password@]host[:port][?starttls=true] or smtps://[user:password@]host[:port]"


def mailbox(text: str, *, deliverable: bool = True) -> str:
    """`text` as one mailbox; ValueError naming the problem when it is not one.

    `deliverable` (for a new address, at sign-up): email-validator's rules, which also refuse domains that
    cannot receive mail from the Internet (`.local`, `.test`, one without a dot) and give a Unicode domain in
    its ASCII (IDNA) form. Otherwise (what was stored before those rules, what arrives at a server) the syntax
    alone, by the standard library's parser: one plain ASCII `local@domain` and nothing around it."""
    if not deliverable:
        return _plain_addr_spec(text)
    try:
        checked = email_validator.validate_email(
            text, check_deliverability=False, allow_smtputf8=False, allow_quoted_local=False, strict=True
        )
    except email_validator.EmailNotValidError as error:
        raise ValueError(str(error)) from None
    return checked.ascii_email or checked.normalized


def _plain_addr_spec(text: str) -> str:
    try:
        parsed = Address(addr_spec=text)
    except Exception as error:  # the parser raises several kinds (IndexError, HeaderParseError...)
        raise ValueError(f"cannot be parsed as one address ({error})") from None
    plain = text.isascii() and not any(character in text for character in '"[]\\ ')
    if parsed.addr_spec != text or not plain or not parsed.username or "." not in parsed.domain.strip("."):
        raise ValueError("is not one plain local@domain address")
    return text


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    url: str = field(default="", repr=False, compare=False)  # as given: shown masked

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        """The target `url` names; ValueError, naming the problem, when it names none."""
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(f"must be {SHAPE}")
        if not parts.hostname:
            raise ValueError(f"names no host ({SHAPE})")
        try:
            port = DEFAULT_PORTS[parts.scheme] if parts.port is None else parts.port
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            raise ValueError("has a port that is not a number from 1 to 65535")
        if parts.path not in ("", "/") or parts.fragment:
            raise ValueError(f"has a path; expected {SHAPE}")
        parameters = parse_qsl(parts.query, keep_blank_values=True)
        if len(parameters) > 1:
            raise ValueError("takes one parameter at most: starttls=true|false")
        starttls = False
        for name, value in parameters:
            if name != "starttls" or value.lower() not in _TRUE | _FALSE:
                raise ValueError(f"knows only the parameter starttls=true|false (got {name}={value!r})")
            starttls = value.lower() in _TRUE
        if starttls and parts.scheme == "smtps":
            raise ValueError("smtps:// is TLS from the start: starttls=true belongs to smtp:// only")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if password is not None and username is None:
            raise ValueError("has a password but no user name (smtp://user:password@host)")
        return cls(parts.hostname, port, parts.scheme == "smtps", starttls, username, password, url)

    def connection_options(self) -> dict[str, Any]:
        """Keyword arguments for `aiosmtplib.send` / `aiosmtplib.SMTP`."""
        return {
            "hostname": self.host,
            "port": self.port,
            "use_tls": self.implicit_tls,
            "start_tls": self.starttls,  # False: never upgrade on our own (aiosmtplib's None would, when offered)
            "username": self.username,
            "password": self.password,
        }

    def __str__(self) -> str:
        """The URL as shown: in /readyz, logs and `skuflow up` alike, with the password masked."""
        return without_password(self.url)
