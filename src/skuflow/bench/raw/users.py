"""Users, the obvious way: on `sku_processed`, ask inventory, mark the wishlist rows, and email each user whose
wished SKU became available (the product's name from catalog; a new SMTP connection per email, as
`aiosmtplib.send` makes), recording each email sent."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib
from aiohttp import web

from skuflow.bench.raw.common import POOL, SETTINGS, Bus, aio_pika_bus, application, get_json
from skuflow.bench.raw.settings import Settings

QUEUE = "users.sku_processed"
SENDER = "shop@example.com"
SCHEMA = """
CREATE TABLE IF NOT EXISTS users (id text PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL);
CREATE TABLE IF NOT EXISTS wishlist_items (
    user_id text NOT NULL REFERENCES users (id), sku text NOT NULL, available boolean NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, sku));
CREATE INDEX IF NOT EXISTS ix_wishlist_items_sku ON wishlist_items (sku);
CREATE TABLE IF NOT EXISTS sent_emails (
    id bigserial PRIMARY KEY, user_id text NOT NULL, sku text NOT NULL, email text NOT NULL, subject text NOT NULL,
    sent_at timestamptz NOT NULL);
"""
# The rows that change; those that became available are the emails due.
MARK = """
UPDATE wishlist_items AS w SET available = $2 FROM users AS u
WHERE w.sku = $1 AND w.available <> $2 AND u.id = w.user_id
RETURNING u.id, u.email
"""
RECORD = "INSERT INTO sent_emails (user_id, sku, email, subject, sent_at) VALUES ($1, $2, $3, $4, now())"


def app(settings: Settings, bus: Bus = aio_pika_bus) -> web.Application:
    return application(settings, SCHEMA, bus, (QUEUE, on_sku_processed))


async def on_sku_processed(app: web.Application, sku: str) -> None:
    settings = app[SETTINGS]
    answer = await get_json(app, f"{settings.inventory_url}/v1/skus/{sku}/availability")
    wishers = await app[POOL].fetch(MARK, sku, answer["available"])
    if not answer["available"] or not wishers:
        return
    product = await get_json(app, f"{settings.catalog_url}/v1/products/{sku}")
    subject = f"{product['name']} is available again"
    for wisher in wishers:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = SENDER, wisher["email"], subject
        message.set_content(f"{product['name']} ({sku}) is on your wishlist and available again.")
        await aiosmtplib.send(message, hostname=settings.smtp_host, port=settings.smtp_port)
        await app[POOL].execute(RECORD, wisher["id"], sku, wisher["email"], subject)
