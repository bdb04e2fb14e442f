"""Logging: one format for the service and uvicorn, and no credential in any line.

uvicorn logs each WebSocket handshake with its path and query string (the
token) at INFO on ``uvicorn.error``; :class:`RedactCredentials` rewrites the
``token``, ``ticket`` and ``resume`` query values in every record.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_CREDENTIAL = re.compile(r"((?:token|ticket|resume|access_token)=)[^&\s\"']+", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def redact(text: str) -> str:
    return _BEARER.sub(r"\1[redacted]", _CREDENTIAL.sub(r"\1[redacted]", text))


class RedactCredentials(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(_redact_arg(arg) for arg in _as_tuple(record.args))
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def _as_tuple(args: Any) -> tuple[Any, ...]:
    return args if isinstance(args, tuple) else (args,)


def _redact_arg(arg: Any) -> Any:
    return redact(arg) if isinstance(arg, str) else arg


LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "second_brain_database")


def configure_logging(level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config`` dict for uvicorn's ``log_config``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactCredentials}},
        "formatters": {
            "default": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["redact"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "": {"handlers": ["default"], "level": level.upper()},
            "uvicorn": {"handlers": [], "level": level.upper(), "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level.upper(), "propagate": True},
            "uvicorn.access": {"handlers": [], "level": level.upper(), "propagate": True},
        },
    }
