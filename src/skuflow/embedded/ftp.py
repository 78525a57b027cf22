"""An FTP server standing in for the warehouse's (pyftpdlib), for `skuflow up`, the tests and the benchmark.

pyftpdlib runs its own event loop; it gets a thread of its own, so it never competes with the services'
asyncio loop for turns. One user, with every permission, whose home is `root`; deliveries go to
`root/outbox` (CONTRACT section 5: `/outbox`).
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

from skuflow.platform.ftp import FtpLocation

FOLDER = "outbox"
USER = "warehouse"
ADDRESS = ("127.0.0.1", 2121)  # `skuflow up`'s (CONTRACT section 5)
PERMISSIONS = "elradfmwMT"  # list, read, append, delete, rename, write, mkdir... everything

logging.getLogger("pyftpdlib").setLevel(logging.WARNING)  # otherwise a log line per command


class FtpServer:
    def __init__(self, root: Path, user: str, password: str) -> None:
        self.root = root
        self.user = user
        self.password = password
        (root / FOLDER).mkdir(parents=True, exist_ok=True)
        self.authorizer = DummyAuthorizer()  # tests change permissions on it to inject faults
        self.authorizer.add_user(user, password, str(root), perm=PERMISSIONS)
        self.host = "127.0.0.1"
        self.port = 0
        self._server: FTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None) -> None:
        """Listen on `host:port` (0: a free port) or on a bound socket; raises OSError if it is taken."""
        handler = type(
            "SkuflowFtpHandler",
            (FTPHandler,),
            {"authorizer": self.authorizer, "banner": "skuflow embedded FTP server", "permit_foreign_addresses": False},
        )
        self._server = FTPServer(sock if sock is not None else (host, port), handler)
        self.host, self.port = self._server.address[:2]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="embedded FTP server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._server is not None
        try:
            while not self._stopping.is_set():
                self._server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        finally:
            self._server.close_all()

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(timeout=10)
            self._thread = None

    def location(self, path: str = f"/{FOLDER}") -> FtpLocation:
        return FtpLocation(self.host, self.port, self.user, self.password, path)

    def url(self, path: str = f"/{FOLDER}") -> str:
        return self.location(path).url()


def embedded_location(password: str) -> FtpLocation:
    """Where `skuflow up`'s FTP server takes deliveries."""
    return FtpLocation(*ADDRESS, USER, password, f"/{FOLDER}")
