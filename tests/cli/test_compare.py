"""`skuflow compare` with tiny sizes, as a user runs it, on both stacks: it converges, reports every figure,
and its counts are what the topology implies."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli import skuflow

SIZES = ["--skus", "6", "--users", "2", "--wishes", "2"]


def check_figures(report: dict) -> None:
    assert set(report["modes"]) == {"choreography", "orchestration"}
    choreography, orchestration = report["modes"]["choreography"], report["modes"]["orchestration"]
    for figures in (choreography, orchestration):
        assert set(figures) >= {
            "converge_seconds",
            "published",
            "delivered",
            "http_calls",
            "catalog_latency_ms",
            "email_latency_ms",
            "emails",
            "retried",
            "dead_lettered",
            "steps_resent",
            "steps_failed",
            "peak_memory_mb",
            "knows",
        }
        assert figures["emails"] == 4  # 2 users x 2 wishes, each SKU made available once
        assert figures["converge_seconds"] > 0
        assert figures["catalog_latency_ms"]["count"] == 3  # the SKUs reported over HTTP
    # Choreography: one sku_processed per SKU, delivered to each of the three queues; catalog and users ask.
    assert choreography["published"] == {"sku_processed -> (fanout) (sku_processed)": 6}
    assert choreography["delivered"] == {
        "inventory.sku_processed": 6,
        "catalog.sku_processed": 6,
        "users.sku_processed": 6,
    }
    # ... in batches: one call for the SKUs of each batch (a batch is at least one SKU).
    assert 1 <= choreography["http_calls"]["catalog -> inventory GET /v1/skus"] <= 6
    # Orchestration: three commands per SKU and a reply to each; nobody asks inventory.
    assert orchestration["delivered"] == {
        "inventory.recalculate_sku": 6,
        "catalog.update_sku_availability": 6,
        "users.update_wishlists_for_sku": 6,
        "inventory.flow_replies": 18,
    }
    assert not any("/v1/skus/" in call for call in orchestration["http_calls"])
    assert "queue inventory.flow_replies" in orchestration["knows"]["inventory"]


def test_compare_on_the_in_process_broker_and_sqlite():
    result = skuflow("compare", *SIZES, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["broker"], report["databases"]) == ("memory", "sqlite")
    check_figures(report)


@pytest.mark.amqp
def test_compare_on_rabbitmq_and_postgresql(amqp_url: str, postgresql):
    result = skuflow("compare", *SIZES, "--broker-url", amqp_url, "--postgres-url", postgresql.url, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["broker"], report["databases"]) == ("amqp", "postgresql")
    check_figures(report)


def test_compare_prints_a_table_or_markdown_and_fails_clearly_when_a_mode_does_not_converge():
    table = skuflow("compare", *SIZES)
    assert table.returncode == 0, table.stderr
    assert "time to converge (s)" in table.stdout
    assert "orchestration" in table.stdout
    markdown = skuflow("compare", *SIZES, "--markdown")
    assert markdown.stdout.startswith("| figure | choreography | orchestration |")
    hurried = skuflow("compare", *SIZES, "--timeout", "0.1")
    assert hurried.returncode == 1
    assert "choreography did not converge within 0.1 s" in hurried.stderr
    wrong = skuflow("compare", "--broker-url", "nats://x")
    assert (wrong.returncode, "--broker-url must be memory:// or amqp://" in wrong.stderr) == (2, True)
