"""Logging: one format for the service and uvicorn, context on every line, and
no credential in any line.

- Format: JSON (one object per line) when stderr is not a terminal, else text;
  ``SBD_LOG_FORMAT=json|text`` forces one. Level: ``SBD_LOG_LEVEL``.
- Context: every line carries this process's instance id; lines logged while
  serving an HTTP request or a WebSocket carry its ``request_id``; lines of a
  signaling session carry its ``room_id``, ``peer_id`` and ``user_id``
  (:func:`bind_session`). The context is a contextvar, so it follows the
  connection's task and the tasks it starts, and never leaks into another's.
- Secrets: uvicorn logs each WebSocket handshake with its path and query
  string (the token) at INFO on ``uvicorn.error``; :class:`RedactCredentials`
  rewrites the ``token``, ``ticket`` and ``resume`` query values and bearer
  tokens in every record, and the formatters redact the final line again.
- Forged lines: a field can hold what a client chose (a ``sub``, a path, an
  exception's message). Both formats write every control character (C0, DEL,
  C1) and U+2028/U+2029 of every field as a visible escape (``\\x0a``,
  ``\\x1b``), so no client can end a line, start a fake one or send
  escape sequences to an operator's terminal. A traceback keeps its line
  breaks, but in text format each of its lines is indented, so only a
  record's first line ever starts at the left margin with a timestamp.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson

_CREDENTIAL = re.compile(r"((?:token|ticket|resume|access_token)=)[^&\s\"']+", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


@dataclass(slots=True)
class LogContext:
    """The ids of one HTTP request or WebSocket connection.

    One mutable object per connection, held in a contextvar: tasks the
    connection starts copy the contextvar, so they share this object and see
    ids bound later (the peer id is known only after the join)."""

    request_id: str | None = None
    room_id: str | None = None
    peer_id: str | None = None
    user_id: str | None = None


CONTEXT_FIELDS = ("request_id", "room_id", "peer_id", "user_id")
_context: ContextVar[LogContext | None] = ContextVar("sbd_log_context", default=None)


def new_context(request_id: str) -> LogContext:
    """Start the log context of a request or connection (the middleware does)."""
    context = LogContext(request_id=request_id)
    _context.set(context)
    return context


def current_context() -> LogContext | None:
    return _context.get()


# Every Cc character and the two Unicode line separators, as visible escapes.
_CONTROL_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}
# The same without the newline: for tracebacks, whose lines the server wrote.
_CONTROL_ESCAPES_BUT_NEWLINE = {
    code: escape for code, escape in _CONTROL_ESCAPES.items() if code != ord("\n")
}
TRACEBACK_INDENT = "    "


def escape_controls(text: str) -> str:
    """``text`` on one line, control characters written as escapes."""
    return text.translate(_CONTROL_ESCAPES)


def _escape_traceback(text: str) -> str:
    return text.translate(_CONTROL_ESCAPES_BUT_NEWLINE)


def _escape_field(value: Any) -> Any:
    return redact(escape_controls(value)) if isinstance(value, str) else value


def redact(text: str) -> str:
    return _BEARER.sub(r"\1[redacted]", _CREDENTIAL.sub(r"\1[redacted]", text))


def bind_session(
    room_id: str | None = None, peer_id: str | None = None, user_id: str | None = None
) -> None:
    """Tag every later log line of the current connection, in all of its
    tasks, with the session's ids, e.g.
    ``bind_session(room_id, member.peer_id, principal.user_id)``."""
    context = _context.get()
    if context is None:
        context = LogContext()
        _context.set(context)
    if room_id is not None:
        context.room_id = room_id
    if peer_id is not None:
        context.peer_id = peer_id
    if user_id is not None:
        context.user_id = user_id


class RedactCredentials(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(_redact_arg(arg) for arg in _as_tuple(record.args))
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


# uvicorn logs these with a traceback at ERROR for every offending frame, so a
# client could flood the log; the server closes such connections (1007) anyway.
_CLIENT_FAULTS = frozenset({"Invalid UTF-8 sequence received from client."})


class QuietClientFaults(logging.Filter):
    """A client's malformed frame is one WARNING line, not an ERROR trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in _CLIENT_FAULTS:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def _as_tuple(args: Any) -> tuple[Any, ...]:
    return args if isinstance(args, tuple) else (args,)


