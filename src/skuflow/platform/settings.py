"""Configuration from `SKUFLOW_*` environment variables, a `.env` file or a TOML file (CONTRACT section 5).

Precedence: environment variables, then `.env`, then the TOML file named by `SKUFLOW_CONFIG` (lower-case
names without the prefix), then the defaults. A bad value stops start-up with a message naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from skuflow.messaging import BrokerOptions
from skuflow.platform.event_loop import EventLoop
from skuflow.platform.ftp import FtpLocation
from skuflow.platform.redaction import without_password as without_password  # shown by the settings too
from skuflow.platform.smtp import SmtpTarget

PREFIX = "SKUFLOW_"


MIN_LOCAL_CACHE_SECONDS = 1.0  # the `local` transport pulls revocations within this, so not less


class SettingsError(Exception):
    """A configuration value is unusable; the message names the variable and the problem."""


Mode = Literal["choreography", "orchestration"]  # the coordination style (CONTRACT section 1)


def host_and_port(address: str) -> tuple[str, int]:
    """The host and port of `host:port` (`[::1]:50051` for an IPv6 address, its brackets dropped), as gRPC takes
    an address to listen on or dial; ValueError naming what is wrong."""
    host, _, port = address.rpartition(":")
    if not host.strip("[]") or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be host:port, e.g. 127.0.0.1:50051 (the port 1-65535)")
    if any(char.isspace() or not char.isprintable() for char in host):
        raise ValueError("the host holds a space or a control character")
    return host.strip("[]"), int(port)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", extra="ignore", frozen=True)

    broker_url: str = "memory://"
    mode: Mode = "choreography"
    data_dir: Path = Path("./var")
    retry_delays: Annotated[tuple[float, ...], NoDecode] = (1, 5, 30, 120, 600)
    prefetch: int = Field(32, ge=1, le=65535)
    shutdown_grace_seconds: float = Field(30, ge=0)
    # The services' event loop (an addition of ours): uvloop (libuv) or asyncio's own.
    event_loop: EventLoop = "uvloop"
    # How `skuflow up` and `serve` log (platform/logging.py): `auto` is text on a terminal, JSON otherwise.
    log_format: Literal["auto", "text", "json"] = "auto"

    # Each service's own database; unset means SQLite under the data directory.
    inventory_database_url: str | None = None
    catalog_database_url: str | None = None
    users_database_url: str | None = None

    inventory_url: str = "http://127.0.0.1:8001"
    catalog_url: str = "http://127.0.0.1:8002"
    users_url: str = "http://127.0.0.1:8003"
    users_grpc: str = "127.0.0.1:50051"
    # TLS for the gRPC fast path, an option (plain HTTP/2 by default, for loopback or a private network):
    # users serves TLS with this certificate and key (PEM files, both or neither); inventory and catalog
    # connect with TLS, trusting the CA certificates in this file (PEM), when it is set.
    users_grpc_cert: Path | None = None
    users_grpc_key: Path | None = Field(None, validate_default=True)  # checked against the certificate
    users_grpc_ca: Path | None = None

    smtp_url: str | None = None
    # An extension of ours (docs/contract.md): the SMTP connections a users process sends on at once. At most
    # one per email of a pass (50).
    smtp_connections: int = Field(4, ge=1, le=50)
    warehouse_ftp_url: str | None = None
    warehouse_ftp_poll_seconds: float = Field(5, gt=0)
    # A bigger file is rejected unread. At most 2^31 - 1: a file's line numbers, staged in a 32-bit column,
    # then always fit.
    warehouse_max_file_bytes: int = Field(1024**3, ge=1, le=2**31 - 1)

    warehouse_secret: SecretStr | None = None
    admin_secret: SecretStr | None = None
    auth_transport: Literal["rest", "grpc", "local"] = "rest"
    auth_cache_seconds: float = Field(30, ge=0)
    token_format: Literal["opaque", "jwt"] = "opaque"  # what users issues; it verifies both
    # Extensions of ours (docs/contract.md): token lifetime, the token endpoint's and sign-up's rate limits.
    token_ttl_seconds: int = Field(3600, ge=1)
    token_attempts_per_minute: int = Field(10, ge=1)
    sign_ups_per_minute: int = Field(20, ge=1)  # per address
    wishlist_max_items: int = Field(500, ge=1)  # per user: bounds the emails one SKU's change can cause
    # The peers whose X-Forwarded-For / X-Forwarded-Proto are believed (comma-separated addresses or
    # networks, `*` for any); none by default, so a client cannot choose the address it is counted by.
    forwarded_allow_ips: Annotated[tuple[str, ...], NoDecode] = ()

    flow_step_timeout_seconds: float = Field(10, gt=0)
    flow_step_attempts: int = Field(5, ge=1)
    reconcile_seconds: float = Field(300, gt=0)
    # How often /metrics' readings that need the database or the broker are taken (backlogs, queue depths).
    metrics_refresh_seconds: float = Field(5, gt=0)
    retention_days: float = Field(30, gt=0)
    low_stock_threshold: int = Field(5, ge=0)
    # An extension of ours (docs/contract.md): inventory takes no more writes while this many outbox messages
    # wait to be published (in orchestration, or flows run); 0: no bound. At most 10^9: a count stops at twice it.
    max_backlog: int = Field(10_000, ge=0, le=1_000_000_000)

    @field_validator("inventory_database_url", "catalog_database_url", "users_database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with postgresql+asyncpg:// or sqlite+aiosqlite://")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        if value is not None:
            SmtpTarget.parse(value)  # raises ValueError naming the problem
        return value

    @field_validator("warehouse_ftp_url")
    @classmethod
    def _ftp_url(cls, value: str | None) -> str | None:
        if value is not None:
            FtpLocation.parse(value)  # raises ValueError naming the problem
        return value

    @field_validator("inventory_url", "catalog_url", "users_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    def database_url(self, service: str) -> str:
        """The service's database URL: the configured one, or SQLite under the data directory."""
        configured: str | None = getattr(self, f"{service}_database_url")
        if configured:
            return configured
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    @field_validator("users_grpc")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        host_and_port(value)  # raises ValueError naming the problem
        return value

    @field_validator("users_grpc_cert", "users_grpc_key", "users_grpc_ca")
    @classmethod
    def _readable_pem(cls, value: Path | None) -> Path | None:
        if value is not None:
            # The file's name is not repeated here: the error shows the value given, masked where needed.
            try:
                head = value.read_bytes()[:4096]
            except OSError as error:
                raise ValueError(f"cannot read the file: {error.strerror or type(error).__name__}") from None
            if b"-----BEGIN " not in head:
                raise ValueError("not a PEM file (no -----BEGIN line)")
        return value

    @field_validator("users_grpc_key")
    @classmethod
    def _key_with_its_certificate(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if "users_grpc_cert" in info.data and (info.data["users_grpc_cert"] is None) != (value is None):
            raise ValueError(
                "SKUFLOW_USERS_GRPC_CERT and SKUFLOW_USERS_GRPC_KEY go together: set both for TLS, or neither"
            )
        return value

    @field_validator("auth_cache_seconds")
    @classmethod
    def _revocations_pulled_in_time(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("auth_transport") == "local" and value < MIN_LOCAL_CACHE_SECONDS:
            raise ValueError(
                f"must be at least {MIN_LOCAL_CACHE_SECONDS:g} with SKUFLOW_AUTH_TRANSPORT=local: verifiers pull "
                "the revoked tokens that often, and refuse every token while their last pull is older"
            )
        return value

    @field_validator("broker_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("amqp://", "amqps://", "memory://")):
            raise ValueError("must start with amqp://, amqps:// or memory://")
        return value

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _peer_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _peers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for peer in value:
            if peer != "*":
                try:
                    ipaddress.ip_network(peer, strict=False)
                except ValueError:
                    # Masked like every value shown: someone may paste a URL with its password here by mistake.
                    shown = without_password(peer)
                    raise ValueError(f"{shown!r} is not an IP address or network (e.g. 10.0.0.5,10.1.0.0/16)") from None
        return value

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            if not parts:
                raise ValueError("must list at least one delay in seconds, e.g. 1,5,30")
            return tuple(parts)
        return value

    @field_validator("retry_delays")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay <= 0 for delay in value):
            raise ValueError("every delay must be a positive number of seconds")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings, dotenv_settings]
        config_file = os.environ.get(f"{PREFIX}CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def broker_options(self) -> BrokerOptions:
        return BrokerOptions(
            retry_delays=self.retry_delays,
            prefetch=self.prefetch,
            shutdown_grace=self.shutdown_grace_seconds,
        )


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning a validation error into one message that names each bad variable."""
    config_file = os.environ.get(f"{PREFIX}CONFIG")
    if config_file and not Path(config_file).is_file():
        raise SettingsError(f"{PREFIX}CONFIG: no such file {config_file!r}")
    try:
        if config_file:
            _no_unknown_keys(Path(config_file))
        return Settings(**overrides)
    except ValidationError as error:
        problems = [
            f"{PREFIX}{str(item['loc'][0]).upper()}: {item['msg']} (got {_shown(item.get('input'))!r})"
            for item in error.errors()
        ]
        raise SettingsError("bad configuration: " + "; ".join(problems)) from None
    except ValueError as error:  # a TOML file that does not parse
        raise SettingsError(f"bad configuration file {config_file}: {error}") from None


def _no_unknown_keys(config_file: Path) -> None:
    """A key the settings do not have is a misspelling that would silently change nothing: name it. (The
    environment may hold other SKUFLOW_ variables, of other tools; the file is ours alone.)"""
    with config_file.open("rb") as source:
        unknown = sorted(key for key in tomllib.load(source) if key.lower() not in Settings.model_fields)
    if unknown:
        raise SettingsError(
            f"bad configuration file {config_file}: unknown setting(s) {', '.join(unknown)} "
            "(names are the variables' without SKUFLOW_, in lower case: retry_delays, broker_url, ...)"
        )


def _shown(value: Any) -> Any:
    return without_password(value) if isinstance(value, str) else value
