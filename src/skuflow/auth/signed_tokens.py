"""Signed access tokens (SKUFLOW_TOKEN_FORMAT=jwt): what users signs, and what any service verifies from the
key set users publishes (`GET /.well-known/jwks.json`) without a call. No I/O.

RS256, chosen on figures (`skuflow bench auth`, its "signing algorithms" table; docs/performance.md): a token is
verified at every request that carries it and signed once in its life, and RS256 verifies 1.37x faster than
ES256 and 1.59x faster than Ed25519 in PyJWT here, while it signs 8x slower (still 3,500 a second, far above
what the argon2-bound token endpoint asks).

A token is a JWT with the header `{"alg": "RS256", "typ": "at+jwt", "kid"}` (RFC 9068's type for access
tokens, so that no other JWT signed by the same key passes for one) and the claims `iss`, `aud`, `sub`,
`scope`, `iat`, `exp` and `jti` (the id a revocation names).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ALGORITHM = "RS256"
TYPE = "at+jwt"
ISSUER = "skuflow-users"
AUDIENCE = "skuflow"
KEY_BITS = 2048
MAX_LENGTH = 4096  # far above the ~700 characters of ours: anything longer is refused unread
_REQUIRED = ["iss", "aud", "sub", "scope", "iat", "exp", "jti"]


@dataclass(frozen=True, slots=True)
class Claims:
    sub: str
    scope: str
    exp: int  # unix seconds
    jti: str


class UnknownKey(Exception):
    """The token names a key id the key set does not hold (perhaps a key newer than the set)."""

    def __init__(self, kid: str) -> None:
        super().__init__(kid)
        self.kid = kid


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_pem: str
    public_jwk: dict[str, Any]

    def private_key(self) -> rsa.RSAPrivateKey:
        return private_key(self.kid, self.private_pem)


def private_key(kid: str, pem: str) -> rsa.RSAPrivateKey:
    """The private key of a stored signing key (PEM, PKCS#8)."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"signing key {kid} is not an RSA key")
    return key


def new_signing_key() -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    kid = secrets.token_hex(8)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return SigningKey(kid, pem, {**public, "kid": kid, "alg": ALGORITHM, "use": "sig"})


def sign(kid: str, private_key: rsa.RSAPrivateKey, *, sub: str, scope: str, ttl_seconds: int, now: float) -> str:
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "scope": scope,
        "iat": int(now),
        "exp": int(now) + ttl_seconds,
        "jti": secrets.token_hex(16),
    }
    return jwt.encode(claims, private_key, algorithm=ALGORITHM, headers={"kid": kid, "typ": TYPE})


class KeySet:
    """Public keys by key id, read from a JWKS document (RFC 7517); keys of another type or algorithm are
    skipped, so that a key set can grow new kinds without breaking older verifiers."""

    def __init__(self, jwks: Iterable[Mapping[str, Any]] = ()) -> None:
        self._keys: dict[str, Any] = {}
        for jwk in jwks:
            if jwk.get("kty") == "RSA" and jwk.get("alg", ALGORITHM) == ALGORITHM and isinstance(jwk.get("kid"), str):
                self._keys[jwk["kid"]] = RSAAlgorithm.from_jwk(json.dumps(dict(jwk)))

    @classmethod
    def from_document(cls, document: object) -> KeySet:
        """Raises ValueError when `document` is not a JWKS (`{"keys": [...]}`)."""
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list) or not all(isinstance(key, dict) for key in keys):
            raise ValueError('not a JWKS document: expected {"keys": [...]}')
        try:
            return cls(keys)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as error:
            raise ValueError(f"a key of the JWKS cannot be read: {error}") from None

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def key(self, kid: str) -> Any | None:
        return self._keys.get(kid)

    def __contains__(self, kid: str) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated parts of a bounded length (an opaque token has no dot)."""
    return len(token) <= MAX_LENGTH and token.count(".") == 2


def verify(token: str, keys: KeySet, now: float | None = None) -> Claims | None:
    """The token's claims when its signature, type, issuer, audience and expiry hold; None otherwise. Raises
    `UnknownKey` when it names a key `keys` does not hold: the caller may fetch the key set again."""
    if not looks_like_jwt(token):
        return None
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return None
    kid = header.get("kid")
    if header.get("alg") != ALGORITHM or header.get("typ") != TYPE or not isinstance(kid, str) or not kid:
        return None
    key = keys.key(kid)
    if key is None:
        raise UnknownKey(kid)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": _REQUIRED, "verify_iat": False},  # iat: a clock behind users' is no fault
        )
    except jwt.PyJWTError:
        return None
    sub, scope, exp, jti = claims["sub"], claims["scope"], claims["exp"], claims["jti"]
    if not (isinstance(sub, str) and isinstance(scope, str) and isinstance(jti, str) and type(exp) is int):
        return None
    if exp <= (time.time() if now is None else now):
        return None  # PyJWT's own check allows the equal second
    return Claims(sub=sub, scope=scope, exp=exp, jti=jti)
