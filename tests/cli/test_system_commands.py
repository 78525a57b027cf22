"""`skuflow up`, `skuflow serve` and `skuflow warehouse push` as a user runs them: real processes, real ports."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from skuflow.platform.serving import bind
from tests.cli.test_cli import skuflow


def free_port() -> int:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    return int(port)


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    """Settings for a system of our own: its data directory and free ports."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SKUFLOW_")}
    return env | {
        "SKUFLOW_DATA_DIR": str(tmp_path / "var"),
        "SKUFLOW_INVENTORY_URL": f"http://127.0.0.1:{free_port()}",
        "SKUFLOW_USERS_URL": f"http://127.0.0.1:{free_port()}",
        "COLUMNS": "200",
    }


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


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


@pytest.mark.parametrize("broker", ["memory", pytest.param("amqp", marks=pytest.mark.amqp)])
def test_up_runs_the_system_a_warehouse_reports_and_ctrl_c_stops_it_cleanly(
    environment: dict[str, str], broker: str, request: pytest.FixtureRequest
):
    if broker == "amqp":
        environment["SKUFLOW_BROKER_URL"] = request.getfixturevalue("amqp_url")
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

        pushed = skuflow(
            "warehouse", "push", "--warehouse", "WH-1", "--sku", "SKU-1", "--on-hand", "12", env=environment
        )
        assert pushed.returncode == 0, pushed.stderr
        assert json.loads(pushed.stdout)["accepted"] == 1
        status, view = get_json(f"{inventory}/v1/skus/SKU-1/availability")
        assert (status, view["available_for_sale"], view["available"]) == (200, 12, True)
    finally:
        code, out, err = stop(process)

    assert code == 0, err
    generated = json.loads(secrets.read_text())["warehouse_secret"]
    assert f"secret {generated}" in out, "a generated secret is printed once"
    assert inventory in out
    assert users in out
    for url in (inventory, users):  # every port is free again
        bind("127.0.0.1", int(url.rsplit(":", 1)[1])).close()


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
