"""An FTP client for asyncio: the standard library's `ftplib`, each blocking call in a worker thread.

Why not an asyncio-native client (aioftp): the watcher sends a handful of commands per poll and streams a
download to a local file; neither is a hot path where native asyncio would show, and ftplib is the most
widely exercised FTP client in Python, against the most servers. The figures behind the choice are in the
README. A `FtpConnection` is used by one task at a time (calls are sequential), never shared.

Every failure becomes a `FtpError` whose message says what went wrong in words an operator can act on
(server down, login refused, folder missing), never with the password in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ftplib
import hashlib
import posixpath
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

T = TypeVar("T")

TIMEOUT = 15.0  # seconds for connecting and for each command or read
BLOCK = 1024 * 1024  # 1 MiB reads: ~620 MiB/s on loopback, against ~480 with 64 KiB (README)


class FtpError(Exception):
    """The FTP server could not be reached or refused what was asked; the message says which."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code  # the server's reply code when it refused (e.g. "550"), else None


class FtpFileTooLarge(FtpError):
    """A download passed its byte limit and was stopped there; the connection is still usable."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message, "552")  # the reply code FTP itself has for "exceeded storage allocation"
        self.limit = limit


class _LimitPassed(Exception):
    """Raised from within a download's callback to stop reading."""


