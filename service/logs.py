"""The server's logs: JSON lines on stderr, one object per line (python-json-logger).

Every line has `ts` (ISO 8601, UTC), `level`, `logger` and `message`; a line written while a
request is being served also carries that request's `request_id`, `rpc` and `caller` (the
caller's name, service.caller.current_caller). The line that ends each call adds `code` (the
gRPC status name) and `ms`; see service.metrics.RequestInterceptor. Nothing here logs a
request's payload: never a photo, an embedding or audio.

    {"ts": "2026-05-04T09:12:01.532+00:00", "level": "INFO", "logger": "facegate.requests",
     "message": "Verify OK 41.7 ms", "request_id": "5f0c2a9e1b7d", "rpc": "Verify", "code": "OK",
     "ms": 41.7, "caller": "door-library", "site": "library", "decision": "ACCEPT", "reason": "MATCH"}
"""
from __future__ import annotations

import contextvars
import logging
import sys
from datetime import datetime, timezone

from pythonjsonlogger.json import JsonFormatter

from .caller import current_caller
from .servicer import request_id

# the RPC being served (its proto name, e.g. "Verify"), set with request_id by the request interceptor
current_rpc: contextvars.ContextVar[str | None] = contextvars.ContextVar("rpc", default=None)


class RequestContext(logging.Filter):
    """Adds the request's id, RPC and caller to a record logged while a request is served (the
    event loop's task of that call; the model threads run outside it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        if rid != "-":
            record.__dict__.setdefault("request_id", rid)
            record.__dict__.setdefault("rpc", current_rpc.get())
            record.__dict__.setdefault("caller", current_caller.get().name)
        return True


class JsonLines(JsonFormatter):
    """ts, level, logger, message first; then the record's extra fields; a traceback as `exc_info`."""

    def __init__(self):
        super().__init__(["levelname", "name", "message"], rename_fields={"levelname": "level", "name": "logger"})

    def add_fields(self, log_data, record, message_dict):
        log_data["ts"] = datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds")
        super().add_fields(log_data, record, message_dict)


class CurrentStderr(logging.StreamHandler):
    """A handler on the process's stderr as it is when a line is written, not as it was when
    logging was set up (a replaced or closed sys.stderr is never written to)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_logging(level: int = logging.INFO, stream=None) -> logging.Handler:
    """JSON lines on `stream` (default: stderr) for every logger of the process, replacing the
    root logger's handlers -> the handler."""
    handler = logging.StreamHandler(stream) if stream is not None else CurrentStderr()
    handler.setFormatter(JsonLines())
    handler.addFilter(RequestContext())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
