"""The `skuflow` command as a user runs it: a real process, real brokers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def skuflow(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skuflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.mark.parametrize("broker", ["memory", pytest.param("amqp", marks=pytest.mark.amqp)])
def test_demo_shows_one_event_reaching_every_queue_and_the_command_it_causes(broker: str, request):
    url = "memory://" if broker == "memory" else request.getfixturevalue("amqp_url")
    result = skuflow("demo", "--sku", "SKU-7", env={"SKUFLOW_BROKER_URL": url})
    assert result.returncode == 0, result.stderr
    for queue in ("inventory.sku_processed", "catalog.sku_processed", "users.sku_processed"):
        assert f"{queue} got SkuProcessed(sku='SKU-7')" in result.stdout
    assert "inventory.recalculate_sku got RecalculateSku(sku='SKU-7')" in result.stdout
    assert "round trip complete: 4 deliveries" in result.stdout


def test_a_bad_setting_stops_the_command_naming_the_variable():
    result = skuflow("demo", env={"SKUFLOW_RETRY_DELAYS": "1,later"})
    assert result.returncode == 2
    assert "SKUFLOW_RETRY_DELAYS" in result.stderr


@pytest.mark.amqp
def test_bench_bus_prints_both_sides_and_their_ratio(amqp_url: str):
    result = skuflow("bench", "bus", "--messages", "200", "--runs", "1", "--url", amqp_url)
    assert result.returncode == 0, result.stderr
    assert "raw aio-pika" in result.stdout
    assert "skuflow.messaging" in result.stdout
    assert "publish (msg/s)" in result.stdout
    assert "consume (deliveries/s)" in result.stdout


@pytest.mark.amqp
def test_bench_bus_json_has_every_figure(amqp_url: str):
    result = skuflow("bench", "bus", "-n", "100", "--runs", "2", "--window", "10", "--url", amqp_url, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["messages"] == 100
    assert len(report["raw"]) == len(report["layer"]) == 2
    for key in ("raw_publish_median", "layer_publish_median", "raw_consume_median", "layer_consume_median"):
        assert report[key] > 0
    assert report["publish_ratio"] > 0
    assert report["consume_ratio"] > 0
    assert (report["against"], report["faststream"]) == ("raw", [])


@pytest.mark.amqp
def test_bench_bus_against_faststream_measures_it_as_a_third_side(amqp_url: str):
    args = ["-n", "50", "--runs", "2", "--window", "10", "--url", amqp_url, "--against", "faststream"]
    result = skuflow("bench", "bus", *args, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["messages"], report["against"]) == (50, "faststream")
    assert len(report["raw"]) == len(report["layer"]) == len(report["faststream"]) == 2
    for side in ("raw", "layer", "faststream"):
        for figure in ("publish", "consume"):
            assert report[f"{side}_{figure}_median"] > 0
    for ratio in ("", "faststream_raw_", "layer_faststream_"):  # layer/raw, faststream/raw, layer/faststream
        assert report[f"{ratio}publish_ratio"] > 0
        assert report[f"{ratio}consume_ratio"] > 0

    result = skuflow("bench", "bus", *args[:2], "--runs", "1", *args[4:])
    assert result.returncode == 0, result.stderr
    for column in ("raw aio-pika", "skuflow.messaging", "FastStream", "layer / raw", "FastStream / raw"):
        assert column in result.stdout
    assert "layer / FastStream" in result.stdout


@pytest.mark.amqp
def test_bench_bus_against_traced_measures_the_layer_tracing_every_message(amqp_url: str):
    """The third side is the layer with a tracer exporting to the bench's OTLP sink: every span arrives (a
    publish and three deliveries per message; the default queue of the batch processor holds 2,048)."""
    args = ["-n", "50", "--runs", "2", "--window", "10", "--url", amqp_url, "--against", "traced"]
    result = skuflow("bench", "bus", *args, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["against"], report["faststream"]) == ("traced", [])
    assert len(report["raw"]) == len(report["layer"]) == len(report["traced"]) == 2
    assert report["spans"] == [200, 200]
    assert report["spans_expected"] == report["spans_median"] == 200
    assert len(report["flush_seconds"]) == 2
    for ratio in ("", "traced_raw_", "traced_layer_"):  # layer/raw, traced/raw, traced/layer
        assert report[f"{ratio}publish_ratio"] > 0
        assert report[f"{ratio}consume_ratio"] > 0

    result = skuflow("bench", "bus", *args[:2], "--runs", "1", *args[4:])
    assert result.returncode == 0, result.stderr
    for shown in ("traced / raw", "traced / layer", "200 of 200 received"):
        assert shown in result.stdout


def test_bench_bus_refuses_a_broker_url_that_is_not_rabbitmq():
    result = skuflow("bench", "bus", "--url", "memory://")
    assert result.returncode == 2
    assert "--url must be a RabbitMQ URL" in result.stderr


def test_bench_bus_refuses_an_unknown_side():
    result = skuflow("bench", "bus", "--against", "celery")
    assert result.returncode == 2
    assert "--against takes raw, faststream or traced" in result.stderr


def without_faststream(*args: str) -> subprocess.CompletedProcess[str]:
    """`skuflow *args` with FastStream, an optional extra, hidden as if it were not installed."""
    hide = "import sys; sys.modules['faststream'] = None; from skuflow.cli import app; app()"
    return subprocess.run(
        [sys.executable, "-c", hide, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_bench_bus_against_faststream_without_it_names_the_extra_to_install():
    result = without_faststream("bench", "bus", "--against", "faststream")
    assert result.returncode == 2
    assert "pip install 'skuflow[bench]'" in result.stderr


def test_faststream_is_imported_only_by_bench_bus_against_it():
    code = "import sys, skuflow.cli, skuflow.bench.bus; print(sorted(m for m in sys.modules if 'faststream' in m))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.amqp
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_bench_outbox_prints_the_relay_beside_direct_publishing(amqp_url: str, database: str, request):
    args = ["bench", "outbox", "-n", "200", "--runs", "1", "--url", amqp_url, "--json"]
    if database == "postgresql":
        args += ["--database-url", request.getfixturevalue("postgres_databases")["inventory"]]
    result = skuflow(*args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["database"].startswith(database)
    assert report["messages"] == 200
    for key in ("write_median", "relay_median", "direct_median", "relay_ratio"):
        assert report[key] > 0


def test_bench_ftp_measures_each_database_and_prints_json(postgresql):
    result = skuflow("bench", "ftp", "-n", "2000", "--runs", "2", "--postgres-url", postgresql.url, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["lines"], report["runs"], report["target_lines_per_second"]) == (2000, 2, 50_000)
    assert report["baseline_download_and_check_lines_per_second"] > 0
    assert sorted(report["databases"]) == ["postgresql", "sqlite"]
    for database in report["databases"].values():
        for kind in ("create", "update"):
            figures = database[kind]
            assert figures["lines_per_second"] > 0
            assert figures["peak_memory_mb"] > 0
            assert set(figures) == {"lines_per_second", "seconds", "peak_memory_mb", "memory_growth_mb", "of_target"}


def test_bench_mailer_measures_the_three_ways_on_each_database_and_prints_json(postgresql):
    result = skuflow("bench", "mailer", "-n", "60", "--runs", "2", "--postgres-url", postgresql.url, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["emails"], report["runs"], report["smtp"], report["connections"]) == (60, 2, "plain", 4)
    assert sorted(report["databases"]) == ["postgresql", "sqlite"]
    for figures in report["databases"].values():
        assert set(figures) == {
            "concurrent_emails_per_second",
            "concurrent_ratio",
            "concurrent_connections",
            "concurrent_cpu_ms_per_email",
            "pooled_emails_per_second",
            "pooled_cpu_ms_per_email",
            "per_email_connection_emails_per_second",
            "pooled_ratio",
            "pooled_connections",
        }
        assert figures["concurrent_emails_per_second"] > 0
        assert figures["concurrent_ratio"] > 0
        assert figures["concurrent_connections"] == 4, "a pass of 50 emails goes on the four connections"
        assert figures["concurrent_cpu_ms_per_email"] > 0
        assert figures["pooled_emails_per_second"] > 0
        assert figures["per_email_connection_emails_per_second"] > 0
        assert figures["pooled_ratio"] > 0
        assert figures["pooled_connections"] == 1, "the emails of the pooled side share one connection"


def test_bench_mailer_table_over_starttls_and_auth():
    result = skuflow("bench", "mailer", "-n", "20", "--runs", "1", "--tls", "--connections", "3")
    assert result.returncode == 0, result.stderr
    assert "STARTTLS and AUTH" in result.stdout
    assert "a connection per email (emails/s)" in result.stdout
    assert "2 / 1 / 20" in result.stdout, "20 emails: 2 connections (one per 16 emails), 1 pooled, 1 per email"


def test_bench_ftp_table_and_a_bad_choice_of_database():
    result = skuflow("bench", "ftp", "-n", "500", "--runs", "1", "--databases", "sqlite")
    assert result.returncode == 0, result.stderr
    assert "every SKU new" in result.stdout
    assert "download and check" in result.stdout
    wrong = skuflow("bench", "ftp", "--databases", "oracle")
    assert wrong.returncode == 2
    assert "--databases takes sqlite and/or postgresql" in wrong.stderr
