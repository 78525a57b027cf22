"""What the command-line tests share: a system of their own, on free ports."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    """Settings for a system of our own: its data directory and free ports."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SKUFLOW_")}
    return env | {
        "SKUFLOW_DATA_DIR": str(tmp_path / "var"),
        "SKUFLOW_INVENTORY_URL": f"http://127.0.0.1:{free_port()}",
        "SKUFLOW_USERS_URL": f"http://127.0.0.1:{free_port()}",
        "SKUFLOW_CATALOG_URL": f"http://127.0.0.1:{free_port()}",
        "SKUFLOW_USERS_GRPC": f"127.0.0.1:{free_port()}",
        "COLUMNS": "200",
    }


@pytest.fixture
def fixed_ports() -> Iterator[None]:
    """Hold, across the suite's workers (pytest-xdist), the right to `skuflow up`'s fixed FTP and SMTP ports
    (2121, 2525): one test at a time starts an embedded system."""
    with open(Path(tempfile.gettempdir()) / "skuflow-tests-fixed-ports.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
