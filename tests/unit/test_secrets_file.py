"""Where the generated secrets live (issue 14, defect 10): a data directory only its owner can open, and
`secrets.json` written through a partial file of our own (O_EXCL|O_NOFOLLOW), never through one that
someone planted, and never stuck behind one that a crash left."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from skuflow.platform import secrets
from skuflow.platform.db import Database
from skuflow.platform.settings import Settings
from skuflow.users.service import MIGRATIONS


def settings_in(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_directory_is_created_for_its_owner_alone_and_the_secrets_0600(tmp_path: Path):
    data_dir = tmp_path / "var"

    _, generated = secrets.with_secrets(settings_in(data_dir), generate=True)

    assert generated == ["warehouse_secret", "admin_secret"]
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "secrets.json") == 0o600
    assert not (data_dir / "secrets.json.partial").exists()


async def test_a_database_creates_the_directory_of_its_sqlite_file_for_its_owner_alone(tmp_path: Path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'var' / 'users.db'}", MIGRATIONS)
    try:
        await db.migrate()
    finally:
        await db.close()
    assert mode(tmp_path / "var") == 0o700


def test_a_symlink_planted_as_the_partial_file_is_never_written_through(tmp_path: Path):
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours\n")
    (data_dir / "secrets.json.partial").symlink_to(victim)

    with pytest.raises(FileExistsError, match=r"secrets\.json\.partial exists"):
        secrets.with_secrets(settings_in(data_dir), generate=True)

    assert victim.read_text() == "not yours\n", "the secrets were written into the symlink's target"
    assert not (data_dir / "secrets.json").exists()


def test_a_partial_file_left_by_a_crash_is_replaced(tmp_path: Path):
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    stale = data_dir / "secrets.json.partial"
    stale.write_text('{"warehouse_secret": "half')
    long_ago = time.time() - 3600
    os.utime(stale, (long_ago, long_ago))

    updated, generated = secrets.with_secrets(settings_in(data_dir), generate=True)

    assert generated == ["warehouse_secret", "admin_secret"]
    stored = json.loads((data_dir / "secrets.json").read_text())
    assert updated.warehouse_secret is not None
    assert stored["warehouse_secret"] == updated.warehouse_secret.get_secret_value()
    assert not stale.exists()


def test_an_old_planted_symlink_is_removed_itself_not_its_target(tmp_path: Path):
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours\n")
    link = data_dir / "secrets.json.partial"
    link.symlink_to(victim)
    long_ago = time.time() - 3600
    os.utime(link, (long_ago, long_ago), follow_symlinks=False)

    secrets.with_secrets(settings_in(data_dir), generate=True)

    assert victim.read_text() == "not yours\n"
    assert json.loads((data_dir / "secrets.json").read_text())["admin_secret"]
