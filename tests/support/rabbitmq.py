"""The real RabbitMQ the tests talk to, with a fresh virtual host per test (management HTTP API)."""

from __future__ import annotations

import base64
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_API_URL = "http://127.0.0.1:15672"


@dataclass(frozen=True)
class RabbitMQ:
    amqp_url: str
    api_url: str

    @classmethod
    def from_env(cls) -> RabbitMQ:
        return cls(
            os.environ.get("SKUFLOW_TEST_AMQP_URL", DEFAULT_AMQP_URL),
            os.environ.get("SKUFLOW_TEST_RABBITMQ_API", DEFAULT_API_URL).rstrip("/"),
        )

    @property
    def _parts(self) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self.amqp_url)

    @property
    def is_local(self) -> bool:
        return self._parts.hostname in ("127.0.0.1", "localhost", "::1")

    def problem(self) -> str | None:
        """Why the broker cannot be used, or None when both AMQP and the management API answer."""
        host, port = self._parts.hostname or "127.0.0.1", self._parts.port or 5672
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError as error:
            return f"RabbitMQ is not reachable at {host}:{port} ({error}); scripts/test.sh provisions one"
        try:
            self._call("GET", "/api/overview")
        except (OSError, urllib.error.URLError) as error:
            return (
                f"the RabbitMQ management API is not reachable at {self.api_url} ({error}); "
                "enable it with `rabbitmq-plugins enable rabbitmq_management`"
            )
        return None

    def create_vhost(self) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        quoted = urllib.parse.quote(name, safe="")
        user = self._parts.username or "guest"
        self._call("PUT", f"/api/vhosts/{quoted}", {})
        self._call("PUT", f"/api/permissions/{quoted}/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
        return name

    def delete_vhost(self, name: str) -> None:
        self._call("DELETE", f"/api/vhosts/{urllib.parse.quote(name, safe='')}")

    def url_for(self, vhost: str) -> str:
        return self._parts._replace(path="/" + urllib.parse.quote(vhost, safe="")).geturl()

    def _call(self, method: str, path: str, body: object | None = None) -> object:
        user = urllib.parse.unquote(self._parts.username or "guest")
        password = urllib.parse.unquote(self._parts.password or "guest")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(
            self.api_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            payload = response.read()
        return json.loads(payload) if payload else None
