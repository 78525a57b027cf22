import os

import pytest

from skuflow.platform.settings import SettingsError, load_settings, without_password


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path):
    for name in [name for name in os.environ if name.startswith("SKUFLOW_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_the_defaults_are_the_contracts():
    settings = load_settings()
    assert settings.broker_url == "memory://"
    assert settings.mode == "choreography"
    assert settings.retry_delays == (1, 5, 30, 120, 600)
    assert settings.broker_options().prefetch == 32
    assert settings.smtp_connections == 4


def test_retry_delays_are_a_comma_separated_list_of_seconds(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SKUFLOW_RETRY_DELAYS", "0.5, 2,10")
    assert load_settings().retry_delays == (0.5, 2, 10)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SKUFLOW_RETRY_DELAYS", "1,soon"),
        ("SKUFLOW_RETRY_DELAYS", "1,-5"),
        ("SKUFLOW_PREFETCH", "0"),
        ("SKUFLOW_MODE", "jazz"),
        ("SKUFLOW_BROKER_URL", "redis://127.0.0.1"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_a_toml_file_sets_values_and_variables_win(monkeypatch: pytest.MonkeyPatch, tmp_path):
    config = tmp_path / "skuflow.toml"
    config.write_text('mode = "orchestration"\nprefetch = 7\n')
    monkeypatch.setenv("SKUFLOW_CONFIG", str(config))
    monkeypatch.setenv("SKUFLOW_PREFETCH", "9")
    settings = load_settings()
    assert (settings.mode, settings.prefetch) == ("orchestration", 9)


def test_a_misspelled_key_in_the_config_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path):
    config = tmp_path / "skuflow.toml"
    config.write_text('retry_delay = "1,2"\nmode = "orchestration"\n')
    monkeypatch.setenv("SKUFLOW_CONFIG", str(config))
    with pytest.raises(SettingsError, match=r"unknown setting\(s\) retry_delay "):
        load_settings()


def test_config_file_keys_are_read_in_any_case(monkeypatch: pytest.MonkeyPatch, tmp_path):
    config = tmp_path / "skuflow.toml"
    config.write_text('MODE = "orchestration"\n')
    monkeypatch.setenv("SKUFLOW_CONFIG", str(config))
    assert load_settings().mode == "orchestration"


def test_a_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("SKUFLOW_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(SettingsError, match="SKUFLOW_CONFIG: no such file"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SKUFLOW_INVENTORY_DATABASE_URL", "postgresql://user@host/db"),
        ("SKUFLOW_USERS_URL", "127.0.0.1:8003"),
        ("SKUFLOW_AUTH_TRANSPORT", "carrier-pigeon"),
        ("SKUFLOW_LOW_STOCK_THRESHOLD", "-1"),
        ("SKUFLOW_AUTH_CACHE_SECONDS", "a while"),
        ("SKUFLOW_SMTP_CONNECTIONS", "0"),
        ("SKUFLOW_SMTP_CONNECTIONS", "51"),
        ("SKUFLOW_SMTP_CONNECTIONS", "four"),
        ("SKUFLOW_USERS_GRPC", "50051"),
        ("SKUFLOW_USERS_GRPC", "127.0.0.1:0"),
        ("SKUFLOW_USERS_GRPC", "127.0.0.1:65536"),
        ("SKUFLOW_USERS_GRPC", "bad host:50051"),
        ("SKUFLOW_USERS_GRPC_CA", "/nonexistent/ca.pem"),
        ("SKUFLOW_USERS_GRPC_CA", "/etc/hostname"),  # not PEM
        ("SKUFLOW_TOKEN_FORMAT", "paseto"),
        ("SKUFLOW_LOG_FORMAT", "xml"),
        ("SKUFLOW_METRICS_REFRESH_SECONDS", "0"),
        ("SKUFLOW_METRICS_REFRESH_SECONDS", "soon"),
    ],
)
def test_the_service_settings_are_checked_too(monkeypatch: pytest.MonkeyPatch, variable: str, value: str):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_each_service_defaults_to_its_own_sqlite_file_under_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("SKUFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SKUFLOW_USERS_DATABASE_URL", "postgresql+asyncpg://u@h/users")
    settings = load_settings()
    assert settings.database_url("inventory") == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'inventory.db'}"
    assert settings.database_url("users") == "postgresql+asyncpg://u@h/users"
    assert settings.shutdown_grace_seconds == 30


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:secret@host/", "amqp://guest:***@host/"),
        ("amqp:/guest:secret@host/", "amqp:/guest:***@host/"),  # malformed: that is when it is shown
        ("guest:secret@host", "guest:***@host"),
        ("amqp://guest:sec:ret@h@host", "amqp://guest:***@host"),
        ('"amqp://guest:secret@host"', '"amqp://guest:***@host"'),  # quoted, as from an env file
        ("postgresql://me@corp:secret@host/db", "postgresql://me@corp:***@host/db"),
        ("postgresql://host/db?user=me&password=secret", "postgresql://host/db?user=me&password=***"),
        ("postgresql+asyncpg://postgres@host/db", "postgresql+asyncpg://postgres@host/db"),
        ("memory://", "memory://"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str):
    assert without_password(url) == shown


def test_a_malformed_broker_url_is_named_without_its_password(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SKUFLOW_BROKER_URL", "amqp:/guest:TopSecret2@127.0.0.1/")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "SKUFLOW_BROKER_URL" in str(error.value)
    assert "TopSecret2" not in str(error.value)


def test_the_file_size_limit_stays_within_what_line_numbers_can_count(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SKUFLOW_WAREHOUSE_MAX_FILE_BYTES", str(2**31))
    with pytest.raises(SettingsError, match="SKUFLOW_WAREHOUSE_MAX_FILE_BYTES"):
        load_settings()


def test_the_backlog_bound_is_ten_thousand_messages_and_zero_means_none(monkeypatch: pytest.MonkeyPatch):
    assert load_settings().max_backlog == 10_000
    monkeypatch.setenv("SKUFLOW_MAX_BACKLOG", "0")
    assert load_settings().max_backlog == 0


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("-1", "greater than or equal to 0"),
        ("lots", "a valid integer"),
        ("2.5", "a valid integer"),
        ("1000000001", "less than or equal to 1000000000"),
    ],
)
def test_a_bad_backlog_bound_is_named_with_the_reason(monkeypatch: pytest.MonkeyPatch, value: str, why: str):
    monkeypatch.setenv("SKUFLOW_MAX_BACKLOG", value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "SKUFLOW_MAX_BACKLOG: " in str(error.value)
    assert why in str(error.value)
    assert repr(value) in str(error.value)


def test_a_grpc_certificate_needs_its_key(monkeypatch: pytest.MonkeyPatch, tmp_path):
    pem = tmp_path / "cert.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("SKUFLOW_USERS_GRPC_CERT", str(pem))
    with pytest.raises(SettingsError, match="SKUFLOW_USERS_GRPC_KEY"):
        load_settings()


def test_the_local_transport_needs_revocations_pulled_at_least_every_second(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SKUFLOW_AUTH_TRANSPORT", "local")
    monkeypatch.setenv("SKUFLOW_AUTH_CACHE_SECONDS", "0.5")
    with pytest.raises(
        SettingsError, match=r"SKUFLOW_AUTH_CACHE_SECONDS: .*at least 1 with SKUFLOW_AUTH_TRANSPORT=local"
    ):
        load_settings()
    monkeypatch.setenv("SKUFLOW_AUTH_CACHE_SECONDS", "1")
    assert load_settings().auth_transport == "local"
