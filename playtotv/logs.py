"""Logging: one line per event; ``--log-format json`` gives one JSON object per line for machines."""

from __future__ import annotations

import logging
import sys
import time

import msgspec

_json = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if extra:
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info).replace("\n", " | ")
        return _json.encode(entry).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        extra = getattr(record, "fields", None)
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


#: ``--log-level`` choices, least severe first.
LOG_LEVELS = ("debug", "info", "warning", "error")
#: Our loggers all live under this name (``playtotv.*``, roles included: they install as playtotv.roles).
OWN_LOGGER = "playtotv"


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    """Our own loggers log from ``level`` on; every other library's (httpx logs each request, coredis each
    retry, Hypercorn and Quart each request at INFO) only warnings and errors, unless ``level`` is debug,
    which shows everything."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    own = logging.getLevelName(level.upper())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(own if own <= logging.DEBUG else max(own, logging.WARNING))
    logging.getLogger(OWN_LOGGER).setLevel(own)


def event(logger: logging.Logger, msg: str, **fields: object) -> None:
    """Log one event with structured fields (rendered as key=value or JSON keys)."""
    logger.info(msg, extra={"fields": fields})
