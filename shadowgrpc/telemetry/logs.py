"""Structured logs: JSON lines carrying the current span's trace and span ids."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from opentelemetry import trace

from .records import CURRENT


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, and trace_id / span_id when
    logged inside a span (a traced request's SERVER span, or the OpenTelemetry current span); exc_info as ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rec = CURRENT.get()  # inside a traced request: its SERVER span (telemetry.records)
        if rec is not None:
            doc["trace_id"], doc["span_id"] = f"{rec.trace_id:032x}", f"{rec.span_id:016x}"
        else:
            ctx = trace.get_current_span().get_span_context()
            if ctx.is_valid:
                doc["trace_id"] = f"{ctx.trace_id:032x}"
                doc["span_id"] = f"{ctx.span_id:016x}"
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def configure_logging(fmt: str = "text", level: str | None = None) -> None:
    """Set the root logger's level and, for ``json``, the formatter of its handlers."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    if level:
        root.setLevel(level)
    if fmt == "json":
        for h in root.handlers:
            h.setFormatter(JsonFormatter())
