"""The users service's pure rules, without I/O: scopes, tokens, addresses, the token request, the rate limit."""

from __future__ import annotations

import base64

import pytest

from skuflow.users import emails, oauth, scopes, tokens
from skuflow.users.oauth import ClientCredentialsGrant, OAuthError, PasswordGrant
from skuflow.users.rate_limits import SlidingWindow, TokenAttempts
from tests.support.clock import Clock

FORM = oauth.FORM_TYPE


# -- Scopes and tokens --


def test_a_scope_is_written_in_the_contracts_order_whatever_the_order_asked():
    assert scopes.narrow_scope("stock:write catalog:write wishlist admin", "admin  wishlist") == "wishlist admin"
    assert scopes.narrow_scope("wishlist", None) == "wishlist"


def test_a_scope_beyond_the_grant_is_invalid_scope_naming_the_excess():
    with pytest.raises(OAuthError) as raised:
        scopes.narrow_scope("stock:write", "stock:write admin")
    assert (raised.value.error, raised.value.status) == ("invalid_scope", 400)
    assert "admin" in raised.value.description


def test_the_admin_client_is_granted_every_scope_and_the_warehouse_only_stock():
    assert set(scopes.CLIENT_SCOPES["admin"].split()) == {"stock:write", "catalog:write", "wishlist", "admin"}
    assert scopes.CLIENT_SCOPES["warehouse"] == "stock:write"


def test_a_token_is_43_url_safe_characters_stored_as_its_sha256():
    token = tokens.new_token()
    assert tokens.looks_like_token(token)
    assert token != tokens.new_token()
    assert len(tokens.token_hash(token)) == 64
    assert token not in tokens.token_hash(token)
    assert not tokens.looks_like_token(token + "=")
    assert not tokens.looks_like_token("a b")


@pytest.mark.parametrize("text", ["plain", "@example.com", "a@b", "a@@b.com", "a b@example.com", "a@.com", "a@b..c"])
def test_an_address_without_the_shape_of_one_is_refused(text: str):
    with pytest.raises(ValueError, match="e-mail"):
        emails.normalize_email(text)


def test_an_address_is_kept_trimmed_and_lower_cased():
    assert emails.normalize_email(" Ada.Lovelace+wish@Example.CO.uk ") == "ada.lovelace+wish@example.co.uk"


# -- The token request --


def test_the_form_drops_parameters_without_a_value_and_refuses_repeated_ones():
    assert oauth.parse_form(f"{FORM}; charset=UTF-8", b"grant_type=password&scope=&username=a%40b.c") == {
        "grant_type": "password",
        "username": "a@b.c",
    }
    with pytest.raises(OAuthError, match="repeated"):
        oauth.parse_form(FORM, b"scope=a&scope=b")
    with pytest.raises(OAuthError, match="must be application/x-www-form-urlencoded"):
        oauth.parse_form("application/json", b"{}")


def test_http_basic_credentials_are_form_decoded():
    header = "Basic " + base64.b64encode(b"my+client:p%40ss%3Aword").decode()
    assert oauth.basic_credentials(header) == ("my client", "p@ss:word")
    assert oauth.basic_credentials(None) is None
    assert oauth.basic_credentials("Bearer abc") is None
    with pytest.raises(OAuthError) as raised:
        oauth.basic_credentials("Basic " + base64.b64encode(b"no-colon").decode())
    assert (raised.value.error, raised.value.status, raised.value.challenge) == ("invalid_client", 401, True)


def test_a_grant_is_read_from_the_form_or_from_basic_authentication():
    assert oauth.read_grant({"grant_type": "password", "username": " Ada@X.io ", "password": "pw"}, None) == (
        PasswordGrant("ada@x.io", "pw", None)
    )
    form = {"grant_type": "client_credentials", "client_id": "warehouse", "client_secret": "s", "scope": "stock:write"}
    assert oauth.read_grant(form, None) == ClientCredentialsGrant("warehouse", "s", "stock:write")
    basic = "Basic " + base64.b64encode(b"admin:t").decode()
    assert oauth.read_grant({"grant_type": "client_credentials"}, basic) == ClientCredentialsGrant("admin", "t", None)


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({}, "invalid_request"),
        ({"grant_type": "password", "username": "a@b.c"}, "invalid_request"),
        ({"grant_type": "client_credentials", "client_id": "warehouse"}, "invalid_request"),
        ({"grant_type": "client_credentials"}, "invalid_client"),
        ({"grant_type": "refresh_token", "refresh_token": "x"}, "unsupported_grant_type"),
    ],
)
def test_an_incomplete_grant_is_refused_with_the_rfc_6749_code(params: dict[str, str], error: str):
    with pytest.raises(OAuthError) as raised:
        oauth.read_grant(params, None)
    assert raised.value.error == error


