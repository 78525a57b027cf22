"""The users service's HTTP endpoints: sign-up, the OAuth 2.0 token endpoint and token verification.

The token endpoint speaks RFC 6749, not the house's `{"detail": ...}`: it reads its form itself (so that
FastAPI's 422 never answers for it), and every error is `{"error", "error_description"}` at the top level,
400, or 401 for a failed client authentication.

Rate limit (CONTRACT section 7): per username and per client id, at most `SKUFLOW_TOKEN_ATTEMPTS_PER_MINUTE`
attempts in any 60 seconds, counting every attempt that names the key, whatever its outcome. Beyond that:
429 with `Retry-After` and the error code `invalid_request`. RFC 6749 has no code for "too many requests";
`invalid_request` stays within the codes the contract lists (a client switching on them still understands
it), and the status and `Retry-After` say the rest. (`slow_down` exists, but only in the device flow,
RFC 8628.) The window is kept in memory, per process: several processes each keep their own, so the
effective limit is the per-process limit times the number of processes.

Sign-up and every token request that names a username or client hash a password (argon2), and hashes wait
in a bounded queue (`passwords.queue`). Without a place in it the answer is 503 at once with `Retry-After`:
on the token endpoint `temporarily_unavailable` (RFC 6749's code for an overloaded server), on sign-up the
house's `{"detail": ...}`. A 503 does not count against the rate limits: nothing was tried.
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skuflow.platform.auth import Principal, authenticated, require_scope
from skuflow.platform.db import utc
from skuflow.platform.responses import RETRY_AFTER, problem
from skuflow.platform.text import a_plain_text, a_unicode_text
from skuflow.platform.web import runtime_of
from skuflow.users import accounts, emails, oauth, passwords, rate_limits
from skuflow.users.access_tokens import AccessTokens
from skuflow.users.signing_keys import SigningKeys

BUSY = "too many password checks waiting (argon2's queue is full, or this address's share of it): retry later"

# -- Sign-up --


class SignUp(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(
        description="one e-mail address (an RFC 5321 mailbox, e.g. ada@example.com); stored and compared lower-cased"
    )
    name: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(a_plain_text)
    ]
    password: Annotated[str, StringConstraints(min_length=8, max_length=128), AfterValidator(a_unicode_text)]

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return emails.normalize_email(value)


class UserOut(BaseModel):
    id: str
    email: str
    name: str


def users_router(sign_ups: rate_limits.SlidingWindow) -> APIRouter:
    """`sign_ups` limits sign-ups per address: each one costs an argon2 hash, and accounts are cheap to make."""
    router = APIRouter(prefix="/v1/users", tags=["users"])

    @router.post(
        "",
        status_code=status.HTTP_201_CREATED,
        summary="Sign up (public)",
        responses={
            409: problem("an account with this e-mail address exists"),
            429: problem("too many sign-ups from this address (an IPv6 address counts by its /64)"),
            503: {**problem(BUSY), "headers": RETRY_AFTER},
        },
    )
    async def sign_up(body: SignUp, request: Request) -> UserOut:
        network = rate_limits.network_of(request.client.host if request.client else "unknown")
        try:
            with passwords.queue.place(network):
                if (wait := sign_ups.attempt(network)) is not None:
                    raise HTTPException(
                        status.HTTP_429_TOO_MANY_REQUESTS,
                        f"too many sign-ups from {network}; retry in {wait} s",
                        headers={"Retry-After": str(wait)},
                    )
                user = await accounts.sign_up(runtime_of(request).db, body.email, body.name, body.password)
        except passwords.Busy as busy:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"{busy.reason}; retry in {busy.retry_after} s",
                headers={"Retry-After": str(busy.retry_after)},
            ) from None
        except accounts.EmailTaken:
            raise HTTPException(status.HTTP_409_CONFLICT, "an account with this e-mail address exists") from None
        return UserOut(id=user.id, email=user.email, name=user.name)

    return router


# -- Tokens --


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    scope: str


class OAuthErrorOut(BaseModel):
    error: str
    error_description: str


class VerifyIn(BaseModel):
    token: str


class VerifyOut(BaseModel):
    """RFC 7662 style: only `active` when the token is not (or no longer) valid."""

    active: bool
    sub: str | None = None
    scope: str | None = None
    exp: int | None = Field(None, description="expiry, in unix seconds")


def _form_body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """An operation's OpenAPI `requestBody` for a form the handler reads itself (RFC 6749 and RFC 7009 forms)."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True, "content": {oauth.FORM_TYPE: {"schema": schema}}}}


