"""Wiring: catalog's database, runtime, routing table and HTTP app."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from fastapi import FastAPI

from skuflow.catalog import api
from skuflow.catalog.availability import mark_sku_availability, update_sku_availability
from skuflow.catalog.db import outbox
from skuflow.catalog.messages import SKU_PROCESSED, UPDATE_SKU_AVAILABILITY, SkuProcessed, UpdateSkuAvailability
from skuflow.catalog.reconcile import reconciliation
from skuflow.messaging import Subscription
from skuflow.platform.db import Database
from skuflow.platform.runtime import ServiceRuntime
from skuflow.platform.settings import Settings
from skuflow.platform.web import create_app

MIGRATIONS = Path(__file__).parent / "migrations"


def build_runtime(settings: Settings) -> ServiceRuntime:
    db = Database(settings.database_url("catalog"), MIGRATIONS)
    # Verifies the tokens it receives by asking users, like inventory.
    runtime = ServiceRuntime("catalog", settings, db, outbox_table=outbox)
    # What catalog listens to, in one place.
    runtime.subscribe(
        [
            Subscription("catalog.sku_processed", SKU_PROCESSED, SkuProcessed, partial(mark_sku_availability, runtime)),
            Subscription(
                "catalog.update_sku_availability",
                UPDATE_SKU_AVAILABILITY,
                UpdateSkuAvailability,
                partial(update_sku_availability, runtime),
            ),
        ]
    )
    runtime.reconcile_with(reconciliation(runtime))
    return runtime


def build_app(settings: Settings) -> FastAPI:
    return create_app(
        build_runtime(settings),
        [api.router],
        title="skuflow catalog",
        description="Products (name, price) and whether each is available, as inventory last said.",
    )