def test_the_rate_limit_key_is_the_username_or_the_client_however_authenticated():
    basic = "Basic " + base64.b64encode(b"warehouse:s").decode()
    assert oauth.rate_limit_key({"grant_type": "password", "username": "Ada@X.io"}, None) == "username:ada@x.io"
    assert oauth.rate_limit_key({"grant_type": "client_credentials", "client_id": "admin"}, None) == "client:admin"
    assert oauth.rate_limit_key({"grant_type": "client_credentials"}, basic) == "client:warehouse"
    assert oauth.rate_limit_key({"grant_type": "client_credentials"}, "Basic !!") is None
    assert oauth.rate_limit_key({"grant_type": "magic", "username": "a"}, None) is None


# -- The rate-limit window --


def test_the_window_admits_the_limit_then_says_when_the_oldest_attempt_ages_out():
    clock = Clock()
    window = SlidingWindow(3, 60, clock=clock)
    for offset in (0, 10, 20):
        clock.now = 1000 + offset
        assert window.attempt("username:ada") is None

    clock.now = 1030.5
    assert window.attempt("username:ada") == 30  # the attempt at 1000 frees its slot at 1060
    assert window.attempt("username:grace") is None  # keys are independent
    clock.now = 1060
    assert window.attempt("username:ada") is None


def test_a_refused_attempt_does_not_push_the_wait_further():
    clock = Clock()
    window = SlidingWindow(1, 60, clock=clock)
    assert window.attempt("client:warehouse") is None
    for _ in range(5):
        clock.now += 10
        window.attempt("client:warehouse")
    clock.now = 1060
    assert window.attempt("client:warehouse") is None


def test_the_window_forgets_idle_keys_to_stay_bounded():
    clock = Clock()
    window = SlidingWindow(1, 60, max_keys=2, clock=clock)
    window.attempt("a")
    window.attempt("b")
    clock.now += 61
    window.attempt("c")  # a and b have aged out: swept
    assert set(window._attempts) == {"c"}
    window.attempt("d")
    window.attempt("e")  # still full: the oldest key goes
    assert set(window._attempts) == {"d", "e"}


def test_token_attempts_are_limited_per_address_under_a_ceiling_from_all_addresses():
    clock = Clock()
    attempts = TokenAttempts(2, 60, spread=3, clock=clock)
    assert [attempts.attempt("client:warehouse", "10.0.0.66") for _ in range(3)] == [None, None, 60]
    assert attempts.attempt("client:warehouse", "10.0.0.1") is None, "the warehouse's own address is not locked out"
    assert attempts.attempt("client:warehouse", "10.0.0.2") is None
    clock.now += 30
    assert attempts.attempt("client:warehouse", "10.0.0.3") is None
    assert attempts.attempt("client:warehouse", "10.0.0.4") is None
    # Six attempts from all addresses in the window: the ceiling (2 x 3) holds for every address, until
    # the oldest ages out.
    assert attempts.attempt("client:warehouse", "10.0.0.5") == 30
    assert attempts.attempt("username:ada", "10.0.0.5") is None, "other principals are not affected"
    clock.now += 30
    assert attempts.attempt("client:warehouse", "10.0.0.5") is None


def test_an_address_that_got_a_token_passes_the_ceiling_but_not_its_own_limit():
    clock = Clock()
    attempts = TokenAttempts(2, 60, spread=2, trusted_for=3600, clock=clock)
    assert attempts.attempt("client:warehouse", "10.0.0.1") is None
    attempts.succeeded("client:warehouse", "10.0.0.1")  # the warehouse got its token
    for guesser in ("10.0.0.66", "10.0.0.67", "10.0.0.68"):  # the ceiling (2 x 2) fills up
        attempts.attempt("client:warehouse", guesser)
    assert attempts.attempt("client:warehouse", "10.0.0.69") == 60
    assert attempts.attempt("client:warehouse", "10.0.0.1") is None, "the warehouse's address passes"
    assert attempts.attempt("client:warehouse", "10.0.0.1") == 60, "but not its own limit"
    clock.now += 3600
    assert attempts.attempt("client:warehouse", "10.0.0.70") is None, "the ceiling's window has passed"


def test_an_ipv6_host_counts_by_its_64():
    attempts = TokenAttempts(1, 60, clock=Clock())
    assert attempts.attempt("username:ada", "2001:db8:1:2::1") is None
    assert attempts.attempt("username:ada", "2001:db8:1:2:ffff::9") is not None, "same /64"
    assert attempts.attempt("username:ada", "2001:db8:1:3::1") is None, "another /64"
