"""`SKUFLOW_SMTP_URL` read into a connection: plain, STARTTLS, implicit TLS, AUTH; shown without its password."""

from __future__ import annotations

import pytest

from skuflow.platform.settings import SettingsError, load_settings
from skuflow.platform.smtp import SmtpTarget


def test_plain_smtp_on_port_25_by_default():
    target = SmtpTarget.parse("smtp://mail.example.com")
    assert (target.host, target.port, target.implicit_tls, target.starttls, target.username) == (
        "mail.example.com", 25, False, False, None,
    )  # fmt: skip


def test_starttls_and_auth_from_the_url_with_the_password_masked():
    target = SmtpTarget.parse("smtp://me%40example.com:p%40ss@mail.example.com:587?starttls=true")
    options = target.connection_options()
    assert (options["username"], options["password"], options["start_tls"], options["use_tls"]) == (
        "me@example.com", "p@ss", True, False,
    )  # fmt: skip
    assert str(target) == "smtp://me%40example.com:***@mail.example.com:587?starttls=true", "as given, masked"
    assert "p@ss" not in repr(target)


def test_smtps_is_implicit_tls_on_port_465():
    target = SmtpTarget.parse("smtps://user:secret@[::1]")
    assert (target.port, target.implicit_tls, target.starttls) == (465, True, False)
    assert str(target) == "smtps://user:***@[::1]"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://mail.example.com", "must be smtp://"),
        ("smtp://", "names no host"),
        ("smtp://mail.example.com:99999", "port"),
        ("smtp://mail.example.com:0", "port"),
        ("smtp://:secret@mail.example.com", "no user name"),
        ("smtp://mail.example.com?starttls=true&starttls=false", "one parameter"),
        ("smtp://mail.example.com/inbox", "has a path"),
        ("smtp://mail.example.com?starttls=maybe", "starttls=true|false"),
        ("smtp://mail.example.com?tls=true", "starttls=true|false"),
        ("smtps://mail.example.com?starttls=true", "smtp:// only"),
    ],
)
def test_a_url_that_names_no_smtp_server_is_refused_naming_the_problem(url: str, problem: str):
    with pytest.raises(ValueError, match=problem):
        SmtpTarget.parse(url)
    with pytest.raises(SettingsError, match="SKUFLOW_SMTP_URL"):
        load_settings(smtp_url=url)
