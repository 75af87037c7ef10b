"""How the process writes its logs: plain text lines (the default) or one JSON object per line
(LOG_FORMAT=json), for a log shipper.

Both formats print the same, already redacted, records: secrets in request targets are taken
out by ``server/web/accesslog.py``'s filter before any formatter sees a record, and no log line
of ours carries a phone number, an e-mail address or a name. The JSON form adds the fields a
machine wants: the request id of the request being served (``request_id``), and on access
lines the route's name, method, redacted path, status and duration.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from server.settings import Settings

# The id of the request this task is serving, for every record logged while serving it.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Attributes an access line (or any record) may carry in ``extra``, copied into the JSON object.
FIELDS = ("request_id", "route", "method", "path", "status", "duration_ms", "size", "node")


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being served, if any (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add ``request_id`` unless the record already names one (access lines do)."""
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the known
    ``FIELDS`` a record carries, and the traceback as text."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (non-ASCII kept as is, newlines escaped)."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(settings: Settings) -> None:
    """Set the root logger's level and format from LOG_LEVEL and LOG_FORMAT.

    Like ``logging.basicConfig``, a root logger that already has handlers (a test harness, an
    embedding program) keeps them and its level; only their formatter changes to JSON when
    asked."""
    logging.basicConfig(level=settings.log_level.upper())
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
        if settings.log_format == "json" and not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(JsonFormatter())


class Throttle:
    """For a condition that repeats (an outage): at most one log line every ``every`` seconds.
    ``due()`` counts one occurrence and, when a line is due, returns how many occurrences it
    stands for (else None)."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last = -every
        self._unlogged = 0

    def due(self) -> int | None:
        """Count one occurrence; the count to log if a line is due now."""
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last < self.every:
            return None
        count, self._last, self._unlogged = self._unlogged, now, 0
        return count