def _redact_arg(arg: Any) -> Any:
    return redact(arg) if isinstance(arg, str) else arg


_instance_cache: tuple[int, str] | None = None


def instance_id() -> str:
    """This process's instance id (per process: ``--workers`` children each have one)."""
    global _instance_cache
    pid = os.getpid()
    if _instance_cache is None or _instance_cache[0] != pid:
        from second_brain_database.config import get_settings

        _instance_cache = (pid, get_settings().instance_id)
    return _instance_cache[1]


class AddContext(logging.Filter):
    """Copy the instance id and the current contextvars onto the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.instance = instance_id()
        context = _context.get()
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, getattr(context, name) if context is not None else None)
        return True


# Attributes every LogRecord has; anything else came from ``extra=`` and is
# worth keeping as a field of the JSON line.
_STANDARD = frozenset(
    set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
    | {"message", "asctime", "instance", "color_message", "taskName"}
    | set(CONTEXT_FIELDS)
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, then
    context and ``extra`` fields; uvicorn's access lines get ``client``,
    ``method``, ``path`` and ``status`` as fields too."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": _escape_field(record.getMessage()),
            "instance": getattr(record, "instance", None),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = _escape_field(value)
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            line.update(
                (key, _escape_field(value)) for key, value in _access_fields(record.args).items()
            )
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[_escape_field(key)] = _escape_field(value)
        if record.exc_info:
            line["exc"] = redact(_escape_traceback(self.formatException(record.exc_info)))
        return orjson.dumps(line, default=str).decode()


def _access_fields(args: tuple[Any, ...]) -> dict[str, Any]:
    # uvicorn.access: '%s - "%s %s HTTP/%s" %d' % (client, method, path, version, status)
    if len(args) != 5:
        return {}
    client, method, path, _version, status = args
    return {"client": client, "method": method, "path": path, "status": status}


class TextFormatter(logging.Formatter):
    """``time level logger [context]: message``, context only where set."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        values = ((name, getattr(record, name, None)) for name in CONTEXT_FIELDS)
        parts = [f"{name}={escape_controls(str(value))}" for name, value in values if value]
        record.context = f" [{' '.join(parts)}]" if parts else ""
        record.message = escape_controls(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        for extra in (record.exc_text, record.stack_info and self.formatStack(record.stack_info)):
            if extra:
                lines = _escape_traceback(extra).splitlines()
                line += "".join(f"\n{TRACEBACK_INDENT}{text}" for text in lines)
        return redact(line)


LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "second_brain_database")
FORMATS = ("auto", "json", "text")


def resolve_format(fmt: str, stream: Any = None) -> str:
    """``auto`` becomes ``json`` unless ``stream`` (stderr) is a terminal."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ValueError(f"SBD_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt != "auto":
        return fmt
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure_logging(level: str = "INFO", fmt: str = "auto") -> dict[str, Any]:
    """A ``logging.config`` dict for uvicorn's ``log_config`` (applied in
    every worker process too)."""
    level = level.upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError(f"SBD_LOG_LEVEL {level!r} is not a logging level")
    formatter = JsonFormatter if resolve_format(fmt) == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "redact": {"()": RedactCredentials},
            "context": {"()": AddContext},
            "client_faults": {"()": QuietClientFaults},
        },
        "formatters": {"default": {"()": formatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                # Handler filters see records propagated from every logger.
                "filters": ["client_faults", "redact", "context"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "": {"handlers": ["default"], "level": level},
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": level, "propagate": True},
        },
    }