_TOKEN_FORM = _form_body(
    ["grant_type"],
    {
        "grant_type": {"type": "string", "enum": ["password", "client_credentials"]},
        "username": {"type": "string", "description": "password grant: the e-mail address"},
        "password": {"type": "string"},
        "client_id": {"type": "string", "description": "or HTTP Basic authentication"},
        "client_secret": {"type": "string"},
        "scope": {"type": "string", "description": "a space-separated subset of what is granted"},
    },
)


def auth_router(limiter: rate_limits.TokenAttempts, tokens: AccessTokens) -> APIRouter:
    router = APIRouter(prefix="/v1/auth", tags=["auth"])

    @router.post(
        "/token",
        summary="OAuth 2.0 token endpoint (password and client_credentials grants)",
        response_model=TokenOut,
        openapi_extra=_TOKEN_FORM,
        responses={
            400: {"model": OAuthErrorOut},
            401: {"model": OAuthErrorOut},
            429: {"model": OAuthErrorOut, "description": "too many attempts for this username or client"},
            503: {"model": OAuthErrorOut, "description": BUSY + " (`temporarily_unavailable`)", "headers": RETRY_AFTER},
        },
    )
    async def token(request: Request) -> JSONResponse:
        authorization = request.headers.get("authorization")
        address = request.client.host if request.client else "unknown"
        try:
            params = oauth.parse_form(request.headers.get("content-type"), await request.body())
            key = oauth.rate_limit_key(params, authorization)
            # A request that names nobody never reaches a hash; one that does takes a place in the hash
            # queue first, so that a refusal for want of one (503) does not count against the key's limit.
            with passwords.queue.place(rate_limits.network_of(address)) if key is not None else nullcontext():
                if key is not None and (wait := limiter.attempt(key, address)) is not None:
                    return _too_many(key, wait)
                grant = oauth.read_grant(params, authorization)
                issued = await accounts.grant_token(runtime_of(request).db, grant, tokens)
        except oauth.OAuthError as error:
            return _oauth_error(error)
        except passwords.Busy as busy:
            return _busy(busy)
        if key is not None:
            limiter.succeeded(key, address)
        body = TokenOut(access_token=issued.access_token, expires_in=issued.expires_in, scope=issued.scope)
        return JSONResponse(body.model_dump())

    @router.post(
        "/verify",
        summary="Is this token valid, and for whom? (for services; no credentials needed)",
        response_model=VerifyOut,
        response_model_exclude_none=True,
    )
    async def verify(body: VerifyIn) -> VerifyOut:
        active = await tokens.verify(body.token)
        if active is None:
            return VerifyOut(active=False)
        return VerifyOut(active=True, sub=active.sub, scope=active.scope, exp=active.exp)

    return router


_REVOKE_FORM = _form_body(
    ["token"],
    {
        "token": {"type": "string", "description": "the access token to revoke"},
        "token_type_hint": {"type": "string", "description": "ignored: every token is an access token"},
    },
)


def revocation_router(tokens: AccessTokens) -> APIRouter:
    router = APIRouter(prefix="/v1/auth", tags=["auth"])

    @router.post(
        "/revoke",
        summary="Revoke a token (RFC 7009): one's own, or any with the admin's token",
        description=(
            "Form-encoded `token`. The caller authenticates with a bearer token of the same user or client, or "
            "of the admin. 200 whatever the token was (unknown, expired, already revoked, or another's, which "
            "stays valid): the answer never tells whether a token exists. Services that verify tokens stop "
            "accepting a revoked one within SKUFLOW_AUTH_CACHE_SECONDS."
        ),
        openapi_extra=_REVOKE_FORM,
        response_class=Response,  # an empty body (RFC 7009 section 2.2), documented as such
        responses={200: {"description": "revoked, or nothing to revoke"}, 400: {"model": OAuthErrorOut}},
    )
    async def revoke(request: Request, caller: Annotated[Principal, Depends(authenticated)]) -> Response:
        try:
            params = oauth.parse_form(request.headers.get("content-type"), await request.body(), "a revocation")
        except oauth.OAuthError as error:
            return _oauth_error(error)
        token = params.get("token")
        if token is None:
            return _oauth_error(oauth.OAuthError("invalid_request", "missing token"))
        await tokens.revoke(token, caller)
        return Response(status_code=200)

    @router.get(
        "/revocations",
        summary="The signed tokens revoked before their expiry (for verifiers of the `local` transport)",
        description=(
            "Revocations of JWTs not yet expired, recorded at or after `since` (every one without it), oldest "
            "first, at most 1,000 a page. Ask again with `since` = the answer's `next`: at once while `more` is "
            "true, else within SKUFLOW_AUTH_CACHE_SECONDS. `next` lies a few seconds back, so that a revocation "
            "committing while the page was read is in the next one: a verifier keeps a set. No credentials: a "
            "token id tells nothing that could be used."
        ),
    )
    async def revocations(
        since: Annotated[
            Since | None,
            Query(description="an RFC 3339 date-time with its offset, e.g. the previous answer's `next`"),
        ] = None,
    ) -> RevocationsOut:
        page = await tokens.revocations(since)
        return RevocationsOut(
            revocations=[RevocationOut(jti=one.jti, exp=one.exp) for one in page.revocations],
            next=page.next,
            more=page.more,
        )

    return router


