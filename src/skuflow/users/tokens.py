"""Opaque access tokens: made, hashed for storage and recognised by their shape. No I/O.

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

import hashlib
import re
import secrets

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
