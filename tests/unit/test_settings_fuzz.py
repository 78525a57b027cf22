"""The configuration boundary, fuzzed: whatever the environment or the TOML file holds, start-up either reads
it or stops with one `SettingsError` naming the variable; never another exception, never a secret shown."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skuflow.platform.settings import PREFIX, Settings, SettingsError, load_settings

FIELDS = sorted(Settings.model_fields)
SECRET = "hunter2-the-secret"
# What an environment can hold: any text but NUL and lone surrogates (the OS refuses those itself).
env_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
shaped = st.one_of(
    env_text,
    st.sampled_from(["-1", "0", "1e309", "nan", "inf", "9" * 40, "", " ", "true", "1,2,,3", "-5,1", "1_0"]),
    st.builds(lambda scheme, tail: f"{scheme}://user:{SECRET}@{tail}", st.sampled_from(
        ["amqp", "smtp", "smtps", "ftp", "http", "postgresql+asyncpg", "sqlite+aiosqlite", "memory", "x"]
    ), env_text),
)  # fmt: skip
toml_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), env_text, st.datetimes()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from("abc"), inner, max_size=2)),
    max_leaves=5,
)


def _outcome(environment: dict[str, str]) -> Settings | SettingsError:
    with mock.patch.dict(os.environ, environment, clear=False):
        try:
            return load_settings()
        except SettingsError as error:
            return error


@pytest.fixture(autouse=True)
def no_stray_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file of the developer's
    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(st.sampled_from(FIELDS), shaped, min_size=1, max_size=3))
def test_any_environment_is_read_or_refused_naming_each_bad_variable(values: dict[str, str]):
    environment = {f"{PREFIX}{name.upper()}": value for name, value in values.items() if name != "config"}
    outcome = _outcome(environment)

    if isinstance(outcome, SettingsError):
        message = str(outcome)
        assert any(variable in message for variable in environment), message
        # A URL's password is masked; the same text given as a plain value (hypothesis tries the module's own
        # strings too) is no password, and is shown like any other bad value.
        if all(value.count(SECRET) == value.count(f":{SECRET}@") for value in environment.values()):
            assert SECRET not in message
    else:
        assert isinstance(outcome, Settings)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.dictionaries(st.sampled_from([*FIELDS, "nonsense", "Prefetch"]), toml_value, max_size=3))
def test_any_toml_file_is_read_or_refused_with_a_message(tmp_path: Path, document: dict[str, Any]):
    config = tmp_path / "skuflow.toml"
    config.write_text(_toml(document), encoding="utf-8")
    tomllib.loads(config.read_text(encoding="utf-8"))  # the test's own writer makes valid TOML

    outcome = _outcome({f"{PREFIX}CONFIG": str(config)})

    if isinstance(outcome, SettingsError):
        assert str(config) in str(outcome) or PREFIX in str(outcome), str(outcome)
    else:
        assert isinstance(outcome, Settings)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200))
def test_a_config_file_of_any_bytes_is_read_or_refused_naming_the_file(tmp_path: Path, content: bytes):
    config = tmp_path / "skuflow.toml"
    config.write_bytes(content)

    outcome = _outcome({f"{PREFIX}CONFIG": str(config)})

    assert isinstance(outcome, Settings) or str(config) in str(outcome) or PREFIX in str(outcome)


def _toml(document: dict[str, Any]) -> str:
    """A TOML document of top-level keys; None (which TOML lacks) is left out."""
    return "\n".join(f"{key} = {_toml_value(value)}" for key, value in document.items() if value is not None) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08x}" for c in value) + '"'
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value if item is not None) + "]"
    return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"
