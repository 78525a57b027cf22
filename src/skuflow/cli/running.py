"""`skuflow demo`, `up` and `serve`: the system, run in this process or one service of it."""

from __future__ import annotations

from typing import Annotated

import typer

from skuflow.cli.base import console, err_console, errors, fail, read_settings, run, stored_settings
from skuflow.platform.settings import Settings


def demo(sku: Annotated[str, typer.Option(help="The SKU id the event carries.")] = "SKU-1") -> None:
    """Send one sku_processed event through the broker and watch every queue receive it.

    Uses SKUFLOW_BROKER_URL: the in-process broker by default, RabbitMQ with amqp://...
    """
    from skuflow.demo import RoundTripError, round_trip

    received = run(round_trip(read_settings(), sku, console.print), failure=(RoundTripError,))
    console.print(f"[green]round trip complete:[/] {received} deliveries")


def up(
    processes: Annotated[
        bool,
        typer.Option(
            "--processes",
            help="Each service in processes of its own (`skuflow serve SERVICE --workers N`), on RabbitMQ and "
            "PostgreSQL: every core at work.",
        ),
    ] = False,
    instances: Annotated[
        int, typer.Option(min=1, max=16, help="With --processes: worker processes of each service.")
    ] = 1,
) -> None:
    """Run the whole system in this process: every service, the in-process broker and SQLite by default,
    an SMTP sink on 127.0.0.1:2525 that shows the emails (unless SKUFLOW_SMTP_URL is set), and the
    warehouse's FTP server on 127.0.0.1:2121 with the folder /outbox (unless SKUFLOW_WAREHOUSE_FTP_URL is set).

    With SKUFLOW_BROKER_URL=amqp://... the same against RabbitMQ. With --processes, each service runs in
    processes of its own (--instances N of each) against RabbitMQ and PostgreSQL (SKUFLOW_BROKER_URL and
    SKUFLOW_{INVENTORY,CATALOG,USERS}_DATABASE_URL; a missing database is created). Ctrl-C stops it cleanly.
    """
    from skuflow.embedded.smtp import ReceivedMail
    from skuflow.platform.logging import configure_logging
    from skuflow.platform.secrets import embedded_ftp_password, secrets_file, with_secrets
    from skuflow.processes import ServiceProcesses, check_shared_stack, run_up_processes
    from skuflow.system import run_up, up_table

    if instances != 1 and not processes:
        fail("--instances needs --processes (`skuflow up` alone runs every service once, in this process)")
    settings = read_settings()
    if processes:
        with errors():
            check_shared_stack(settings)
    settings, generated = with_secrets(settings, generate=True)
    ftp_password = embedded_ftp_password(settings, generate=True)
    assert ftp_password is not None
    configure_logging(form=settings.log_format)

    def ready(running: Settings, processes: str = "") -> None:
        console.print(up_table(running, embedded_smtp=embedded_smtp, embedded_ftp=embedded_ftp, processes=processes))
        at = secrets_file(running)
        for name, client in (("warehouse_secret", "warehouse"), ("admin_secret", "admin")):
            secret = getattr(running, name).get_secret_value()  # set: with_secrets generated what was missing
            if name in generated:
                console.print(f"client [bold]{client}[/]: secret [bold]{secret}[/] (generated, kept in {at})")
            else:
                console.print(f"client [bold]{client}[/]: secret from SKUFLOW_{name.upper()} or {at}")
        console.print("Ctrl-C stops everything.")

    def ready_in_processes(running: Settings, started: list[ServiceProcesses]) -> None:
        supervisors = ", ".join(f"{service.spec.name} {service.process.pid}" for service in started)
        ready(running, f"{instances} worker(s) per service\nsupervisor pids: {supervisors}")

    def show_mail(mail: ReceivedMail) -> None:
        console.print(f"[green]email[/] to {', '.join(mail.recipients)}: [bold]{mail.subject}[/]")

    embedded_smtp = settings.smtp_url is None
    embedded_ftp = settings.warehouse_ftp_url is None
    if processes:
        main = run_up_processes(settings, instances, ready_in_processes, show_mail, ftp_password)
    else:
        main = run_up(settings, ready, show_mail, ftp_password)
    run(main, failure=(OSError, RuntimeError), loop=settings.event_loop)
    console.print("stopped.")


def serve(
    service: Annotated[str, typer.Argument(help="inventory, catalog or users")],
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes under one supervisor (needs PostgreSQL); without it, one plain process.",
        ),
    ] = None,
    end_with_parent: Annotated[
        bool, typer.Option(hidden=True, help="With --workers: drain and stop when the starting process ends.")
    ] = False,
) -> None:
    """Run one service, against a real broker (SKUFLOW_BROKER_URL=amqp://...).

    It listens on the host and port of its URL setting (SKUFLOW_INVENTORY_URL, SKUFLOW_CATALOG_URL,
    SKUFLOW_USERS_URL). Several instances of one service share its queues as competing consumers.
    With --workers N (1 too), N worker processes share the port under a supervisor that restarts a dead one
    with a growing delay, drains them all on SIGTERM (exit 0) and replaces them one by one on SIGHUP; if
    every worker fails before any has started, it exits 1 (their log says why).
    """
    from skuflow.platform.logging import configure_logging
    from skuflow.system import SERVICES, run_services

    spec = SERVICES.get(service)
    if spec is None:
        fail(f"unknown service {service!r}: choose one of {', '.join(SERVICES)}")
    settings = stored_settings()
    if settings.broker_url.startswith("memory://"):
        fail(
            "SKUFLOW_BROKER_URL: `skuflow serve` needs a real broker shared between processes, "
            "not memory:// (set amqp://user:password@host:5672/; `skuflow up` runs everything in one process)"
        )
    configure_logging(form=settings.log_format)
    if workers is not None:
        if settings.database_url(service).startswith("sqlite"):
            fail(
                f"--workers {workers} needs PostgreSQL: SQLite allows one process "
                f"(set SKUFLOW_{service.upper()}_DATABASE_URL=postgresql+asyncpg://...)"
            )
        from skuflow.supervisor import Supervisor

        with errors(usage=()):
            code = Supervisor(spec, settings, workers, end_with_parent=end_with_parent).run()
        raise typer.Exit(code)
    if settings.database_url(service).startswith("sqlite"):
        err_console.print(
            f"[yellow]note:[/] {service} uses SQLite ({settings.database_url(service)}): fine for one process; "
            f"for several, give it PostgreSQL (SKUFLOW_{service.upper()}_DATABASE_URL=postgresql+asyncpg://...)"
        )
    listening = f"{spec.name} listening on {spec.url(settings)}"
    main = run_services([spec], settings, lambda: console.print(listening))
    run(main, failure=(OSError, RuntimeError), loop=settings.event_loop)
