"""Wiring: inventory's database, runtime, routing table and HTTP app."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from skuflow.inventory import api, flows_api
from skuflow.inventory.db import outbox
from skuflow.inventory.feed.watcher import FeedWatcher
from skuflow.inventory.messages import RECALCULATE_SKU, SKU_PROCESSED, RecalculateSku, SkuProcessed
from skuflow.inventory.orchestration import STEP_FINISHED, StepTimeouts, on_step_finished
from skuflow.inventory.recalculation import recalculate_availability, recalculate_for_flow
from skuflow.inventory.retention import Retention
from skuflow.messaging import FLOW_REPLIES, Subscription
from skuflow.platform.db import Database
from skuflow.platform.flows import StepFinished
from skuflow.platform.ftp import FtpLocation
from skuflow.platform.runtime import Check, ServiceRuntime
from skuflow.platform.settings import Settings
from skuflow.platform.web import create_app

MIGRATIONS = Path(__file__).parent / "migrations"


def build_runtime(settings: Settings) -> ServiceRuntime:
    db = Database(settings.database_url("inventory"), MIGRATIONS)
    runtime = ServiceRuntime("inventory", settings, db, outbox_table=outbox)
    # What inventory listens to, in one place.
    runtime.subscribe(
        [
            Subscription(
                "inventory.sku_processed", SKU_PROCESSED, SkuProcessed, partial(recalculate_availability, runtime)
            ),
            Subscription(
                "inventory.recalculate_sku", RECALCULATE_SKU, RecalculateSku, partial(recalculate_for_flow, runtime)
            ),
            Subscription(FLOW_REPLIES, STEP_FINISHED, StepFinished, partial(on_step_finished, runtime)),
        ]
    )
    timeouts = StepTimeouts(runtime)  # in both modes: flows begun before a switch still end
    runtime.run_beside(timeouts)
    runtime.metrics.watch_gauge(
        "skuflow_flow_steps_resent", "Flow steps this process sent again, unanswered", lambda: timeouts.resent
    )
    runtime.metrics.watch_gauge(
        "skuflow_flow_steps_failed", "Flow steps this process gave up on (their flows failed)", lambda: timeouts.failed
    )
    retention = Retention(runtime)
    runtime.run_beside(
        retention,
        check=("retention", lambda: Check("ok", {"days": settings.retention_days, "deleted": dict(retention.deleted)})),
    )
    if settings.warehouse_ftp_url:
        watcher = FeedWatcher(
            runtime, FtpLocation.parse(settings.warehouse_ftp_url), settings.warehouse_ftp_poll_seconds
        )
        runtime.run_beside(watcher, check=("warehouse_ftp", lambda: _feed_check(watcher.report())))
    else:
        runtime.reports["warehouse_ftp"] = lambda: Check(
            "ok", {"status": "not configured (SKUFLOW_WAREHOUSE_FTP_URL is unset)"}
        )
    return runtime


def build_app(settings: Settings) -> FastAPI:
    return create_app(
        build_runtime(settings),
        [api.router, flows_api.router],
        title="skuflow inventory",
        description="Stock numbers per warehouse and SKU, and availability for sale.",
    )


def _feed_check(report: dict[str, Any]) -> Check:
    """A feed that cannot reach or list its server imports nothing new, yet the service stays ready."""
    return Check("ok" if report["status"] == "ok" else "degraded", report)
