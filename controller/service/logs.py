"""JSON logs: one object per line, every string masked by the redactor.

    {"level": "info", "ts": "2025-01-31T12:00:00.123Z", "logger": "envship.controller",
     "msg": "...", "reconcileID": 3, "revision": "main@sha1:...", "env": "train", "error": "..."}

`reconcileID`, `revision`, `env`, `step` (envship's own steps) and `error` come from a record's
`extra` (absent when not given); an exception's traceback goes under `traceback`. Nothing a
record carries leaves unredacted: the message, the fields and the traceback all pass through
`redact`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from controller.adapters.redact import redact

FIELDS = ("reconcileID", "revision", "env", "step", "error")


def _value(value: object) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: level, ts, logger, msg and the controller's context fields."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        data: dict[str, Any] = {
            "level": record.levelname.lower(),
            "ts": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = _value(value)
        if record.exc_info:
            data["traceback"] = redact(self.formatException(record.exc_info))
            if "error" not in data and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                data["error"] = redact(f"{type(exc).__name__}: {exc}")
        return json.dumps(data, ensure_ascii=False)


def configure(level: int | str = logging.INFO, stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record (root logger) to `stream` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The Azure SDK logs every HTTP request and response at INFO (ACR Tasks' status polls, Key
    # Vault reads): noise, and URLs whose SAS signatures only its own policy redacts.
    logging.getLogger("azure").setLevel(max(logging.WARNING, root.level))
    return handler
