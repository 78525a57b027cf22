"""Wiring: catalog's database, runtime, routing table and HTTP app."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from skuflow.catalog import api
from skuflow.catalog.consumers import CatalogConsumers
from skuflow.catalog.db import outbox
from skuflow.catalog.messages import SkuProcessed, UpdateSkuAvailability
from skuflow.catalog.reconcile import reconciliation
from skuflow.messaging import routes
from skuflow.platform.availability import InventoryAvailability
from skuflow.platform.db import Database
from skuflow.platform.flows import StepReplies
from skuflow.platform.runtime import ServiceRuntime
from skuflow.platform.settings import Settings
from skuflow.platform.web import create_app

MIGRATIONS = Path(__file__).parent / "migrations"


def build_runtime(settings: Settings) -> ServiceRuntime:
    db = Database(settings.database_url("catalog"), MIGRATIONS)
    # Verifies the tokens it receives by asking users, like inventory.
    runtime = ServiceRuntime("catalog", settings, db, outbox_table=outbox)
    inventory = InventoryAvailability(settings.inventory_url, lambda: runtime.http)
    consumers = CatalogConsumers(db, inventory, StepReplies("catalog", runtime.broker.publish_many))
    runtime.subscribe(
        [
            routes.CATALOG_SKU_PROCESSED.bind(SkuProcessed, consumers.mark_availability),
            routes.CATALOG_UPDATE_SKU_AVAILABILITY.bind(UpdateSkuAvailability, consumers.update_availability),
        ]
    )
    runtime.reconcile_with(reconciliation(db, timedelta(seconds=settings.reconcile_seconds), inventory))
    return runtime


def build_app(settings: Settings) -> FastAPI:
    return create_app(
        build_runtime(settings),
        [api.router],
        title="skuflow catalog",
        description="Products (name, price) and whether each is available, as inventory last said.",
    )
