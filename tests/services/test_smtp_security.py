"""The mailer against an SMTP server that wants AUTH, over STARTTLS or implicit TLS (`SKUFLOW_SMTP_URL`
`smtp://user:pass@host:port?starttls=true`, `smtps://...`), and the password shown nowhere.

The server is aiosmtpd (the embedded sink) with a certificate made for the test; the mailer trusts it the
way any Python TLS client is told to, by `SSL_CERT_FILE`."""

from __future__ import annotations

import inspect
import json
import shutil
import ssl
from pathlib import Path

import pytest

from skuflow.embedded.certificate import self_signed
from skuflow.embedded.smtp import SmtpSink
from skuflow.platform.runtime import Check, ServiceRuntime
from tests.services.conftest import System
from tests.support.waiting import wait_until

USER, PASSWORD = "mailer", "s3cret-smtp-password"
# aiosmtpd's warning when the test's server takes AUTH in clear, which is what one case tests.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl, as on every Debian machine)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test's certificate", pytrace=False)
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(params=["auth in clear", "starttls", "implicit tls"])
def smtp_sink(request: pytest.FixtureRequest, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch):
    if request.param == "auth in clear":
        return SmtpSink(credentials=(USER, PASSWORD))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    return SmtpSink(credentials=(USER, PASSWORD), tls=context, implicit_tls=request.param == "implicit tls")


def users_runtime(system: System) -> ServiceRuntime:
    runtime: ServiceRuntime = system.users.app.state.runtime
    return runtime


async def email_check(system: System) -> Check:
    """The email line of users' /readyz, as the admin sees it."""
    check = users_runtime(system).reports["email"]()
    return await check if inspect.isawaitable(check) else check


async def test_the_email_goes_through_auth_and_tls_and_the_password_is_shown_nowhere(system: System):
    user_id, token = await system.sign_up("ada@example.com")
    status, _, _ = await system.call("PUT", f"/v1/users/{user_id}/wishlist/SKU-1", token=token, service="users")
    assert status == 201
    body = {"warehouse_id": "WH-1", "items": [{"sku": "SKU-1", "on_hand": 5}]}
    assert (await system.call("POST", "/v1/stock", token=await system.client_token(), json=body))[0] == 202

    await wait_until(lambda: system.smtp.mails, what="the email, through AUTH and TLS")
    assert [mail.recipients for mail in system.smtp.mails] == [("ada@example.com",)]
    report = (await email_check(system)).details
    assert PASSWORD not in json.dumps(report)
    assert report["smtp"].startswith(("smtp://mailer:***@127.0.0.1:", "smtps://mailer:***@127.0.0.1:"))
    _, readiness, _ = await system.call("GET", "/readyz", token=await system.admin_token(), service="users")
    assert PASSWORD not in json.dumps(readiness)


async def test_a_wrong_password_keeps_the_email_pending_not_failed(system: System, stack):
    system.smtp.credentials = (USER, "another password")  # the server's account changed under us
    user_id, token = await system.sign_up("ada@example.com")
    await system.call("PUT", f"/v1/users/{user_id}/wishlist/SKU-1", token=token, service="users")
    body = {"warehouse_id": "WH-1", "items": [{"sku": "SKU-1", "on_hand": 5}]}
    assert (await system.call("POST", "/v1/stock", token=await system.client_token(), json=body))[0] == 202

    async def refused() -> bool:
        return (await email_check(system)).details["failed_attempts"] >= 1

    await wait_until(refused, what="the refused login")
    check = await email_check(system)
    assert "SMTPAuthenticationError" in check.details["last_error"]
    assert check.state == "degraded"
    _, listed, _ = await system.call("GET", f"/v1/users/{user_id}/notifications", token=token, service="users")
    assert [item["status"] for item in listed["items"]] == ["pending"], "a login refused is no reason to give up"

    system.smtp.credentials = (USER, PASSWORD)  # fixed: the email goes on its next try
    await wait_until(lambda: system.smtp.mails, what="the email once the login works", timeout=15)

    async def recovered() -> bool:
        return (await email_check(system)).state == "ok"

    await wait_until(recovered, what="the email check to recover")
