"""What every `skuflow` command shares: where it prints, how it reads the settings, and the one error path
(a known error ends the command with a red line and an exit code: 2 for a bad argument or setting, 1 for a
failure; anything else is a bug and shows its trace)."""

from __future__ import annotations

import contextlib
from collections.abc import Coroutine, Iterator
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from skuflow.platform.event_loop import EventLoop, run_in
from skuflow.platform.settings import Settings, SettingsError, load_settings

console = Console()
err_console = Console(stderr=True)

Errors = tuple[type[Exception], ...]
T = TypeVar("T")


def fail(message: str, code: int = 2) -> NoReturn:
    """End the command with a red message on stderr: exit 2 for a bad argument or setting, 1 for a failure."""
    err_console.print(f"[red]error:[/] {escape(message)}")  # plain text: "skuflow[bench]" is no markup
    raise typer.Exit(code)


@contextlib.contextmanager
def errors(usage: Errors = (SettingsError,), failure: Errors = (OSError,), prefix: str = "") -> Iterator[None]:
    """The one error path: a known error ends the command with its message (after `prefix`), exit 2 for
    `usage` errors and 1 for `failure` errors, not a trace; anything else is a bug and shows its trace."""
    try:
        yield
    except usage as error:
        fail(str(error), 2)
    except failure as error:
        fail(f"{prefix}{error}", 1)


def run(
    main: Coroutine[Any, Any, T],
    usage: Errors = (SettingsError,),
    failure: Errors = (OSError,),
    loop: EventLoop = "asyncio",
) -> T:
    """Run a coroutine to its end, in an event loop of the kind `loop`, through the one error path."""
    with errors(usage, failure):
        return run_in(loop, main)


def read_settings() -> Settings:
    with errors():
        return load_settings()


def stored_settings() -> Settings:
    """The settings, their unset secrets read from SKUFLOW_DATA_DIR/secrets.json (never generated here)."""
    from skuflow.platform.secrets import with_secrets

    return with_secrets(read_settings(), generate=False)[0]


def operate(action: Coroutine[Any, Any, T]) -> T:
    """Run a client command: a bad argument (exit 2), a refusal or an unreachable service (exit 1)."""
    from skuflow.service_client import ServiceError

    return run(action, usage=(ValueError,), failure=(ServiceError, LookupError, OSError))
