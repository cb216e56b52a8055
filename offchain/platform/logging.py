"""Structured logs: one JSON object per line on stdout, secrets scrubbed.

structlog renders both our events and stdlib records (uvicorn, sqlalchemy, alembic), so a log
shipper sees a single format. `service` and `request_id` come from context variables bound by
the request middleware and by each service's lifespan.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog
from structlog.typing import EventDict, Processor

from offchain.platform.tracing import add_trace_ids

_SECRET_KEY = re.compile(
    r"secret|password|passwd|token|private_key|privkey|authorization|api_key|signature|cookie",
    re.IGNORECASE,
)
# postgresql://user:password@host -> postgresql://user:***@host
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://[^:/@\s]*):[^@/\s]+@", re.IGNORECASE)
REDACTED = "[redacted]"


def _scrub(value: Any) -> Any:
    if isinstance(value, str) and "://" in value:
        return _URL_PASSWORD.sub(r"\g<scheme>:***@", value)
    return value


def redact_secrets(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Blank values whose key names a secret; mask passwords inside URLs."""
    for key in list(event_dict):
        if _SECRET_KEY.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def _drop_color_message(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    # uvicorn duplicates its message with ANSI colours in `color_message`.
    event_dict.pop("color_message", None)
    return event_dict


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at emit time (test capture, redirected streams)."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


_configured: tuple[str, str] | None = None


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Idempotent: eleven apps in one process share one configuration."""
    global _configured
    if _configured == (level, fmt):
        return
    _configured = (level, fmt)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
        _drop_color_message,
        redact_secrets,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = _StdoutHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers = []
        uv.propagate = True
    # Our middleware logs each request once with its route template and request id.
    logging.getLogger("uvicorn.access").disabled = True
    # Chatty libraries: pgserver logs every pg_ctl invocation with its full output at INFO.
    for name in ("pgserver", "alembic.runtime.plugins", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def access_log_writer(fmt: str) -> Callable[[str], None] | None:
    """How the request middleware writes its one line per request, or None for the slow path.

    The JSON access line is rendered by the middleware itself and written here in one call:
    structlog's processor chain and the stdlib handler cost ~30 % of a cached read (profiled).
    Other formats (console, for people) keep the full structlog path.
    """
    if fmt != "json" or not logging.getLogger("caas.http").isEnabledFor(logging.INFO):
        return None

    def write(line: str) -> None:
        stream = sys.stdout  # looked up per call, as the handler does (capture, redirection)
        stream.write(line)
        stream.flush()

    return write


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial)
    return logger


def bound_context() -> MutableMapping[str, Any]:
    return structlog.contextvars.get_contextvars()
