"""The OAuth 2.0 token request (RFC 6749 sections 2.3.1, 4.3, 4.4, 5.2), as pure rules without I/O: its
form and HTTP Basic credentials read, the grant it asks for checked (not the credentials), whose attempt it is
for the rate limit, and its errors."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_plus


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


def parse_form(content_type: str | None, body: bytes, what: str = "the token request") -> dict[str, str]:
    """The parameters of `what` (a token or revocation request). Repeating one is an error (RFC 6749 section
    3.2), and one sent without a value counts as omitted (section 3.1)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != FORM_TYPE:
        raise OAuthError("invalid_request", f"{what} must be {FORM_TYPE}")
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
