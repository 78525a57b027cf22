"""Where the users service sends its emails: `SKUFLOW_SMTP_URL` read into what aiosmtplib needs.

- `smtp://host:port`: plain SMTP (port 25 by default), as a local relay or the embedded sink speaks it;
- `smtp://host:587?starttls=true`: STARTTLS is required; the connection fails rather than go on in clear;
- `smtps://host:465`: TLS from the first byte (implicit TLS, RFC 8314);
- `user:password@` in any of them: SMTP AUTH (aiosmtplib picks the mechanism the server offers).

Certificates are checked against the system's trust store (`SSL_CERT_FILE` names another, as for every
Python TLS client). The password is never shown: `str()` and `repr()` mask it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})
SHAPE = "smtp://[user:password@]host[:port][?starttls=true] or smtps://[user:password@]host[:port]"


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        """The target `url` names; ValueError, naming the problem, when it names none."""
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(f"must be {SHAPE}")
        if not parts.hostname:
            raise ValueError(f"names no host ({SHAPE})")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise ValueError("has a port that is not a number from 1 to 65535") from None
        if parts.path not in ("", "/") or parts.fragment:
            raise ValueError(f"has a path; expected {SHAPE}")
        starttls = False
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name != "starttls" or value.lower() not in _TRUE | _FALSE:
                raise ValueError(f"knows only the parameter starttls=true|false (got {name}={value!r})")
            starttls = value.lower() in _TRUE
        if starttls and parts.scheme == "smtps":
            raise ValueError("smtps:// is TLS from the start: starttls=true belongs to smtp:// only")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(parts.hostname, port, parts.scheme == "smtps", starttls, username, password)

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
        """The URL as shown: in /readyz, logs and `skuflow up`, with the password masked."""
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.username}:***@" if self.username is not None else ""
        query = "?starttls=true" if self.starttls else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}{query}"
