"""`skuflow up`, `skuflow serve` and `skuflow warehouse push` as a user runs them: real processes, real ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest

from skuflow.platform.serving import bind
from tests.cli.conftest import free_port
from tests.cli.test_cli import skuflow

# `skuflow up` listens on the fixed FTP and SMTP ports (2121, 2525): one such test at a time, across workers.
pytestmark = pytest.mark.usefixtures("fixed_ports")


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def call_json(
    method: str, url: str, body: dict | None = None, token: str | None = None, form: dict | None = None
) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def sign_up_and_log_in(users: str, email: str) -> tuple[str, str]:
    status, user = call_json("POST", f"{users}/v1/users", {"email": email, "name": "Ada", "password": "pass-word-1"})
    assert status == 201, user
    status, token = call_json(
        "POST", f"{users}/v1/auth/token", form={"grant_type": "password", "username": email, "password": "pass-word-1"}
    )
    assert status == 200, token
    return user["id"], token["access_token"]


def _notified(users: str, user_id: str, token: str) -> bool:
    _, body = call_json("GET", f"{users}/v1/users/{user_id}/notifications", token=token)
    return [item["sku"] for item in body.get("items", [])] == ["SKU-1"]


def wait_ready(process: subprocess.Popen, *urls: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    pending = list(urls)
    while pending:
        assert process.poll() is None, f"exited early: {process.communicate()}"
        assert time.monotonic() < deadline, f"not ready within {within}s: {pending}"
        try:
            if get_json(f"{pending[0]}/readyz")[0] == 200:
                pending.pop(0)
                continue
        except OSError:
            pass
        time.sleep(0.1)


def stop(process: subprocess.Popen, sig: int = signal.SIGINT) -> tuple[int, str, str]:
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def walk_through(environment: dict[str, str]) -> str:
    """The README's walk-through against a running system: a user wishes for SKU-1, the warehouse reports
    it, an email arrives; then a file on the FTP server is imported. Answers the report's correlation id."""
    inventory, users = environment["SKUFLOW_INVENTORY_URL"], environment["SKUFLOW_USERS_URL"]
    user_id, token = sign_up_and_log_in(users, "ada@example.com")
    status, item = call_json("PUT", f"{users}/v1/users/{user_id}/wishlist/SKU-1", token=token)
    assert (status, item["available"]) == (201, False)
    pushed = skuflow("warehouse", "push", "--warehouse", "WH-1", "--sku", "SKU-1", "--on-hand", "12", env=environment)
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["accepted"] == 1
    status, view = get_json(f"{inventory}/v1/skus/SKU-1/availability")
    assert (status, view["available_for_sale"], view["available"]) == (200, 12, True)
    deadline = time.monotonic() + 30
    while not _notified(users, user_id, token):
        assert time.monotonic() < deadline, "no email within 30 s"
        time.sleep(0.2)

    # The other way in: a file on the embedded FTP server.
    stock = Path(environment["SKUFLOW_DATA_DIR"]).parent / "stock.csv"
    stock.write_text("warehouse_id,sku,on_hand\nWH-1,SKU-2,4\n")
    uploaded = skuflow("warehouse", "upload", str(stock), env=environment)
    assert uploaded.returncode == 0, uploaded.stderr
    assert "/outbox/stock.csv" in uploaded.stdout
    deadline = time.monotonic() + 30
    while get_json(f"{inventory}/v1/skus/SKU-2/availability")[0] != 200:
        assert time.monotonic() < deadline, "the uploaded file was not imported within 30 s"
        time.sleep(0.2)
    return str(json.loads(pushed.stdout)["correlation_id"])


@dataclass
class Output:
    """What a stopped process printed, filled in when its block ends."""

    out: str = ""
    err: str = ""


