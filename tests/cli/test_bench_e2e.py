"""`skuflow bench e2e` with tiny sizes, as a user runs it, on both stacks: it converges in both modes and
both phases, and its JSON has every figure (no figure is held to a time)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.cli.test_cli import skuflow, without_faststream

SIZES = ["--skus", "20", "--users", "4", "--wishes", "2", "--concurrency", "4", "--timeout", "40"]
PHASE_FIELDS = {
    "mode",
    "phase",
    "skus",
    "reports",
    "refused",
    "due_emails",
    "converge_seconds",
    "changes_per_second",
    "catalog_latency_ms",
    "email_latency_ms",
    "answer_ms",
    "published",
    "delivered",
    "retried",
    "dead_lettered",
    "steps_resent",
    "steps_failed",
    "http_calls",
    "emails",
    "processes",
    "peak_memory_mb",
    "load_average",
    "knows",
    "system",
}
PERCENTILES = {"p50", "p99", "max", "count"}


def check_report(
    report: dict,
    broker: str,
    databases: str,
    batch: int = 1,
    via: tuple[str, ...] = ("http", "ftp"),
    system: str = "skuflow up",
) -> None:
    assert (report["broker"], report["databases"], report["system"]) == (broker, databases, system)
    assert set(report["workload"]) == {"skus", "users", "wishes", "batch", "concurrency", "rate", "timeout", "poll"}
    assert {"python", "skuflow"} <= set(report["versions"])
    if broker == "amqp":
        assert {"rabbitmq", "postgresql"} <= set(report["versions"])
    assert report["machine"]["cpus"] >= 1
    assert len(report["machine"]["load_average"]) == 3
    assert set(report["modes"]) == {"choreography", "orchestration"}
    for mode, phases in report["modes"].items():
        assert set(phases) == set(via)
        for phase, figures in phases.items():
            assert set(figures) == PHASE_FIELDS, (mode, phase)
            assert figures["system"] == "skuflow"
            assert (figures["mode"], figures["phase"], figures["skus"]) == (mode, phase, 20)
            assert figures["emails"] == figures["due_emails"] == 8  # 4 users x 2 wishes, each SKU available once
            assert figures["converge_seconds"] > 0
            assert figures["changes_per_second"] > 0
            for latency in ("catalog_latency_ms", "email_latency_ms", "answer_ms"):
                assert set(figures[latency]) == PERCENTILES
            assert figures["catalog_latency_ms"]["count"] == 20
            assert figures["email_latency_ms"]["count"] == 8
            assert sum(figures["published"].values()) >= 20
            assert sum(figures["delivered"].values()) >= 60  # three queues' worth per SKU in either mode
            roles = {process["role"] for process in figures["processes"]}
            assert roles == {"system", "bench"}
            in_system = [process for process in figures["processes"] if process["role"] == "system"]
            # `skuflow up`, or it and per service a supervisor and a worker
            assert len(in_system) == (7 if system.endswith("--processes") else 1), in_system
            for process in figures["processes"]:
                assert set(process) == {"role", "pid", "command", "cpu_seconds", "peak_rss_mb"}
                assert process["peak_rss_mb"] > 0
        if "http" in phases:  # `batch` SKUs a report
            assert (phases["http"]["reports"], phases["http"]["answer_ms"]["count"]) == (20 // batch, 20 // batch)
        if "ftp" in phases:  # one snapshot, no HTTP report
            assert (phases["ftp"]["reports"], phases["ftp"]["answer_ms"]["count"]) == (0, 0)


def test_bench_e2e_embedded_both_modes_both_phases_traced():
    """`--traced`: the system exports its spans to the bench's OTLP sink, which counts them per mode."""
    result = skuflow("bench", "e2e", *SIZES, "--embedded", "--traced", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    check_report(report, "memory", "sqlite")
    assert report["traced"] is True
    assert set(report["spans"]) == {"choreography", "orchestration"}
    for mode, spans in report["spans"].items():
        delivered = sum(sum(phase["delivered"].values()) for phase in report["modes"][mode].values())
        assert spans > delivered, mode  # a span per delivery at least, setup besides


@pytest.mark.amqp
def test_bench_e2e_on_rabbitmq_and_postgresql_a_process_per_service_beside_raw(amqp_url: str, postgresql):
    """`--system both`: skuflow's phases, then the raw flow's, in one run, and skuflow / raw."""
    args = ["--broker-url", amqp_url, "--postgres-url", postgresql.url, "--processes", "--system", "both"]
    result = skuflow("bench", "e2e", *SIZES, *args, "--batch", "5", "--via", "http", "--json")  # under a minute
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    check_report(report, "amqp", "postgresql", batch=5, via=("http",), system="skuflow up --processes")
    raw = report["raw"]["modes"]["choreography"]["http"]
    assert (raw["system"], raw["reports"], raw["emails"]) == ("raw", 4, 8)
    ratio = report["ratio"]["choreography http changes_per_second"]
    assert ratio == pytest.approx(
        report["modes"]["choreography"]["http"]["changes_per_second"] / raw["changes_per_second"], rel=0.01
    )


BASELINES = {  # flow -> its module and the ratio key whose denominator it is
    "raw": ("skuflow.bench.raw", "ratio"),
    "faststream": ("skuflow.bench.faststream_flow", "ratio_faststream"),
}


@pytest.mark.amqp
@pytest.mark.parametrize("flow", list(BASELINES))
def test_bench_e2e_beside_a_baseline_flow(flow: str, amqp_url: str, postgresql):
    """`--system raw` or `--system faststream`: the flow on the raw building blocks (or the same with its messaging
    in FastStream), a process per service, converges on the same HTTP phase, with the same figures; its processes
    are its three services, all stopped after."""
    module, ratio = BASELINES[flow]
    args = ["--broker-url", amqp_url, "--postgres-url", postgresql.url, "--system", flow, "--json"]
    result = skuflow("bench", "e2e", *SIZES, *args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["modes"] == {}
    assert report[ratio] == {}  # skuflow did not run
    assert report[flow]["system"].startswith(module)
    assert set(report) & {"raw", "faststream"} == {flow}
    figures = report[flow]["modes"]["choreography"]["http"]
    assert set(figures) == PHASE_FIELDS
    assert figures["system"] == flow
    assert (figures["skus"], figures["reports"], figures["emails"], figures["due_emails"]) == (20, 20, 8, 8)
    assert figures["catalog_latency_ms"]["count"] == 20
    assert figures["email_latency_ms"]["count"] == 8
    assert figures["changes_per_second"] > 0
    assert figures["answer_ms"]["count"] == 20
    in_system = [process for process in figures["processes"] if process["role"] == "system"]
    assert sorted(process["command"].rsplit(" ", 1)[1] for process in in_system) == ["catalog", "inventory", "users"]
    for process in in_system:
        assert f"-m {module} " in process["command"]
        assert process["peak_rss_mb"] > 0
        assert not os.path.exists(f"/proc/{process['pid']}") or _is_zombie(process["pid"])


def test_bench_e2e_raw_refuses_what_it_does_not_have():
    embedded = skuflow("bench", "e2e", "--embedded", "--system", "raw")
    assert (embedded.returncode, "drop --embedded" in embedded.stderr) == (2, True)
    ftp = skuflow("bench", "e2e", "--system", "raw,faststream", "--via", "ftp")
    assert (ftp.returncode, "choreography over HTTP only" in ftp.stderr) == (2, True)
    for wrong in ("bare", "raw,raw", "skuflow,"):
        result = skuflow("bench", "e2e", "--system", wrong)
        assert (result.returncode, "--system takes skuflow, raw, faststream" in result.stderr) == (2, True), wrong


def test_bench_e2e_faststream_without_it_names_the_extra_to_install():
    result = without_faststream("bench", "e2e", "--system", "skuflow,faststream")
    assert result.returncode == 2
    assert "pip install 'skuflow[bench]'" in result.stderr


def test_bench_e2e_system_names_and_ratios():
    """`--system` takes a comma list, `both` or `all`, run in one order; each ratio whose denominator ran is in
    the JSON and the table."""
    from skuflow.bench import e2e
    from skuflow.bench.e2e.figures import PhaseFigures, Report, Workload

    assert e2e.systems_named("both") == ("skuflow", "raw")
    assert e2e.systems_named("all") == e2e.systems_named("faststream,raw,skuflow") == ("skuflow", "raw", "faststream")
    assert e2e.systems_named("faststream") == ("faststream",)
    assert e2e.systems_named("raw,,skuflow") is None
    report = Report(Workload(20, 4, 2), "amqp", "postgresql")
    for system, rate in (("skuflow", 50.0), ("raw", 100.0), ("faststream", 40.0)):
        report.phases.append(PhaseFigures("choreography", "http", changes_per_second=rate, system=system))
    shown = report.as_dict()
    assert (shown["traced"], shown["spans"]) == (False, {})
    key = "choreography http changes_per_second"
    assert (shown["ratio"][key], shown["ratio_faststream"][key], shown["ratio_faststream_raw"][key]) == (0.5, 1.25, 0.4)
    assert shown["faststream"]["modes"]["choreography"]["http"]["system"] == "faststream"
    assert "skuflow / faststream, choreography http changes_per_second: 1.25x" in str(e2e.table(report).title)


def test_bench_e2e_decides_tracing_whatever_the_callers_variables_say():
    from skuflow.bench.e2e.system import tracing_environment

    off = tracing_environment(None)
    assert off == dict.fromkeys(
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED")
    )
    on = tracing_environment("http://127.0.0.1:4318")
    assert on == {**off, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


def test_bench_e2e_prints_a_table_at_a_rate_over_one_phase():
    result = skuflow("bench", "e2e", *SIZES, "--embedded", "--mode", "orchestration", "--via", "http", "--rate", "50")
    assert result.returncode == 0, result.stderr
    assert "SKU changes/s converged" in result.stdout
    assert "orchestration" in result.stdout
    assert "choreography" not in result.stdout


def test_bench_e2e_names_what_it_cannot_reach_and_never_falls_back():
    closed = "amqp://guest:guest@127.0.0.1:1/"
    result = skuflow("bench", "e2e", *SIZES, "--broker-url", closed, "--rabbitmq-api", "http://127.0.0.1:1")
    assert result.returncode == 1
    assert "cannot reach RabbitMQ's management API at http://127.0.0.1:1" in result.stderr
    wrong = skuflow("bench", "e2e", "--broker-url", "memory://")
    assert (wrong.returncode, "--broker-url must be a RabbitMQ URL" in wrong.stderr) == (2, True)
    mixed = skuflow("bench", "e2e", "--embedded", "--processes")
    assert (mixed.returncode, "drop --embedded" in mixed.stderr) == (2, True)


@pytest.mark.amqp
def test_bench_e2e_names_an_unreachable_postgresql(amqp_url: str):
    args = ["--broker-url", amqp_url, "--postgres-url", "postgresql+asyncpg://postgres@127.0.0.1:1/postgres"]
    result = skuflow("bench", "e2e", *SIZES, *args)
    assert result.returncode == 1
    assert "cannot reach PostgreSQL at postgresql+asyncpg://postgres@127.0.0.1:1/postgres" in result.stderr


def test_bench_e2e_stops_the_system_it_started_when_interrupted(tmp_path):
    """Ctrl-C in the middle: the bench stops its `skuflow up` (no process of it is left)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "skuflow", "bench", "e2e", "--embedded", "--skus", "2000", "--users", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        children = _wait_for_children(process.pid, seconds=30)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=45)
        for child in children:
            assert not os.path.exists(f"/proc/{child}") or _is_zombie(child), f"skuflow up ({child}) left running"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _wait_for_children(pid: int, seconds: float) -> list[int]:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and _parent(int(entry)) == pid]
        if found:
            time.sleep(3)  # into the setup
            return found
        time.sleep(0.1)
    raise AssertionError(f"bench e2e started no system within {seconds} s")


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
