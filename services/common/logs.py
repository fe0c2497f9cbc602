"""One-line JSON logs, so an operator can grep and a collector can parse.

Every line written while a request is being handled carries its `request_id`
(services/common/requestctx.py), the same id on every hop."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from services.common import requestctx


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": os.environ.get("AIPORT_SERVICE", record.name.split(".")[0]),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = requestctx.current()
        if request_id is not None:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup(service: str) -> logging.Logger:
    os.environ.setdefault("AIPORT_SERVICE", service)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("AIPORT_LOG_LEVEL", "INFO").upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return logging.getLogger(service)


def fields(**kv: Any) -> dict[str, Any]:
    """Structured fields for a log call: log.info("msg", extra=fields(a=1))."""
    return {"fields": kv}
