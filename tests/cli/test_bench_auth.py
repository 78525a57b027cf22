"""`skuflow bench auth` with tiny sizes, as a user runs it: every subject and ratio in its JSON and its table;
no figure is held to a time."""

from __future__ import annotations

import json

import pytest

from skuflow.bench.auth import RATIOS, SUBJECTS
from tests.cli.test_cli import skuflow

TINY = ["--seconds", "0.3", "--warmup", "0.1", "--runs", "2", "--callers", "1", "--callers", "3"]


@pytest.mark.amqp
def test_bench_auth_measures_every_way_of_verifying_beside_its_baseline(amqp_url: str):
    """On RabbitMQ and PostgreSQL (`skuflow serve users` and `serve inventory`), as deployed."""
    result = skuflow("bench", "auth", *TINY, "--broker-url", amqp_url, "--json", timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)

    assert (report["runs"], report["callers"], report["stack"]) == (2, [1, 3], "postgresql")
    for callers in ("1", "3"):
        figures = report["figures"][callers]
        assert set(figures) == set(SUBJECTS)
        for subject, measured in figures.items():
            assert measured["calls_per_second"] > 0, f"{subject} at {callers} caller(s) made no call"
            assert 0 < measured["p50_ms"] <= measured["p99_ms"]
            assert len(measured["runs"]) == 2
        assert set(report["ratios"][callers]) == {name for name, *_ in RATIOS}
        assert all(ratio > 0 for ratio in report["ratios"][callers].values())


def test_bench_auth_embedded_prints_a_table():
    result = skuflow(
        "bench", "auth", "--embedded", "--seconds", "0.2", "--warmup", "0", "--runs", "1", "--callers", "2"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "grpc / rest" in result.stdout
    assert "cache hit" in result.stdout
