"""Signed access tokens (`skuflow.auth.signed_tokens`): what passes, what never does, and that no input makes
`verify` or the key set's reader fail other than as documented."""

from __future__ import annotations

import time

import hypothesis
import jwt
import pytest
from hypothesis import strategies as st

from skuflow.auth import signed_tokens

KEY = signed_tokens.new_signing_key()
KEYS = signed_tokens.KeySet([KEY.public_jwk])
NOW = time.time()  # at import: tokens made with it live a day, so that a late run still finds them valid
DAY = 86_400


def _sign(**changes: object) -> str:
    claims = {"iss": "skuflow-users", "aud": "skuflow", "sub": "u1", "scope": "wishlist", "iat": int(NOW)}
    claims |= {"exp": int(NOW) + DAY, "jti": "j1"} | changes
    headers = {"kid": KEY.kid, "typ": signed_tokens.TYPE}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, KEY.private_key(), "RS256", headers)


def test_a_token_users_signed_verifies_with_its_claims():
    now = time.time()
    token = signed_tokens.sign(KEY.kid, KEY.private_key(), sub="u1", scope="wishlist", ttl_seconds=60, now=now)
    claims = signed_tokens.verify(token, KEYS)
    assert claims is not None
    assert (claims.sub, claims.scope, claims.exp) == ("u1", "wishlist", int(now) + 60)


@pytest.mark.parametrize(
    "token",
    [
        _sign(exp=int(NOW) - 1),
        _sign(iss="someone-else"),
        _sign(aud="another-audience"),
        _sign(jti=None),
        _sign(scope=None),
        _sign(sub=7),
        _sign(exp="tomorrow"),
        jwt.encode({"sub": "u1"}, KEY.private_key(), "RS256", {"kid": KEY.kid, "typ": "JWT"}),  # not an access token
        jwt.encode({"sub": "u1"}, "a shared secret of 32 bytes or more", "HS256", {"kid": KEY.kid, "typ": "at+jwt"}),
    ],
)
def test_a_token_that_breaks_a_rule_is_refused(token: str):
    assert signed_tokens.verify(token, KEYS) is None


def test_a_token_of_a_key_not_in_the_set_says_so():
    other = signed_tokens.new_signing_key()
    token = signed_tokens.sign(other.kid, other.private_key(), sub="u1", scope="admin", ttl_seconds=60, now=NOW)
    with pytest.raises(signed_tokens.UnknownKey) as unknown:
        signed_tokens.verify(token, KEYS)
    assert unknown.value.kid == other.kid


VALID = _sign()


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    st.one_of(
        st.text(max_size=200),
        st.tuples(st.integers(0, len(VALID) - 1), st.characters()).map(
            lambda t: VALID[: t[0]] + t[1] + VALID[t[0] + 1 :]
        ),
        st.lists(st.text(alphabet="ABCxyz09-_=.", max_size=40), min_size=3, max_size=3).map(".".join),
    )
)
def test_no_text_makes_verify_fail_and_no_changed_character_forges_a_claim(token: str):
    """A change may leave the token's bytes as they were (base64's unused last bits): then it passes as itself."""
    assert signed_tokens.verify(VALID, KEYS) is not None  # else this would compare None with None
    try:
        claims = signed_tokens.verify(token, KEYS)
    except signed_tokens.UnknownKey:
        return
    assert claims is None or claims == signed_tokens.verify(VALID, KEYS)


@pytest.mark.parametrize(
    "document",
    [None, [], {"keys": "x"}, {"keys": [1]}, {"keys": [{"kty": "RSA", "kid": "k", "n": "!!", "e": "AQAB"}]}],
)
def test_a_key_set_that_is_not_one_is_a_value_error(document: object):
    with pytest.raises(ValueError, match="JWKS"):
        signed_tokens.KeySet.from_document(document)


def test_keys_of_another_kind_are_skipped():
    keys = signed_tokens.KeySet.from_document({"keys": [KEY.public_jwk, {"kty": "EC", "kid": "e1", "crv": "P-256"}]})
    assert len(keys) == 1
