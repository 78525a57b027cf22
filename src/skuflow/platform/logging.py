"""Logs: one line per event, carrying the flow's correlation and causation ids and, while traced, the trace and
span ids (so that a line leads to its trace).

`SKUFLOW_LOG_FORMAT` chooses the form: `json` (one JSON object per line, for a log collector), `text` (a
readable line: time, level, logger, message, the correlation id short), or `auto` (the default): text when
standard error is a terminal, JSON otherwise. Text is coloured by level on a terminal, unless `NO_COLOR` is set.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Literal, TextIO

from opentelemetry import trace

from skuflow.messaging import current_flow

LogFormat = Literal["auto", "text", "json"]
SHORT_ID = 8  # characters of a correlation id shown on a text line: enough to tell flows apart by eye
_COLOURS = {
    "DEBUG": "\x1b[2m",
    "INFO": "\x1b[36m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[1;31m",
}
_RESET = "\x1b[0m"
_DIM = "\x1b[2m"


def _trace_ids() -> tuple[str, str] | None:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        flow = current_flow()
        if flow is not None:
            entry["correlation_id"] = flow.correlation_id
            if flow.causation_id:
                entry["causation_id"] = flow.causation_id
        if (ids := _trace_ids()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`08:15:02.113 WARNING skuflow.inventory: message  [flow 3f2a9c1e trace 4bf92f35]`, on one line (a
    traceback, indented, follows on its own lines)."""

    def __init__(self, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        message = record.getMessage().replace("\n", "\\n")  # one event, one line
        marks = []
        if (flow := current_flow()) is not None:
            marks.append(f"flow {flow.correlation_id[:SHORT_ID]}")
        if (ids := _trace_ids()) is not None:
            marks.append(f"trace {ids[0][:SHORT_ID]}")
        level = f"{record.levelname:<7}"
        tail = f"  [{' '.join(marks)}]" if marks else ""
        if self.colour:
            level = f"{_COLOURS.get(record.levelname, '')}{level}{_RESET}"
            tail = f"{_DIM}{tail}{_RESET}" if tail else ""
        line = f"{moment} {level} {record.name}: {message}{tail}"
        if record.exc_info:
            line += "\n" + "\n".join("    " + row for row in self.formatException(record.exc_info).splitlines())
        return line


def formatter_for(form: LogFormat, stream: TextIO) -> logging.Formatter:
    """The formatter `form` names; `auto`: text on a terminal, JSON elsewhere."""
    terminal = stream.isatty()
    if form == "json" or (form == "auto" and not terminal):
        return JsonFormatter()
    return TextFormatter(colour=terminal and "NO_COLOR" not in os.environ)


def configure_logging(level: int = logging.INFO, form: LogFormat | None = None) -> None:
    """Log to standard error in `form` (default: SKUFLOW_LOG_FORMAT, else `auto`)."""
    if form is None:  # a command that reads no settings (the benchmarks): the variable, if it names a form
        chosen = os.environ.get("SKUFLOW_LOG_FORMAT", "auto").strip().lower()
        form = "text" if chosen == "text" else "json" if chosen == "json" else "auto"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(form, sys.stderr))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # requests are counted in /metrics
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations log only when something goes wrong
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # the embedded SMTP sink's protocol chatter
