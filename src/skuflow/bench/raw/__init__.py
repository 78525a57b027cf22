"""The choreography flow written the obvious way on the raw building blocks (aiohttp, aio-pika, asyncpg,
aiosmtplib), with no skuflow layer: the baseline `skuflow bench e2e --system raw` measures skuflow against.

Three small aiohttp apps, one process each (`python -m skuflow.bench.raw inventory|catalog|users`, settings
from RAW_* variables, see `settings`). Inventory's `POST /v1/stock` writes the stock rows and the SKU's totals
in one transaction, then publishes a persistent `{"sku": ...}` to the fanout exchange `sku_processed` (publisher
confirms on, aio-pika's default). Catalog and users each consume a durable queue bound to it (manual ack, a
prefetch), ask inventory `GET /v1/skus/{sku}/availability`, and write: catalog the product's `available`; users
the wishlist rows and, for each user whose wished SKU became available, one email (`aiosmtplib.send`: a new
SMTP connection per email) and a `sent_emails` row.

What it leaves out, on purpose (skuflow's guarantees, whose cost the comparison shows): no transactional outbox (a
crash between commit and publish loses the event), no idempotent consumers or idempotency keys (a redelivery sends
the emails again), no retries, delays or dead letters (a failed handler's message is rejected and dropped), no OAuth
(one fixed bearer token on `POST /v1/stock`), no metrics, correlation ids or structured logs, no request validation
beyond what a KeyError gives, no graceful drain beyond aiohttp's own, no reconnection handling beyond
`connect_robust`. Choreography only: no orchestration and no FTP feed.

This package must not import the rest of skuflow (an import-linter contract holds it to that).
"""