@contextlib.contextmanager
def running_up(environment: dict[str, str]) -> Iterator[Output]:
    """`skuflow up` in a process, ready; stopped with Ctrl-C at the end of the block, which must exit 0. What
    it printed is in the yielded `Output` after the block."""
    process = subprocess.Popen(
        [sys.executable, "-m", "skuflow", "up"],
        env=environment,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    printed = Output()
    try:
        wait_ready(process, *(environment[f"SKUFLOW_{name}_URL"] for name in ("USERS", "INVENTORY", "CATALOG")))
        yield printed
    finally:
        code, printed.out, printed.err = stop(process)
    assert code == 0, printed.err


@pytest.mark.parametrize(
    ("broker", "transport"),
    # Each transport under `skuflow up` (uvloop); REST is also what every in-process service test uses.
    [("memory", "grpc"), pytest.param("amqp", "rest", marks=pytest.mark.amqp)],
)
def test_up_runs_the_system_a_warehouse_reports_and_ctrl_c_stops_it_cleanly(
    environment: dict[str, str], broker: str, transport: str, request: pytest.FixtureRequest
):
    """`transport`: how inventory and catalog verify tokens (gRPC: also under uvloop, `skuflow up`'s loop)."""
    if broker == "amqp":
        environment["SKUFLOW_BROKER_URL"] = request.getfixturevalue("amqp_url")
    environment["SKUFLOW_AUTH_TRANSPORT"] = transport
    environment["SKUFLOW_WAREHOUSE_FTP_POLL_SECONDS"] = "0.2"
    inventory, users = environment["SKUFLOW_INVENTORY_URL"], environment["SKUFLOW_USERS_URL"]
    process = subprocess.Popen(
        [sys.executable, "-m", "skuflow", "up"],
        env=environment,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_ready(process, users, inventory)
        secrets = Path(environment["SKUFLOW_DATA_DIR"]) / "secrets.json"
        assert stat.S_IMODE(secrets.stat().st_mode) == 0o600

        walk_through(environment)
    finally:
        code, out, err = stop(process)

    assert code == 0, err
    assert "email to ada@example.com: SKU-1 is available again" in out, out + err
    generated = json.loads(secrets.read_text())["warehouse_secret"]
    assert f"secret {generated}" in out, "a generated secret is printed once"
    assert inventory in out
    assert users in out
    assert environment["SKUFLOW_USERS_GRPC"] in out
    ftp_password = json.loads(secrets.read_text())["embedded_ftp_password"]
    assert f"ftp://warehouse:{ftp_password}@127.0.0.1:2121/outbox" in out, "the FTP address and credentials"
    grpc_port = int(environment["SKUFLOW_USERS_GRPC"].rsplit(":", 1)[1])
    for port in (int(inventory.rsplit(":", 1)[1]), int(users.rsplit(":", 1)[1]), grpc_port, 2121, 2525):
        bind("127.0.0.1", port).close()  # all free again


@pytest.mark.amqp
def test_serve_runs_one_service_and_sigterm_stops_it(environment: dict[str, str], amqp_url: str):
    environment["SKUFLOW_BROKER_URL"] = amqp_url
    process = subprocess.Popen(
        [sys.executable, "-m", "skuflow", "serve", "inventory"],
        env=environment,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_ready(process, environment["SKUFLOW_INVENTORY_URL"])
    finally:
        code, out, err = stop(process, signal.SIGTERM)
    assert code == 0, err
    assert f"inventory listening on {environment['SKUFLOW_INVENTORY_URL']}" in out


def test_serve_refuses_the_in_process_broker(environment: dict[str, str]):
    result = skuflow("serve", "inventory", env=environment)
    assert result.returncode == 2
    assert "SKUFLOW_BROKER_URL" in result.stderr
    assert "memory://" in result.stderr


@pytest.mark.amqp
def test_serve_users_refuses_to_start_without_its_secrets(environment: dict[str, str], amqp_url: str):
    result = skuflow("serve", "users", env=environment | {"SKUFLOW_BROKER_URL": amqp_url})
    assert result.returncode == 2
    assert "SKUFLOW_WAREHOUSE_SECRET" in result.stderr


def test_serve_names_the_services_it_knows(environment: dict[str, str]):
    result = skuflow("serve", "billing", env=environment)
    assert result.returncode == 2
    assert "unknown service 'billing'" in result.stderr


def test_warehouse_push_without_a_secret_says_how_to_get_one(environment: dict[str, str]):
    result = skuflow("warehouse", "push", "--warehouse", "WH-1", "--sku", "S", "--on-hand", "1", env=environment)
    assert result.returncode == 1
    assert "SKUFLOW_WAREHOUSE_SECRET" in result.stderr


def test_warehouse_push_when_nothing_runs_names_the_problem(environment: dict[str, str]):
    result = skuflow(
        "warehouse",
        "push",
        "--warehouse",
        "WH-1",
        "--sku",
        "S",
        "--on-hand",
        "1",
        env=environment | {"SKUFLOW_WAREHOUSE_SECRET": "x"},
    )
    assert result.returncode == 1
    assert "cannot reach" in result.stderr


def test_warehouse_upload_without_a_server_says_how_to_get_one(environment: dict[str, str], tmp_path: Path):
    stock = tmp_path / "stock.csv"
    stock.write_text("warehouse_id,sku,on_hand\nWH-1,SKU-1,1\n")
    result = skuflow("warehouse", "upload", str(stock), env=environment)
    assert result.returncode == 1
    assert "SKUFLOW_WAREHOUSE_FTP_URL is unset" in result.stderr


def test_warehouse_upload_names_what_is_wrong(environment: dict[str, str], tmp_path: Path):
    port = free_port()
    at = {"SKUFLOW_WAREHOUSE_FTP_URL": f"ftp://warehouse:pw@127.0.0.1:{port}/outbox"}
    missing = skuflow("warehouse", "upload", str(tmp_path / "nope.csv"), env=environment | at)
    assert (missing.returncode, "nope.csv: no such file" in missing.stderr) == (1, True), missing.stderr
    text = tmp_path / "stock.txt"
    text.write_text("x")
    wrong_name = skuflow("warehouse", "upload", str(text), env=environment | at)
    assert "the watcher takes only files named *.csv" in wrong_name.stderr
    stock = tmp_path / "stock.csv"
    stock.write_text("warehouse_id,sku,on_hand\n")
    down = skuflow("warehouse", "upload", str(stock), env=environment | at)
    assert down.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in down.stderr
    bad_url = skuflow("warehouse", "upload", str(stock), env=environment | {"SKUFLOW_WAREHOUSE_FTP_URL": "ftp:/x"})
    assert bad_url.returncode == 2
    assert "SKUFLOW_WAREHOUSE_FTP_URL" in bad_url.stderr


def test_up_in_orchestration_mode_and_skuflow_flows_shows_each_flow(environment: dict[str, str]):
    environment["SKUFLOW_MODE"] = "orchestration"
    with running_up(environment):
        pushed = skuflow(
            "warehouse", "push", "--warehouse", "WH-1", "--sku", "SKU-9", "--on-hand", "3", env=environment
        )
        assert pushed.returncode == 0, pushed.stderr
        correlation_id = json.loads(pushed.stdout)["correlation_id"]
        deadline = time.monotonic() + 30
        while True:
            listed = skuflow("flows", "--correlation-id", correlation_id, "--json", env=environment)
            assert listed.returncode == 0, listed.stderr
            [flow] = json.loads(listed.stdout)
            if flow["status"] == "completed":
                break
            assert time.monotonic() < deadline, f"the flow did not complete within 30 s: {flow}"
            time.sleep(0.2)
        assert [step["status"] for step in flow["steps"]] == ["done", "done", "done"]
        table = skuflow("flows", "--status", "completed", env=environment)
        assert table.returncode == 0, table.stderr
        assert "SKU-9" in table.stdout
        assert "completed" in table.stdout


def test_flows_names_what_is_wrong(environment: dict[str, str]):
    wrong = skuflow("flows", "--status", "stuck", env=environment)
    assert (wrong.returncode, "--status takes running" in wrong.stderr) == (2, True)
    no_secret = skuflow("flows", env=environment)
    assert (no_secret.returncode, "SKUFLOW_ADMIN_SECRET is unset" in no_secret.stderr) == (1, True)
    down = skuflow("flows", env=environment | {"SKUFLOW_ADMIN_SECRET": "x"})
    assert (down.returncode, "cannot reach users" in down.stderr) == (1, True)


@pytest.mark.amqp
def test_dlq_list_and_replay_on_rabbitmq(environment: dict[str, str], amqp_url: str):
    import pydantic

    from skuflow.messaging import SKUFLOW, Reject, Subscription, create_broker
    from tests.conftest import TEST_OPTIONS

    class SkuProcessed(pydantic.BaseModel):
        sku: str

    async def one_dead_letter() -> str:
        broker = create_broker(amqp_url, "test", TEST_OPTIONS)
        async with broker:
            await broker.declare(SKUFLOW)

            async def refuse(_message) -> None:
                raise Reject("no such product yet")

            consumer = await broker.consume(
                Subscription("catalog.sku_processed", "sku_processed", SkuProcessed, refuse)
            )
            envelope = broker.envelope("sku_processed", {"sku": "SKU-D"})
            await broker.publish(envelope, "sku_processed")
            deadline = time.monotonic() + 10
            while await broker.depth("catalog.sku_processed.dlq") == 0:
                assert time.monotonic() < deadline, "no dead letter within 10 s"
                await asyncio.sleep(0.05)
            await consumer.stop()
            return envelope.message_id

    message_id = asyncio.run(one_dead_letter())
    environment["SKUFLOW_BROKER_URL"] = amqp_url
    listed = skuflow("dlq", "list", "catalog.sku_processed", "--json", env=environment)
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    [letter] = report["queues"]["catalog.sku_processed"]["letters"]
    assert (letter["message_id"], letter["reason"]) == (message_id, "rejected: no such product yet")
    table = skuflow("dlq", "list", env=environment)
    assert "users.update_wishlists_for_sku" in table.stdout
    assert message_id in table.stdout

    replayed = skuflow("dlq", "replay", "catalog.sku_processed", "--id", message_id, env=environment)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 dead letter onto catalog.sku_processed" in replayed.stdout
    again = skuflow("dlq", "replay", "catalog.sku_processed", "--id", message_id, env=environment)
    assert (again.returncode, f"no dead letter {message_id!r}" in again.stderr) == (1, True)
    wrong = skuflow("dlq", "list", "nowhere", env=environment)
    assert (wrong.returncode, "choose one of" in wrong.stderr) == (2, True)


def test_dlq_with_the_in_process_broker_asks_the_running_system(environment: dict[str, str]):
    inventory = environment["SKUFLOW_INVENTORY_URL"]
    with running_up(environment):
        listed = skuflow("dlq", "list", env=environment)
        assert listed.returncode == 0, listed.stderr
        assert f"the running skuflow up at {inventory}" in listed.stdout
        none = skuflow("dlq", "replay", "catalog.sku_processed", "--id", "nope", env=environment)
        assert (none.returncode, "no dead letter 'nope'" in none.stderr) == (1, True)
    down = skuflow("dlq", "list", env=environment)
    assert (down.returncode, "cannot reach" in down.stderr) == (1, True)


def test_reconcile_asks_catalog_and_users(environment: dict[str, str]):
    with running_up(environment):
        pushed = skuflow(
            "warehouse", "push", "--warehouse", "WH-1", "--sku", "SKU-5", "--on-hand", "1", env=environment
        )
        assert pushed.returncode == 0, pushed.stderr
        reconciled = skuflow("reconcile", env=environment)
        assert reconciled.returncode == 0, reconciled.stderr
        assert "catalog: checked" in reconciled.stdout
        assert "users: checked" in reconciled.stdout


def test_keys_rotate_makes_a_new_signing_key_and_keeps_the_old_one_published(environment: dict[str, str]):
    """Users issuing JWTs: the rotation's new key signs the next token, the old one stays in the key set and
    its token still verifies; with the system down, a clear error and no trace."""
    environment["SKUFLOW_TOKEN_FORMAT"] = "jwt"
    users = environment["SKUFLOW_USERS_URL"]
    with running_up(environment):
        _, before = get_json(f"{users}/.well-known/jwks.json")
        [old] = [key["kid"] for key in before["keys"]]
        _, old_token = sign_up_and_log_in(users, "ada@example.com")
        assert jwt.get_unverified_header(old_token)["kid"] == old

        rotated = skuflow("keys", "rotate", env=environment)
        assert rotated.returncode == 0, rotated.stderr
        _, after = get_json(f"{users}/.well-known/jwks.json")
        published = {key["kid"] for key in after["keys"]}
        [new] = published - {old}
        assert published == {old, new}
        assert f"signing key {new} signs from now on; {old} verify until their tokens expire" in rotated.stdout

        status, token = call_json(
            "POST",
            f"{users}/v1/auth/token",
            form={"grant_type": "password", "username": "ada@example.com", "password": "pass-word-1"},
        )
        assert status == 200, token
        assert jwt.get_unverified_header(token["access_token"])["kid"] == new
        status, verified = call_json("POST", f"{users}/v1/auth/verify", {"token": old_token})
        assert (status, verified["active"]) == (200, True)

    down = skuflow("keys", "rotate", env=environment)
    assert (down.returncode, "cannot reach users" in down.stderr) == (1, True), down.stderr
    assert "Traceback" not in down.stderr


def test_up_with_the_grpc_port_taken_stops_before_starting_naming_the_setting(environment: dict[str, str]):
    host, _, port = environment["SKUFLOW_USERS_GRPC"].rpartition(":")
    taken = bind(host, int(port))
    taken.listen()
    try:
        result = skuflow("up", env=environment, timeout=60)
    finally:
        taken.close()
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on {host}:{port}" in result.stderr
    assert "SKUFLOW_USERS_GRPC" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_shows_the_smtp_url_without_its_password(environment: dict[str, str]):
    password = "smtp-pass-w0rd"
    port = free_port()  # nothing listens there: were an email due, its failures would be logged, without it
    environment["SKUFLOW_SMTP_URL"] = f"smtp://mailer:{password}@127.0.0.1:{port}?starttls=true"
    with running_up(environment) as printed:
        status, readiness = get_json(f"{environment['SKUFLOW_USERS_URL']}/readyz")

    assert (status, readiness["checks"]["email"]) == (200, "ok")
    assert f"smtp://mailer:***@127.0.0.1:{port}?starttls=true" in printed.out
    assert password not in printed.out + printed.err + json.dumps(readiness)
