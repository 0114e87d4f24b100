"""Structured logging to stderr: logfmt or JSON lines.

Use the stdlib logger and pass fields as ``extra=fields(key=value, ...)``:

    log.info("image pulled", extra=fields(ref=ref, seconds=1.2))
"""

import json
import logging
import sys
import time
from typing import Any, Literal

LogFormat = Literal["logfmt", "json"]
_FIELDS = "crid_fields"


def fields(**kv: Any) -> dict[str, Any]:
    """The ``extra`` argument that attaches key/value fields to a log record."""
    return {_FIELDS: kv}


def _timestamp(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": _timestamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    out.update(getattr(record, _FIELDS, {}))
    if record.exc_info:
        out["exception"] = logging.Formatter().formatException(record.exc_info)
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_record_fields(record), default=str)


def _logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c in text for c in ' ="\\\n\t'):
        return json.dumps(text)
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _record_fields(record).items())


def setup(level: str, fmt: LogFormat) -> None:
    """Route every logger to stderr in the chosen format; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # grpc and asyncio chatter stays at warning unless crid itself debugs
    for noisy in ("asyncio", "grpc", "pyroute2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
