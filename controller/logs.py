"""Logging as the config asks: text for a terminal, or JSON lines for journald and log shippers.

A JSON line carries time (ISO 8601 with offset), level, logger and message,
and the ids of what it is about (``device``, ``link``, ``command``) when a
caller passed them with ``extra=``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from controller.config import LoggingConfig

#: Fields a log call may attach with ``extra={...}``; they become JSON keys.
CONTEXT_FIELDS = ("device", "link", "command", "case", "sink")


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(config: LoggingConfig, verbose: bool = False) -> None:
    """Send the root logger to standard error in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else config.level)
    # pymodbus logs every unanswered request at ERROR; our health counters carry that.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    # Access logs of every dashboard poll would drown what matters.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # One line per InfluxDB write and webhook post: the sinks' counters carry that.
    logging.getLogger("httpx").setLevel(logging.WARNING)
