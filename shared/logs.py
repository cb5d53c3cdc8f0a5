"""Structured JSON logs with the request id of the HTTP call that caused them."""

from __future__ import annotations

import contextvars
import logging
import sys

import orjson

from shared import tracing

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
event_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)
"""The id of the event a consumer is handling."""


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        trace = tracing.current()
        if trace:
            entry["trace_id"] = trace.trace_id
            entry["span_id"] = trace.span_id
        event_id = event_id_var.get()
        if event_id:
            entry["event_id"] = event_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.Formatter.converter = __import__("time").gmtime
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
