"""`skuflow bench auth` with tiny sizes, as a user runs it: every subject and ratio in its JSON and its table,
and the signing algorithms' figures; no figure is held to a time."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from skuflow.bench.auth import ALGORITHMS, RATIOS, SUBJECTS, AlgorithmFigures, AuthReport, Figures
from tests.cli.test_cli import skuflow

TINY = ["--seconds", "0.1", "--warmup", "0", "--runs", "2", "--callers", "1", "--callers", "3"]


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
        assert "local / rest" in report["ratios"][callers]

    assert set(report["algorithms"]) == {"RS256", "ES256", "EdDSA"}
    for name, measured in report["algorithms"].items():
        assert measured["signs_per_second"] > 0, f"{name} signed nothing"
        assert measured["verifies_per_second"] > 0, f"{name} verified nothing"
        assert all(ratio > 0 for ratio in measured["rs256_over_it"].values())
        assert measured["token_chars"] > 100  # a whole JWT: header, claims and signature
        assert len(measured["runs"]) == 2
    assert report["algorithms"]["RS256"]["rs256_over_it"] == {"sign": 1.0, "verify": 1.0}


def test_bench_auth_table_shows_every_subject_and_ratio():
    """The table, from figures made up here: the embedded system adds nothing to what the JSON test proves."""
    figures = {subject: [Figures(100 + n, 1.0, 1.0 + n, 2.0 + n)] for n, subject in enumerate(SUBJECTS)}
    algorithms = {name: [AlgorithmFigures(1000 + n, 1.0, 2000 + n, 1.0, 400)] for n, (name, _) in enumerate(ALGORITHMS)}
    report = AuthReport(1.0, 1, (1, 50), "embedded", {1: figures, 50: figures}, algorithms)
    console = Console(width=200, record=True)
    console.print(report.table())
    shown = console.export_text()
    texts = (*SUBJECTS, *(name for name, *_ in RATIOS), "bench auth (embedded)", "50 caller(s)", "signing algorithms")
    for text in (*texts, "RS256", "ES256", "EdDSA", "Ed25519", "RSA 2048-bit", "2,002", "1.00x"):
        assert text in shown
    assert set(report.as_dict()["algorithms"]) == {"RS256", "ES256", "EdDSA"}
