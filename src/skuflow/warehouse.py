"""The warehouse's side: reporting numbers to inventory over HTTP, or uploading a file to its FTP server,
as the warehouse would."""

from __future__ import annotations

import posixpath
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from skuflow.embedded.ftp import embedded_location
from skuflow.platform.ftp import FtpError, FtpLocation, connect
from skuflow.platform.secrets import embedded_ftp_password, secrets_file
from skuflow.platform.settings import Settings


class WarehouseError(Exception):
    """The report did not go through; the message says why."""


async def push(settings: Settings, warehouse_id: str, sku: str, on_hand: int, as_of: datetime | None) -> dict[str, Any]:
    if settings.warehouse_secret is None:
        raise WarehouseError(
            f"no warehouse secret: SKUFLOW_WAREHOUSE_SECRET is unset and {secrets_file(settings).resolve()} "
            "does not exist (run from the directory where `skuflow up` ran, or set SKUFLOW_DATA_DIR)"
        )
    report: dict[str, Any] = {"warehouse_id": warehouse_id, "items": [{"sku": sku, "on_hand": on_hand}]}
    if as_of is not None:
        report["as_of"] = as_of.isoformat()
    form = {
        "grant_type": "client_credentials",
        "client_id": "warehouse",
        "client_secret": settings.warehouse_secret.get_secret_value(),
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        token = await _call(http, "users", "SKUFLOW_USERS_URL", f"{settings.users_url}/v1/auth/token", data=form)
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        return await _call(
            http,
            "inventory",
            "SKUFLOW_INVENTORY_URL",
            f"{settings.inventory_url}/v1/stock",
            json=report,
            headers=headers,
        )


def ftp_location(settings: Settings) -> FtpLocation:
    """SKUFLOW_WAREHOUSE_FTP_URL, else the FTP server of the `skuflow up` whose data directory this is."""
    if settings.warehouse_ftp_url is not None:
        return FtpLocation.parse(settings.warehouse_ftp_url)
    password = embedded_ftp_password(settings, generate=False)
    if password is None:
        raise WarehouseError(
            f"no FTP server: SKUFLOW_WAREHOUSE_FTP_URL is unset and {secrets_file(settings).resolve()} does not "
            "exist (run from the directory where `skuflow up` ran, or set SKUFLOW_DATA_DIR)"
        )
    return embedded_location(password)


async def upload(location: FtpLocation, file: Path) -> str:
    """Put `file` where inventory's watcher looks: into the folder under its own name, or over the
    snapshot file. It is sent under a hidden temporary name and then renamed, so the watcher never sees
    half a file. Answers the path it now has on the server."""
    if not file.is_file():  # noqa: ASYNC240 (one stat, before any network work)
        raise WarehouseError(f"{file}: no such file")
    if location.is_snapshot:
        target = location.path
    elif file.suffix.lower() != ".csv":
        raise WarehouseError(f"{file}: the watcher takes only files named *.csv")
    else:
        target = posixpath.join(location.path, file.name)
    name = posixpath.basename(target)
    temporary = posixpath.join(location.folder, f".{name}.{secrets.token_hex(4)}.part")
    try:
        async with connect(location) as ftp:
            if not location.is_snapshot and any(f.name == name for f in await ftp.list_files(location.folder)):
                raise WarehouseError(
                    f"{location.redacted(target)} is still waiting to be taken: a delivery does not replace "
                    "another; upload under a new name, or wait until it is in processed/"
                )
            await ftp.upload(file, temporary)
            try:
                await ftp.rename(temporary, target)
            except FtpError:  # some servers will not rename over an existing file (a snapshot's)
                await ftp.delete(target)
                await ftp.rename(temporary, target)
    except FtpError as error:
        raise WarehouseError(str(error)) from None
    return target


async def _call(http: aiohttp.ClientSession, service: str, setting: str, url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        async with http.post(url, **kwargs) as response:
            body = await response.json(content_type=None)
            status = response.status
    except aiohttp.ClientConnectionError as error:
        reason = error.os_error.strerror if isinstance(error, aiohttp.ClientConnectorError) else str(error)
        raise WarehouseError(
            f"cannot reach {service} at {url.split('/v1/')[0]} ({setting}): {reason}; is `skuflow up` running?"
        ) from None
    if status >= 400:
        raise WarehouseError(f"{service} refused the request ({status}): {_explain(body)}")
    return dict(body)


def _explain(body: Any) -> str:
    """An error body as one readable line: `items[0].on_hand: Input should be ... (got -5)`."""
    detail = body.get("detail", body.get("error_description", body)) if isinstance(body, dict) else body
    if not isinstance(detail, list):
        return str(detail)
    lines = []
    for problem in detail:
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in problem.get("loc", [])[1:])
        got = f" (got {problem['input']!r})" if "input" in problem else ""
        lines.append(f"{where.lstrip('.') or 'body'}: {problem.get('msg')}{got}")
    return "; ".join(lines)
