"""`skuflow bench stock` with tiny sizes, as a user runs it: against skuflow's inventory and the raw one on RabbitMQ
and PostgreSQL, and embedded; its JSON has every figure, and no figure is held to a time."""

from __future__ import annotations

import json

import pytest

from skuflow.bench.stock.client import Plan
from skuflow.bench.stock.figures import StockReport, StockRun, StockWorkload
from skuflow.bench.stock.rendering import table
from tests.cli.test_cli import skuflow
from tests.cli.test_supervisor import alive

TINY = ["--seconds", "1", "--warmup", "0.5", "--concurrency", "4", "--clients", "2"]
TOP = {
    "workload",
    "broker",
    "databases",
    "inventory",
    "raw",
    "versions",
    "machine",
    "runs",
    "medians",
    "ratios",
    "ratio",
}
RUN_FIELDS = {
    "system",
    "run",
    "requests",
    "seconds",
    "requests_per_second",
    "answer_ms",
    "errors",
    "stale",
    "outbox_backlog",
    "cpu_seconds",
    "inventory_cpu_ms_per_request",
    "processes",
    "load_average",
}
MEDIAN_FIELDS = {
    "runs",
    "requests_per_second",
    "answer_ms",
    "errors",
    "stale",
    "outbox_backlog",
    "cpu_seconds",
    "inventory_cpu_ms_per_request",
}


def check_run(run: dict, system: str, turn: int) -> None:
    assert set(run) == RUN_FIELDS
    assert (run["system"], run["run"]) == (system, turn)
    assert run["requests"] > 0
    assert run["seconds"] > 0
    assert run["requests_per_second"] == pytest.approx(run["requests"] / run["seconds"], rel=0.01)
    assert set(run["answer_ms"]) == {"p50", "p99", "max", "count"}
    assert run["answer_ms"]["count"] == run["requests"]
    assert run["errors"] == {}
    assert run["stale"] == 0  # every report recorded something new
    assert len(run["load_average"]) == 3
    for process in run["processes"]:
        assert set(process) == {"role", "pid", "command", "cpu_seconds", "peak_rss_mb"}
        assert process["peak_rss_mb"] > 0
    loads = [process for process in run["processes"] if process["role"] == "load"]
    assert len(loads) == 2
    assert all(process["command"] == "python -m skuflow.bench.stock.client" for process in loads)
    assert run["cpu_seconds"]["inventory"] > 0
    assert run["inventory_cpu_ms_per_request"] > 0


@pytest.mark.amqp
def test_bench_stock_beside_the_raw_inventory_on_rabbitmq_and_postgresql(amqp_url: str, postgresql):
    """Two turns of skuflow's inventory (`--workers 2`: a supervisor and two workers, and users beside it) and the
    raw one (two processes on one socket), cycling over 8 SKUs; every process stopped after."""
    args = [*TINY, "--skus", "8", "--workers", "2", "--runs", "2", "--json"]
    result = skuflow("bench", "stock", *args, "--broker-url", amqp_url, "--postgres-url", postgresql.url)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == TOP
    assert (report["broker"], report["databases"]) == ("amqp", "postgresql")
    assert report["inventory"] == "skuflow serve inventory --workers 2"
    assert report["raw"].startswith("skuflow.bench.raw inventory")
    assert {"python", "skuflow", "rabbitmq", "postgresql"} <= set(report["versions"])
    assert report["workload"]["workers"] == 2
    assert [(run["system"], run["run"]) for run in report["runs"]] == [
        ("skuflow", 1),
        ("raw", 1),
        ("skuflow", 2),
        ("raw", 2),
    ]
    for run in report["runs"]:
        check_run(run, run["system"], run["run"])
        inventory = [process for process in run["processes"] if process["role"] == "inventory"]
        users = [process["command"].split(" -m ", 1)[1] for process in run["processes"] if process["role"] == "users"]
        if run["system"] == "skuflow":
            assert len(inventory) == 3  # the supervisor and its two workers
            assert all("skuflow serve inventory --workers 2" in process["command"] for process in inventory)
            assert users == ["skuflow serve users"]
            assert run["outbox_backlog"] is not None
        else:
            assert len(inventory) == 2
            assert all(process["command"].endswith("-m skuflow.bench.raw inventory") for process in inventory)
            assert users == []
            assert run["outbox_backlog"] is None
        for process in run["processes"]:
            if process["role"] in ("inventory", "users"):
                assert not alive(process["pid"]), process
    assert set(report["medians"]) == {"skuflow", "raw"}
    for medians in report["medians"].values():
        assert set(medians) == MEDIAN_FIELDS
        assert medians["runs"] == 2
    pairs = list(zip(report["runs"][::2], report["runs"][1::2], strict=True))
    expected = [round(ours["requests_per_second"] / raw["requests_per_second"], 3) for ours, raw in pairs]
    assert report["ratios"]["requests_per_second"] == expected
    assert len(report["ratios"]["inventory_cpu_ms_per_request"]) == 2
    assert report["ratio"]["requests_per_second"] == pytest.approx(sum(expected) / 2)


