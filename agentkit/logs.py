"""Structured logs: one JSON object per line on stderr, as every HostStack process writes them."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            doc.update(extra)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


# Libraries whose debug output drowns ours (pyroute2 logs every netlink message).
QUIET = ("pyroute2", "virEventAsyncIOImpl", "asyncio", "grpc", "aiohttp.access")


class MalformedRequests(logging.Filter):
    """aiohttp's server logs a client's malformed HTTP (a NUL in a header, an overlong line) with a
    traceback, as it would a bug of ours; it is the client's mistake, answered 400: one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Imported here, where aiohttp is loaded already: a process without an HTTP server (hs-ctl backup,
        # a scheduled job) does not pay for importing aiohttp.
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = f"{record.getMessage()}: {exc.code} {exc.message}", None
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequests) for f in server.filters):
        server.addFilter(MalformedRequests())
