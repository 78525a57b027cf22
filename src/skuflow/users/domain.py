"""The users service's pure rules, without I/O: scopes, opaque tokens, e-mail addresses, the OAuth 2.0 token
request (RFC 6749) and the token endpoint's rate-limit window.

Tokens are opaque: `secrets.token_urlsafe(32)` (256 random bits), stored only as their SHA-256. Why not signed
tokens (JWT):

- revocable: deleting a row ends a token at once, with no deny-list and no key rotation;
- nothing to leak: there is no signing key whose theft would let anyone mint tokens, and a copy of the tokens
  table holds only hashes, which cannot be presented as tokens;
- one answer: `POST /v1/auth/verify` and the coming gRPC `Verify` (the fast path) answer from the same table.

The cost is a database lookup per verification: that is what the verifier's cache (platform/auth.py) and the
gRPC path exist for. A plain SHA-256 (not argon2) is right for tokens: they are random, not guessable
passwords, so a fast hash loses nothing and keeps verification cheap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import math
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_plus

from skuflow.platform.auth import SCOPES
from skuflow.platform.smtp import mailbox

# -- Scopes --

USER_SCOPE = "wishlist"
# The clients the service creates at start (CONTRACT section 3): the warehouse reports stock, the admin may do all.
CLIENT_SCOPES: Mapping[str, str] = {"warehouse": "stock:write", "admin": " ".join(SCOPES)}


def parse_scope(text: str) -> frozenset[str]:
    return frozenset(text.split())


def format_scope(scopes: Iterable[str]) -> str:
    """Scopes in one canonical order (the contract's), so that equal sets always read the same."""
    order = {scope: index for index, scope in enumerate(SCOPES)}
    return " ".join(sorted(set(scopes), key=lambda scope: (order.get(scope, len(order)), scope)))


def narrow_scope(granted: str, requested: str | None) -> str:
    """The scope a token gets: all the principal has, or the requested part of it (RFC 6749 section 3.3)."""
    if requested is None:
        return format_scope(parse_scope(granted))
    wanted = parse_scope(requested)
    beyond = wanted - parse_scope(granted)
    if beyond:
        raise OAuthError("invalid_scope", f"not granted to this client or user: {format_scope(beyond)}")
    return format_scope(wanted)


# -- Tokens --

TOKEN_BYTES = 32
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # token_urlsafe(32): 43 base64url characters


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What the database keeps instead of the token (hex SHA-256)."""
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(text: str) -> bool:
    """Anything else cannot be one of ours: answered inactive without a lookup."""
    return bool(_TOKEN_SHAPE.match(text))


# -- Users --

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


# -- The token request (RFC 6749 sections 2.3.1, 4.3, 4.4, 5.2) --


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error: `error` is the code, `status` 400, or 401 for a failed client
    authentication (`challenge`: answer with `WWW-Authenticate: Basic`)."""

    def __init__(self, error: str, description: str, *, status: int = 400, challenge: bool = False) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.challenge = challenge


def client_authentication_failed(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, status=401, challenge=True)


@dataclass(frozen=True, slots=True)
class PasswordGrant:
    username: str  # the e-mail address, normalised like at sign-up
    password: str
    scope: str | None


@dataclass(frozen=True, slots=True)
class ClientCredentialsGrant:
    client_id: str
    client_secret: str
    scope: str | None


Grant = PasswordGrant | ClientCredentialsGrant
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 50


def parse_form(content_type: str | None, body: bytes) -> dict[str, str]:
    """The token request's parameters. Repeating one is an error (RFC 6749 section 3.2), and one sent
    without a value counts as omitted (section 3.1)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != FORM_TYPE:
        raise OAuthError("invalid_request", f"the token request must be {FORM_TYPE}")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError) as error:
        raise OAuthError("invalid_request", f"malformed form body: {error}") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise OAuthError("invalid_request", f"parameter {name!r} is repeated")
        if "\x00" in name or "\x00" in value:  # never in a real name or secret, and no database column takes it
            raise OAuthError("invalid_request", f"parameter {name!r} holds a NUL character")
        params[name] = value
    return {name: value for name, value in params.items() if value}


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """The client id and secret of an `Authorization: Basic` header (form-encoded, then base64, as RFC 6749
    section 2.3.1 says); None without such a header."""
    scheme, _, encoded = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise client_authentication_failed("malformed HTTP Basic credentials") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:
        raise client_authentication_failed("malformed HTTP Basic credentials (expected client_id:client_secret)")
    return unquote_plus(client_id), unquote_plus(secret)


def rate_limit_key(params: Mapping[str, str], authorization: str | None) -> str | None:
    """Whose attempt this is (a username or a client id), read before anything is checked, so that every
    attempt for that key counts, however it ends; None when the request names nobody."""
    grant_type = params.get("grant_type")
    if grant_type == "password" and "username" in params:
        return "username:" + _username(params["username"])
    if grant_type == "client_credentials":
        try:
            basic = basic_credentials(authorization)
        except OAuthError:
            basic = None
        client_id = basic[0] if basic else params.get("client_id")
        return f"client:{client_id}" if client_id else None
    return None


def read_grant(params: Mapping[str, str], authorization: str | None) -> Grant:
    """Check the request's parameters (not the credentials): what is being asked, by whom."""
    grant_type = params.get("grant_type")
    scope = params.get("scope")
    if grant_type is None:
        raise OAuthError("invalid_request", "missing grant_type (password or client_credentials)")
    if grant_type == "password":
        for name in ("username", "password"):
            if name not in params:
                raise OAuthError("invalid_request", f"missing {name}")
        return PasswordGrant(_username(params["username"]), params["password"], scope)
    if grant_type == "client_credentials":
        basic = basic_credentials(authorization)
        in_form = "client_id" in params or "client_secret" in params
        if basic is not None and in_form:
            raise OAuthError("invalid_request", "authenticate the client one way: HTTP Basic or the form, not both")
        if basic is not None:
            return ClientCredentialsGrant(basic[0], basic[1], scope)
        if "client_id" not in params:
            raise client_authentication_failed(
                "client authentication required: HTTP Basic, or client_id and client_secret in the form"
            )
        if "client_secret" not in params:
            raise OAuthError("invalid_request", "missing client_secret")
        return ClientCredentialsGrant(params["client_id"], params["client_secret"], scope)
    raise OAuthError(
        "unsupported_grant_type", f"grant_type {grant_type!r} is not supported (password, client_credentials)"
    )


def _username(text: str) -> str:
    """A username as the accounts store it (see `normalize_email`), without judging its shape."""
    return text.strip().lower()


# -- The token endpoint's rate limit (CONTRACT section 7) --


class SlidingWindow:
    """At most `limit` attempts per key in any `window` seconds (a sliding log of attempt times).

    An attempt that is refused is not recorded: the wait it is told (`Retry-After`) is then exact, and a
    client that waits it out gets in. Memory is bounded at `max_keys` keys, at a constant cost per attempt:
    the keys are kept in the order of their last attempt (moved to the end on each), so the least recently
    used is always first. Each new key first sweeps up to `SWEEP` keys whose attempts have all aged out
    (more than it adds: idle keys never pile up), and at `max_keys` the least recently used key is forgotten
    (which can only let someone in early, never lock anyone out). A scan of every key, as before, cost
    ~10 ms per new key at 100,000 keys: a flood of new usernames made each attempt slower.
    """

    SWEEP = 2

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()

    def attempt(self, key: str) -> int | None:
        """Record an attempt for `key`: None when it is allowed, else whole seconds until a slot frees (>= 1)."""
        wait = self.wait(key)
        if wait is None:
            self.record(key)
        return wait

    def wait(self, key: str) -> int | None:
        """None when an attempt for `key` would be allowed now, else whole seconds until a slot frees (>= 1)."""
        now = self.clock()
        times = self._attempts.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            return max(1, math.ceil(times[0] + self.window - now))
        return None

    def record(self, key: str) -> None:
        now = self.clock()
        times = self._attempts.get(key)
        if times is None:
            self._make_room(now)
            times = self._attempts[key] = deque()
        else:
            self._attempts.move_to_end(key)
        times.append(now)

    def _make_room(self, now: float) -> None:
        """Sweep a few idle keys from the front, then forget the least recently used if still full: O(1)."""
        for _ in range(self.SWEEP):
            oldest = next(iter(self._attempts.values()), None)  # O(1) on an OrderedDict: its linked list
            if oldest is None or (oldest and oldest[-1] > now - self.window):
                break
            self._attempts.popitem(last=False)
        if len(self._attempts) >= self.max_keys:
            self._attempts.popitem(last=False)


class TokenAttempts:
    """The token endpoint's limit.

    - `limit` attempts per client or username *from one address* in any window: someone who knows a client
      id (`warehouse`) and guesses its secret locks out only their own address. An IPv6 address counts by
      its /64, which one host can fill.
    - A ceiling of `spread` times as many per client or username from all addresses together, so that
      guessing from many addresses stays slow.
    - An address that got a token for that client or username within `trusted_for` seconds passes the
      ceiling (not its own limit): the warehouse, which asks from the same place every hour, is not shut
      out by a guesser spread over many addresses. A user on a new address can be, while such an attack
      lasts; that is the price of the ceiling.

    Behind a proxy, the address is the one uvicorn takes from `X-Forwarded-For` when the proxy is trusted
    (named in SKUFLOW_FORWARDED_ALLOW_IPS; no peer is, by default)."""

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        *,
        spread: int = 10,
        trusted_for: float = 24 * 3600.0,
        max_trusted: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.from_one_address = SlidingWindow(limit, window, clock=clock)
        self.from_all = SlidingWindow(limit * spread, window, clock=clock)
        self.trusted_for = trusted_for
        self.max_trusted = max_trusted
        self.clock = clock
        # (key, network) -> when it last got a token; in that order, so that the oldest goes first in O(1).
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()

    def attempt(self, key: str, address: str) -> int | None:
        """Record an attempt for `key` from `address`: None when allowed, else seconds to wait (>= 1)."""
        near = f"{key} from {network_of(address)}"
        waits = [self.from_one_address.wait(near)]
        trusted = self._trusted.get((key, network_of(address)))
        if trusted is None or trusted <= self.clock() - self.trusted_for:
            waits.append(self.from_all.wait(key))
        if any(wait is not None for wait in waits):
            return max(wait for wait in waits if wait is not None)
        self.from_one_address.record(near)
        self.from_all.record(key)
        return None

    def succeeded(self, key: str, address: str) -> None:
        """`address` got a token for `key`: it passes the ceiling for a while."""
        trusted = (key, network_of(address))
        if trusted not in self._trusted and len(self._trusted) >= self.max_trusted:
            self._trusted.popitem(last=False)  # the least recently trusted
        self._trusted[trusted] = self.clock()
        self._trusted.move_to_end(trusted)


def network_of(address: str) -> str:
    """The unit an address is counted by: itself for IPv4, its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


# -- Wishlist emails (CONTRACT section 7) --


def is_news(incoming_revision: int, known_revision: int | None) -> bool:
    """Only a newer revision than the one users has recorded changes anything: redeliveries and late,
    older revisions are ignored."""
    return known_revision is None or incoming_revision > known_revision


def email_due(was_available: bool | None, now_available: bool) -> bool:
    """An email goes out when a SKU users recorded as not available (or had not heard of) becomes available."""
    return now_available and not was_available


PERMANENT_FAILURES_ALLOWED = 3  # an email refused for good this often is `failed` (CONTRACT section 8)


def smtp_refused_for_good(code: int) -> bool:
    """An SMTP reply code that refuses for good (RFC 5321 section 4.2.1: 5yz); 4yz asks to try again later."""
    return 500 <= code <= 599


def email_given_up(permanent_failures: int) -> bool:
    return permanent_failures >= PERMANENT_FAILURES_ALLOWED


def next_attempt_delay(attempts: int) -> float:
    """Seconds before retrying an email that failed `attempts` times: 2, 4, 8, ... up to 5 minutes."""
    return float(min(2**attempts, 300))
