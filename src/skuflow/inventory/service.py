"""Wiring: inventory's database, runtime, routing table and HTTP app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI

from skuflow.inventory import admission, api, flows_api
from skuflow.inventory.consumers import InventoryConsumers
from skuflow.inventory.db import outbox
from skuflow.inventory.feed.watcher import FeedWatcher
from skuflow.inventory.messages import RecalculateSku, SkuProcessed, StepFinished
from skuflow.inventory.orchestration import Orchestrator, StepTimeouts
from skuflow.inventory.recording import Announcer, Recorder
from skuflow.inventory.retention import Retention
from skuflow.messaging import routes
from skuflow.platform.backpressure import Backpressure
from skuflow.platform.db import Database
from skuflow.platform.flows import StepReplies
from skuflow.platform.ftp import FtpLocation
from skuflow.platform.runtime import Check, ServiceRuntime
from skuflow.platform.settings import Settings
from skuflow.platform.web import create_app

MIGRATIONS = Path(__file__).parent / "migrations"


def build_runtime(settings: Settings) -> ServiceRuntime:
    return _build(settings)[0]


def _build(settings: Settings) -> tuple[ServiceRuntime, Backpressure]:
    """The runtime, and the bound on the writes that its feed and the app's routes share."""
    db = Database(settings.database_url("inventory"), MIGRATIONS)
    runtime = ServiceRuntime("inventory", settings, db, outbox_table=outbox)
    assert runtime.outbox is not None
    orchestrator = Orchestrator(db, runtime.outbox)
    consumers = InventoryConsumers(
        db,
        Announcer(settings.mode, runtime.outbox, orchestrator),
        orchestrator,
        StepReplies("inventory", runtime.broker.publish_many),
    )
    runtime.subscribe(
        [
            routes.INVENTORY_SKU_PROCESSED.bind(SkuProcessed, consumers.recalculate_availability),
            routes.INVENTORY_RECALCULATE_SKU.bind(RecalculateSku, consumers.recalculate_for_flow),
            routes.INVENTORY_FLOW_REPLIES.bind(StepFinished, consumers.on_step_finished),
        ]
    )
    # In both modes: flows begun before a switch still end.
    timeouts = StepTimeouts(
        db,
        runtime.outbox,
        settings.flow_step_timeout_seconds,
        settings.flow_step_attempts,
        queue_state=runtime.broker.queue_state,
    )
    runtime.run_beside(timeouts)
    runtime.metrics.watch_counter(
        "skuflow_flow_steps_resent", "Flow steps this process sent again, unanswered", lambda: timeouts.resent
    )
    runtime.metrics.watch_gauge(
        "skuflow_flow_steps_held",
        "Flow steps past their timeout not sent again, as their owner's queue or the reply queue has a backlog "
        "being worked (at this process's last sweep)",
        lambda: timeouts.held,
    )
    runtime.metrics.watch_counter(
        "skuflow_flow_steps_failed", "Flow steps this process gave up on (their flows failed)", lambda: timeouts.failed
    )
    retention = Retention(runtime)
    runtime.run_beside(
        retention,
        check=("retention", lambda: Check("ok", {"days": settings.retention_days, "deleted": dict(retention.deleted)})),
    )
    backpressure = admission.backpressure(runtime)
    runtime.run_beside(backpressure, check=("backlog", lambda: _backlog_check(backpressure)))
    if settings.warehouse_ftp_url:
        watcher = FeedWatcher(
            runtime, FtpLocation.parse(settings.warehouse_ftp_url), settings.warehouse_ftp_poll_seconds, backpressure
        )
        runtime.run_beside(watcher, check=("warehouse_ftp", lambda: _feed_check(watcher.report())))
    else:
        runtime.reports["warehouse_ftp"] = lambda: Check(
            "ok", {"status": "not configured (SKUFLOW_WAREHOUSE_FTP_URL is unset)"}
        )
    return runtime, backpressure


def build_app(settings: Settings) -> FastAPI:
    runtime, backpressure = _build(settings)
    app = create_app(
        runtime,
        [api.router, flows_api.router],
        title="skuflow inventory",
        description="Stock numbers per warehouse and SKU, and availability for sale.",
    )
    app.state.recorder = Recorder(runtime)  # the stock reports' group commit (POST /v1/stock)
    app.state.backpressure = backpressure  # the bound on the writes (admission.py)
    return app


def _backlog_check(backpressure: Backpressure) -> Check:
    """A backlog at its bound refuses writes, yet the service stays ready (readiness is its database and broker)."""
    return Check("degraded" if backpressure.saturated() else "ok", backpressure.report())


def _feed_check(report: dict[str, Any]) -> Check:
    """A feed that cannot reach or list its server imports nothing new, yet the service stays ready."""
    return Check("ok" if report["status"] == "ok" else "degraded", report)
