"""The clients' secrets when the environment does not set them: generated once by `skuflow up`, kept in
`$SKUFLOW_DATA_DIR/secrets.json` (mode 0600), and read from there by the command line (CONTRACT section 5)."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from pydantic import SecretStr

from skuflow.platform.settings import Settings

FILE_NAME = "secrets.json"
NAMES = ("warehouse_secret", "admin_secret")  # settings, unless the environment sets them
EMBEDDED_FTP_PASSWORD = "embedded_ftp_password"  # the password of `skuflow up`'s own FTP server
STALE_PARTIAL_SECONDS = 10.0  # writing the file takes microseconds: a partial this old was left by a crash


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
    # The data directory holds the secrets and the databases: only its owner may look in it. (Only when
    # created here: an existing directory is left as its owner set it.)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written whole to a 0600 file beside it, then renamed over: never readable by others, never half.
    partial = path.with_suffix(".json.partial")
    with os.fdopen(_create_new(partial), "w") as handle:
        json.dump(stored, handle, indent=2)
    os.replace(partial, path)


def _create_new(partial: Path) -> int:
    """A new file of our own at `partial` (O_EXCL|O_NOFOLLOW): never a file or a symlink someone else put
    there, whose target O_TRUNC would have overwritten with the secrets.

    One already there is another writer's, busy for microseconds, or was left by a crash between creating
    and renaming it: one older than `STALE_PARTIAL_SECONDS` is taken for the latter and removed (a symlink
    itself, never its target), then the file is created once more; a younger one is refused, naming it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(partial, flags, 0o600)
    except FileExistsError:
        try:
            age = time.time() - partial.lstat().st_mtime
        except FileNotFoundError:  # the other writer renamed it in between: the name is free again, once
            return os.open(partial, flags, 0o600)
        if age < STALE_PARTIAL_SECONDS:
            raise FileExistsError(
                f"{partial} exists ({age:.0f} s old): another skuflow is writing the secrets now; try again "
                "(if no other skuflow runs on this data directory, delete the file)"
            ) from None
    partial.unlink(missing_ok=True)
    return os.open(partial, flags, 0o600)
