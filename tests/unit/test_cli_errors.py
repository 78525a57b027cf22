"""The command line's one error path: a known error ends a command with one red line and its exit code (2
for a bad argument or setting, 1 for a failure); anything else is a bug, and keeps its trace."""

from __future__ import annotations

import pytest
import typer

from skuflow.cli import base
from skuflow.platform.settings import SettingsError


@pytest.fixture
def stderr(monkeypatch, capsys):
    monkeypatch.setattr(base.err_console, "width", 200)
    return capsys


def exit_code_of(error: Exception, **mapping) -> int:
    with pytest.raises(typer.Exit) as ended, base.errors(**mapping):
        raise error
    return ended.value.exit_code


def test_a_bad_setting_exits_2_and_a_failure_exits_1_each_with_its_message(stderr):
    assert exit_code_of(SettingsError("SKUFLOW_RETRY_DELAYS: not a number")) == 2
    assert exit_code_of(ConnectionRefusedError("connection refused")) == 1
    printed = stderr.readouterr().err
    assert "error: SKUFLOW_RETRY_DELAYS: not a number" in printed
    assert "error: connection refused" in printed


def test_a_failure_can_be_prefixed_with_what_could_not_be_reached(stderr):
    assert exit_code_of(OSError("timed out"), usage=(), prefix="cannot reach RabbitMQ at amqp://x: ") == 1
    assert "error: cannot reach RabbitMQ at amqp://x: timed out" in stderr.readouterr().err


def test_an_error_nobody_named_is_a_bug_and_keeps_its_trace():
    with pytest.raises(KeyError), base.errors():
        raise KeyError("a bug")
