"""The clients' secrets when the environment does not set them: generated once by `skuflow up`, kept in
`$SKUFLOW_DATA_DIR/secrets.json` (mode 0600), and read from there by the command line (CONTRACT section 5)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from skuflow.platform.settings import Settings

FILE_NAME = "secrets.json"
NAMES = ("warehouse_secret", "admin_secret")  # settings, unless the environment sets them
EMBEDDED_FTP_PASSWORD = "embedded_ftp_password"  # the password of `skuflow up`'s own FTP server


def secrets_file(settings: Settings) -> Path:
    return settings.data_dir / FILE_NAME


def stored_secrets(settings: Settings) -> dict[str, str]:
    path = secrets_file(settings)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise OSError(f"cannot read {path}: {error}") from None
    names = (*NAMES, EMBEDDED_FTP_PASSWORD)
    return {name: str(data[name]) for name in names if isinstance(data, dict) and data.get(name)}


def with_secrets(settings: Settings, *, generate: bool) -> tuple[Settings, list[str]]:
    """Settings whose unset secrets come from the data directory (generated there first if `generate`).

    Returns the settings and the names of the secrets generated just now (to print them once)."""
    stored = stored_secrets(settings)
    generated: list[str] = []
    values: dict[str, SecretStr] = {}
    for name in NAMES:
        if getattr(settings, name) is not None:
            continue
        if name not in stored and generate:
            stored[name] = secrets.token_urlsafe(24)
            generated.append(name)
        if name in stored:
            values[name] = SecretStr(stored[name])
    if generated:
        _store(settings, stored)
    return settings.model_copy(update=values), generated


def embedded_ftp_password(settings: Settings, *, generate: bool) -> str | None:
    """The password of the embedded FTP server's user, kept beside the clients' secrets."""
    stored = stored_secrets(settings)
    if EMBEDDED_FTP_PASSWORD not in stored and generate:
        stored[EMBEDDED_FTP_PASSWORD] = secrets.token_urlsafe(18)
        _store(settings, stored)
    return stored.get(EMBEDDED_FTP_PASSWORD)


def _store(settings: Settings, stored: dict[str, str]) -> None:
    path = secrets_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole to a 0600 file beside it, then renamed over: never readable by others, never half.
    partial = path.with_suffix(".json.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(stored, handle, indent=2)
    os.replace(partial, path)
