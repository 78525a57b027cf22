"""Structured logs: one JSON object per line, carrying the flow's correlation and causation ids."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from skuflow.messaging import current_flow


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
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.INFO, structured: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if structured:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # requests are counted in /metrics
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations log only when something goes wrong
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # the embedded SMTP sink's protocol chatter
