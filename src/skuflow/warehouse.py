"""The warehouse's side: reporting numbers to inventory over HTTP, or uploading a file to its FTP server,
as the warehouse would."""

from __future__ import annotations

import posixpath
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from skuflow.embedded.ftp import embedded_location
from skuflow.platform.ftp import FtpError, FtpLocation, connect
from skuflow.platform.secrets import embedded_ftp_password, secrets_file
from skuflow.platform.settings import Settings
from skuflow.service_client import ServiceError, connected


class WarehouseError(ServiceError):
    """The report or the upload did not go through; the message says why."""


async def push(settings: Settings, warehouse_id: str, sku: str, on_hand: int, as_of: datetime | None) -> dict[str, Any]:
    report: dict[str, Any] = {"warehouse_id": warehouse_id, "items": [{"sku": sku, "on_hand": on_hand}]}
    if as_of is not None:
        report["as_of"] = as_of.isoformat()
    async with connected(settings) as client:
        return await client.call("POST", "inventory", "/v1/stock", as_client="warehouse", json=report)


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
