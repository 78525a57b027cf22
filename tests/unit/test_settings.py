import pytest

from skuflow.platform.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path):
    for name in ("SKUFLOW_BROKER_URL", "SKUFLOW_RETRY_DELAYS", "SKUFLOW_PREFETCH", "SKUFLOW_MODE", "SKUFLOW_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_the_defaults_are_the_contracts():
    settings = load_settings()
    assert settings.broker_url == "memory://"
    assert settings.mode == "choreography"
    assert settings.retry_delays == (1, 5, 30, 120, 600)
    assert settings.broker_options().prefetch == 32


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


def test_a_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("SKUFLOW_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(SettingsError, match="SKUFLOW_CONFIG: no such file"):
        load_settings()