def _a_date_time_text(value: object) -> object:
    """pydantic would read a number as seconds since 1970; `since` is an RFC 3339 text."""
    if isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("since must be an RFC 3339 date-time, e.g. 2026-12-05T10:00:00Z, not a number")
    return value


def _in_utc(moment: datetime) -> datetime:
    try:
        return utc(moment)
    except OverflowError:  # the offset moves it before year 1 or after 9999
        raise ValueError("since must fall between years 1 and 9999 once its offset is applied") from None


Since = Annotated[AwareDatetime, BeforeValidator(_a_date_time_text), AfterValidator(_in_utc)]


class RevocationOut(BaseModel):
    jti: str = Field(description="the revoked token's id (its `jti` claim)")
    exp: int = Field(description="the token's expiry, in unix seconds: forget the revocation after it")


class RevocationsOut(BaseModel):
    revocations: list[RevocationOut]
    next: datetime
    more: bool


class RotationOut(BaseModel):
    kid: str = Field(description="the new key, which signs from now on")
    retired: list[str] = Field(description="the keys it replaces: published until their last token expires")


def keys_router(keys: SigningKeys) -> APIRouter:
    router = APIRouter(tags=["auth"])

    @router.get(
        "/.well-known/jwks.json",
        summary="The public keys of users' signed tokens (RFC 7517), for verifying them in process",
        description="Empty while users issues opaque tokens (SKUFLOW_TOKEN_FORMAT=opaque) and has never signed one.",
    )
    async def jwks() -> dict[str, Any]:
        return await keys.jwks()

    @router.post(
        "/v1/admin/signing-keys/rotate",
        summary="Make a new signing key (admin): it signs from now on; the old one verifies until its tokens expire",
        responses={403: problem("this token lacks the scope 'admin'")},
    )
    async def rotate(_: Annotated[Principal, Depends(require_scope("admin"))]) -> RotationOut:
        rotation = await keys.rotate()
        return RotationOut(kid=rotation.kid, retired=rotation.retired)

    return router


def _oauth_error(error: oauth.OAuthError) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Basic realm="skuflow"'} if error.challenge else None
    body = {"error": error.error, "error_description": error.description}
    return JSONResponse(body, status_code=error.status, headers=headers)


def _busy(busy: passwords.Busy) -> JSONResponse:
    """RFC 6749's own code for a server too loaded to answer now (section 4.1.2.1 defines it for the
    authorization endpoint; section 5.2 has no such code, and this one says "try later" in words a client of
    RFC 6749 knows); the status and `Retry-After` say when."""
    description = f"{busy.reason}; retry in {busy.retry_after} s"
    body = {"error": "temporarily_unavailable", "error_description": description}
    headers = {"Retry-After": str(busy.retry_after)}
    return JSONResponse(body, status_code=status.HTTP_503_SERVICE_UNAVAILABLE, headers=headers)


def _too_many(key: str, wait: int) -> JSONResponse:
    who = key.replace(":", " ", 1)  # "username alice@example.com", "client warehouse"
    body = {"error": "invalid_request", "error_description": f"too many token requests for {who}; retry in {wait} s"}
    return JSONResponse(body, status_code=status.HTTP_429_TOO_MANY_REQUESTS, headers={"Retry-After": str(wait)})


class NoStore:
    """`Cache-Control: no-store` (and `Pragma: no-cache`) on every answer under `paths`: tokens and what they
    stand for must not sit in a cache (RFC 6749 section 5.1). Outermost, so that it also covers the answers
    of the shared middleware (413, a bad correlation id) and of the router (405)."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...]) -> None:
        self.app = app
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(name, value) for name, value in message.get("headers", []) if name != b"cache-control"]
                message["headers"] = [*headers, (b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
            await send(message)

        await self.app(scope, receive, send_no_store)