def test_bench_stock_embedded_sends_exactly_the_requests_asked_for():
    """`--embedded -n 40`: `skuflow up` alone (no raw baseline), and the window has exactly the 40 reports."""
    result = skuflow("bench", "stock", *TINY, "--embedded", "--requests", "40", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == TOP
    assert (report["broker"], report["databases"], report["raw"]) == ("memory", "sqlite", None)
    [run] = report["runs"]
    check_run(run, "skuflow", 1)
    assert run["requests"] == 40
    assert report["ratios"] == {"requests_per_second": [], "inventory_cpu_ms_per_request": []}
    assert report["ratio"] == {"requests_per_second": None, "inventory_cpu_ms_per_request": None}


def test_bench_stock_prints_a_table():
    result = skuflow("bench", "stock", *TINY, "--embedded")
    assert result.returncode == 0, result.stderr
    assert "requests/s (each run)" in result.stdout
    assert "inventory CPU ms per request" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clients", "4", "--concurrency", "2"], "--clients 4 is more than --concurrency 2"),
        (["--concurrency", "4", "--skus", "3"], "--skus 3 is fewer than --concurrency 4"),
        (["--clients", "2", "--requests", "1"], "--requests 1 is fewer than --clients 2"),
        (["--embedded", "--workers", "2"], "drop --embedded"),
        (["--broker-url", "memory://"], "--broker-url must be a RabbitMQ URL"),
    ],
)
def test_bench_stock_refuses_what_cannot_be_measured(args: list[str], message: str):
    result = skuflow("bench", "stock", *args)
    assert (result.returncode, message in result.stderr) == (2, True), result.stderr


def test_bench_stock_names_what_it_cannot_reach():
    closed = ["--broker-url", "amqp://guest:guest@127.0.0.1:1/", "--rabbitmq-api", "http://127.0.0.1:1"]
    result = skuflow("bench", "stock", *closed)
    assert result.returncode == 1
    assert "cannot reach RabbitMQ's management API at http://127.0.0.1:1" in result.stderr


@pytest.mark.parametrize("skus", [0, 5])
def test_every_report_of_a_generator_records_something_new(skus: int):
    """Each sender's SKUs are its own; each report is a new SKU, or the SKU at a number other than its previous
    report's, as of a later moment."""
    plan = Plan("http://inventory/v1/stock", "token", client=1, in_flight=2, skus=skus, seconds=1, requests=0)
    last: dict[str, tuple[str, int]] = {}
    for sender in range(2):
        for n in range(10):
            report = json.loads(plan.report(sender, n))
            [item] = report["items"]
            assert item["sku"].startswith(f"SKU-1-{sender}-")
            if item["sku"] in last:
                as_of, on_hand = last[item["sku"]]
                assert report["as_of"] > as_of
                assert item["on_hand"] != on_hand
            last[item["sku"]] = (report["as_of"], item["on_hand"])
    assert len(last) == (skus or 20)


def test_the_report_gives_medians_and_per_pair_ratios():
    report = StockReport(StockWorkload(runs=3), "amqp", "postgresql", "skuflow serve inventory")
    answers, load = {"p50": 10.0, "p99": 20.0, "max": 30.0, "count": 1}, [1.0, 1.0, 1.0]
    for turn, (ours, raw) in enumerate([(1000.0, 2000.0), (900.0, 3000.0), (1200.0, 2000.0)], start=1):
        cpu = {"inventory": 2.0}
        report.runs += [
            StockRun("skuflow", turn, requests_per_second=ours, answer_ms=answers, cpu_seconds=cpu, load_average=load),
            StockRun("raw", turn, requests_per_second=raw, answer_ms=answers, errors={"503": turn}, load_average=load),
        ]
    shown = report.as_dict()
    assert shown["ratios"]["requests_per_second"] == [0.5, 0.3, 0.6]
    assert shown["ratio"]["requests_per_second"] == 0.5
    assert shown["medians"]["skuflow"]["requests_per_second"] == 1000.0
    assert shown["medians"]["raw"]["errors"] == {"503": 6}  # added up over the runs
    assert shown["medians"]["skuflow"]["cpu_seconds"] == {"inventory": 2.0}
    rendered = table(report)
    assert [column.header for column in rendered.columns] == ["figure", "skuflow", "raw", "skuflow / raw"]
    assert "0.50x (0.50, 0.30, 0.60)" in rendered.columns[3]._cells