@dataclass(frozen=True)
class FtpLocation:
    """Where the warehouse's files are: `ftp://user:password@host:port/path`.

    `path` is a folder of deliveries, or (ending in `.csv`) one snapshot file (CONTRACT section 4)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    path: str = "/"

    @classmethod
    def parse(cls, url: str) -> FtpLocation:
        parts = urlsplit(url)
        if parts.scheme != "ftp":
            raise ValueError("must be ftp://user:password@host:port/path")
        if not parts.hostname:
            raise ValueError("names no host (ftp://user:password@host:port/path)")
        try:
            port = parts.port or 21
        except ValueError:
            raise ValueError("has a port that is not a number from 1 to 65535") from None
        path = unquote(parts.path) or "/"
        normalized = posixpath.normpath(path)
        if not path.startswith("/") or ".." in path.split("/"):
            raise ValueError("must have an absolute path without '..'")
        user, password = unquote(parts.username or "anonymous"), unquote(parts.password or "")
        return cls(parts.hostname, port, user, password, normalized)

    @property
    def is_snapshot(self) -> bool:
        """A path ending in `.csv` is one snapshot file; any other path is a folder of deliveries."""
        return self.path.lower().endswith(".csv")

    @property
    def folder(self) -> str:
        """The folder that holds the deliveries, or the snapshot file."""
        return posixpath.dirname(self.path) if self.is_snapshot else self.path

    def redacted(self, path: str | None = None) -> str:
        """The URL (or that of another `path` on the server) without its password, for logs and pages."""
        return f"ftp://{self.user}@{self.host}:{self.port}{self.path if path is None else path}"

    def at(self, path: str) -> FtpLocation:
        return replace(self, path=path)

    def url(self) -> str:
        return f"ftp://{self.user}:{self.password}@{self.host}:{self.port}{self.path}"


@dataclass(frozen=True, slots=True)
class RemoteFile:
    name: str
    size: int
    modified: str  # the server's modification time, compared as given (YYYYMMDDHHMMSS[.sss])


class FtpConnection:
    """One logged-in control connection. Use `connect()`; each method runs its commands in a thread."""

    def __init__(self, location: FtpLocation, ftp: ftplib.FTP) -> None:
        self.location = location
        self._ftp = ftp

    async def list_files(self, folder: str) -> list[RemoteFile]:
        """The regular files in `folder`, with size and modification time (MLSD)."""
        try:
            return await self._call(f"list folder {folder}", self._list_files, folder)
        except FtpError as error:
            if error.code in ("550", "501"):  # pyftpdlib answers MLSD of a missing folder with 501
                raise FtpError(f"{self.location.redacted()}: folder {folder} does not exist", error.code) from None
            raise

    async def download(self, path: str, target: Path, max_bytes: int | None = None) -> str:
        """Copy the remote file to `target`, streaming; answer the SHA-256 of its content (hex). With
        `max_bytes`, a file longer than that raises `FtpFileTooLarge` once that many bytes came, not later."""
        try:
            return await self._call(f"download {path}", self._download, path, target, max_bytes)
        except _LimitPassed:
            message = f"{self.location.redacted(path)} is over the {max_bytes:,}-byte limit: download stopped there"
            raise FtpFileTooLarge(message, max_bytes or 0) from None

    async def upload(self, source: Path, path: str) -> None:
        await self._call(f"upload {path}", self._upload, source, path)

    async def rename(self, source: str, target: str) -> None:
        await self._call(f"rename {source} to {target}", self._ftp.rename, source, target)

    async def delete(self, path: str) -> None:
        await self._call(f"delete {path}", self._ftp.delete, path)

    async def ensure_folder(self, folder: str) -> None:
        """Create `folder` unless it exists."""
        await self._call(f"create folder {folder}", self._ensure_folder, folder)

    async def close(self) -> None:
        await asyncio.to_thread(self._quit)

    def _list_files(self, folder: str) -> list[RemoteFile]:
        files = []
        for name, facts in self._ftp.mlsd(folder, facts=["type", "size", "modify"]):
            if facts.get("type", "file").lower() != "file":
                continue
            if "size" not in facts or "modify" not in facts:
                # Without them a growing file cannot be told from a finished one: refuse rather than guess.
                raise ftplib.error_perm(f"504 the server's MLSD listing gives no size or modify fact for {name}")
            files.append(RemoteFile(name, int(facts["size"]), facts["modify"]))
        return files

    def _download(self, path: str, target: Path, max_bytes: int | None) -> str:
        digest = hashlib.sha256()
        room = max_bytes
        with target.open("wb") as sink:

            def write(block: bytes) -> None:
                nonlocal room
                if room is not None:
                    room -= len(block)
                    if room < 0:
                        raise _LimitPassed
                digest.update(block)
                sink.write(block)

            try:
                self._ftp.retrbinary(f"RETR {path}", write, blocksize=BLOCK)
            except _LimitPassed:
                self._end_stopped_transfer()
                raise
        return digest.hexdigest()

    def _end_stopped_transfer(self) -> None:
        """The data connection is closed mid-file: read the server's one reply to the RETR (426, or 226 if
        it had sent everything already) so that the next command's reply is its own. A server that sends no
        reply (the read times out) leaves the control connection out of step: it is closed, so that the next
        command fails and the watcher connects afresh; the limit's error is raised all the same."""
        with contextlib.suppress(ftplib.error_temp, ftplib.error_perm, ftplib.error_reply):
            try:
                self._ftp.voidresp()
            except (OSError, EOFError):
                self._ftp.close()

    def _upload(self, source: Path, path: str) -> None:
        with source.open("rb") as data:
            self._ftp.storbinary(f"STOR {path}", data, blocksize=BLOCK)

    def _ensure_folder(self, folder: str) -> None:
        try:
            self._ftp.mkd(folder)
        except ftplib.error_perm:
            here = self._ftp.pwd()
            self._ftp.cwd(folder)  # it exists (or this raises: it cannot be created)
            self._ftp.cwd(here)

    def _quit(self) -> None:
        try:
            self._ftp.quit()
        except (OSError, EOFError, ftplib.Error):
            self._ftp.close()

    async def _call(self, what: str, function: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(function, *args)
        except ftplib.error_perm as error:
            message = f"{self.location.redacted()}: cannot {what}: the server answered {error}"
            raise FtpError(message, str(error)[:3]) from None
        except (OSError, EOFError, ftplib.Error) as error:
            raise FtpError(f"{self.location.redacted()}: cannot {what}: {_describe(error)}") from None


@contextlib.asynccontextmanager
async def connect(location: FtpLocation) -> AsyncIterator[FtpConnection]:
    """A logged-in connection for the block; closed at its end, whatever happens. Every command and read
    is bounded by `TIMEOUT` (a cancelled task cannot stop a thread blocked on a socket; the timeout can)."""
    ftp = await asyncio.to_thread(_login, location, TIMEOUT)
    connection = FtpConnection(location, ftp)
    try:
        yield connection
    finally:
        await connection.close()


def _login(location: FtpLocation, timeout: float) -> ftplib.FTP:
    where = f"{location.redacted()}:"
    ftp = ftplib.FTP(timeout=timeout)
    try:
        ftp.connect(location.host, location.port)
    except (OSError, EOFError, ftplib.Error) as error:
        raise FtpError(f"{where} cannot connect to {location.host}:{location.port}: {_describe(error)}") from None
    try:
        ftp.login(location.user, location.password)
    except ftplib.error_perm as error:
        ftp.close()
        raise FtpError(f"{where} login refused for user {location.user!r}: {error}") from None
    except (OSError, EOFError, ftplib.Error) as error:
        ftp.close()
        raise FtpError(f"{where} login failed: {_describe(error)}") from None
    ftp.set_pasv(True)
    return ftp


def _describe(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the FTP server running?)"
    if isinstance(error, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(error, EOFError):
        return "the server closed the connection"
    return str(error) or type(error).__name__
