"""`skuflow serve SERVICE --workers N`: N worker processes of one service under one supervisor.

Each worker is the whole service (its HTTP API and its consumers, which compete for the queues' messages);
they share one listening socket, opened by the supervisor and inherited, so the kernel spreads the HTTP
connections. The supervisor:

- restarts a worker that dies, after a delay that doubles while it keeps dying (1 s up to 30 s; back to
  1 s once a worker has lived a minute); but if every worker fails before any has started (a wrong
  setting, most likely, which restarts cannot mend), it stops and exits 1, the workers' log naming the cause;
- on SIGTERM or SIGINT, passes SIGTERM to every worker, which drains (no new messages; those in flight
  finish, or go back to their queue, within SKUFLOW_SHUTDOWN_GRACE_SECONDS), and exits 0 once they are all
  gone (any still there after the grace and a margin are killed, and their unacknowledged messages return
  to the queues);
- on SIGHUP, replaces the workers one at a time, each new one ready before its old one is stopped, so the
  service never stops consuming. (A connection that a stopping worker had just accepted, before reading its
  request, may be closed unanswered: HTTP clients send an idempotent request again in that case.)

Considered first: uvicorn's own `--workers` (its supervisor restarts a dead worker at once, with no delay,
and restarts all of them on SIGHUP without waiting for the new ones to be ready) and gunicorn with uvicorn
workers (another dependency and process model; no backoff either). Neither gives the three behaviours
above, so this is a small supervisor of our own, on `multiprocessing` (fork: the socket is inherited).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from typing import Any

from skuflow.platform.event_loop import run_in
from skuflow.platform.settings import Settings
from skuflow.system import ServiceSpec, bind_service, run_services

log = logging.getLogger("skuflow.supervisor")

FIRST_DELAY, MAX_DELAY, STABLE_AFTER = 1.0, 30.0, 60.0  # seconds: restart backoff, and when it resets
READY_WITHIN = 60.0  # seconds for a new worker to be ready during a rolling restart
_context = multiprocessing.get_context("fork")


@dataclass
class _Slot:
    number: int
    process: BaseProcess | None = None
    ready: Event | None = None
    started_at: float = 0.0
    delay: float = FIRST_DELAY
    restart_at: float | None = None  # when a dead worker is due to be started again (inf: undecided)


class Supervisor:
    def __init__(self, spec: ServiceSpec, settings: Settings, workers: int, *, end_with_parent: bool = False) -> None:
        self.spec = spec
        self.end_with_parent = end_with_parent  # `skuflow up --processes` started it: stop (draining) when it dies
        self.settings = settings
        self.slots = [_Slot(n) for n in range(1, workers + 1)]
        self.grace = settings.shutdown_grace_seconds
        self._stopping = False
        self._rolling = False
        self._started = False  # a worker has been ready once: start-up works, later deaths are trouble to outlast
        self._exit_code = 0
        self._socket: socket.socket | None = None

    def run(self) -> int:
        self.spec.check_other_ports(self.settings)  # the workers share them (SO_REUSEPORT) with each other only
        self._socket = bind_service(self.spec, self.settings)
        signal.signal(signal.SIGTERM, self._on_stop)
        if self.end_with_parent:
            _end_with_parent()
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        log.info("supervising %d %s worker(s) on %s", len(self.slots), self.spec.name, self.spec.url(self.settings))
        for slot in self.slots:
            self._start(slot)
        try:
            while not self._stopping:
                if self._rolling:
                    self._rolling = False
                    self._roll()
                self._watch()
                time.sleep(0.1)
        finally:
            self._stop_all()
            self._socket.close()
        log.info("all %s workers stopped", self.spec.name)
        return self._exit_code

    def _on_stop(self, signum: int, _frame: Any) -> None:
        log.info("%s: stopping the workers (draining)", signal.Signals(signum).name)
        self._stopping = True

    def _on_hup(self, _signum: int, _frame: Any) -> None:
        log.info("SIGHUP: restarting the workers one by one")
        self._rolling = True

    def _start(self, slot: _Slot) -> None:
        assert self._socket is not None
        slot.ready = _context.Event()
        slot.process = _context.Process(
            target=_worker,
            args=(self.spec, self.settings, self._socket, slot.ready),
            name=f"skuflow {self.spec.name} worker {slot.number}",
            daemon=False,
        )
        slot.process.start()
        slot.started_at = time.monotonic()
        slot.restart_at = None
        log.info("worker %d started (pid %s)", slot.number, slot.process.pid)

    def _watch(self) -> None:
        now = time.monotonic()
        # Read before deaths are: a worker killed once ready has its ready event set.
        self._started = self._started or any(slot.ready is not None and slot.ready.is_set() for slot in self.slots)
        for slot in self.slots:
            process = slot.process
            if process is not None and not process.is_alive() and slot.restart_at is None:
                if not self._started and not (slot.ready is not None and slot.ready.is_set()):
                    # Not one worker has started yet: wait for the others before deciding (see below).
                    log.error(
                        "worker %d could not start (exit code %s; its log above says why)",
                        slot.number,
                        process.exitcode,
                    )
                    slot.restart_at = math.inf
                    if all(other.restart_at == math.inf for other in self.slots):
                        # None could start: the configuration, most likely, which restarts cannot mend.
                        log.error("no %s worker could start: stopping, exit 1", self.spec.name)
                        self._stopping, self._exit_code = True, 1
                        return
                    continue
                lived = now - slot.started_at
                if lived >= STABLE_AFTER:
                    slot.delay = FIRST_DELAY  # it had settled: this is a new trouble
                slot.restart_at = now + slot.delay
                slot.delay = min(MAX_DELAY, slot.delay * 2)
                log.warning(
                    "worker %d (pid %s) died (exit code %s) after %.1f s; restarting in %.1f s",
                    slot.number,
                    process.pid,
                    process.exitcode,
                    lived,
                    slot.restart_at - now,
                )
            if slot.restart_at == math.inf and self._started:  # another worker started: restart this one too
                slot.restart_at = now + slot.delay
                slot.delay = min(MAX_DELAY, slot.delay * 2)
            if slot.restart_at is not None and now >= slot.restart_at and not self._stopping:
                self._start(slot)

    def _roll(self) -> None:
        """Replace each worker: start the new one, wait until it is ready, then drain the old one. If the new
        one does not become ready (or a stop comes), it goes and the old one stays in its slot."""
        for slot in self.slots:
            if self._stopping:
                return
            old, old_ready, old_started = slot.process, slot.ready, slot.started_at
            self._start(slot)
            new, ready = slot.process, slot.ready
            assert new is not None
            assert ready is not None
            deadline = time.monotonic() + READY_WITHIN
            while not ready.wait(0.1):
                if self._stopping or time.monotonic() > deadline or not new.is_alive():
                    log.error("worker %d: the new one did not become ready; the old one stays", slot.number)
                    _terminate([new], self.grace)
                    slot.process, slot.ready, slot.started_at = old, old_ready, old_started
                    return
            if old is not None and old.is_alive():
                _terminate([old], self.grace)
                log.info("worker %d replaced (pid %s -> %s)", slot.number, old.pid, new.pid)

    def _stop_all(self) -> None:
        processes = [slot.process for slot in self.slots if slot.process is not None and slot.process.is_alive()]
        _terminate(processes, self.grace)


def _terminate(processes: list[BaseProcess], grace: float) -> None:
    """SIGTERM (the workers drain), then SIGKILL for any still there after the grace and a margin."""
    for process in processes:
        if process.pid is not None and process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace + 10
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.error("worker pid %s did not stop within the grace period; killing it", process.pid)
            process.kill()
            process.join()


def _worker(spec: ServiceSpec, settings: Settings, sock: socket.socket, ready: Event) -> None:
    """One worker process: the service on the inherited socket until SIGTERM."""
    from skuflow.platform.logging import configure_logging

    # Not the supervisor's handlers (inherited by the fork): until the service installs its own, SIGTERM
    # simply ends a worker that has nothing in flight yet.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor's business
    _end_with_parent()
    configure_logging(form=settings.log_format)
    run_in(settings.event_loop, run_services([spec], settings, ready.set, sockets=[sock]))


def _end_with_parent() -> None:
    """Ask Linux for a SIGTERM when the supervisor dies (even by SIGKILL): a worker is never left orphaned,
    consuming on its own. Elsewhere this is a no-op."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
