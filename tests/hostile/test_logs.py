"""Forged log lines (issue 22 item 9): whatever a client puts into a logged
field (a ``sub``, a path, an exception message) cannot end the line, start a
fake one or reach an operator's terminal as an escape sequence, in either
log format."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from second_brain_database.logging_setup import (
    TRACEBACK_INDENT,
    AddContext,
    JsonFormatter,
    RedactCredentials,
    TextFormatter,
)

FAKE_AUDIT = "2026-01-01 00:00:00,000 INFO audit: admin granted to eve"
HOSTILE = f"eve\r\n{FAKE_AUDIT}\x1b[2J\x1b]0;pwned\x07\x9b1m\u2028\x7f"
CONTROLS = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}


def _record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("sbd.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    for log_filter in (RedactCredentials(), AddContext()):
        log_filter.filter(record)
    return record


def _hostile_record(exc: bool = False) -> logging.LogRecord:
    # A client-chosen value in the message arguments, the context and an extra field.
    return _record("refused %s", HOSTILE, exc=exc, user_id=HOSTILE, reason=HOSTILE)


def test_text_lines_escape_every_control_character() -> None:
    text = TextFormatter().format(_hostile_record())
    assert "\n" not in text and not CONTROLS & set(text)
    assert "eve\\x0d\\x0a2026-01-01" in text and "\\x1b[2J" in text and "\\x9b1m" in text


def test_text_tracebacks_keep_their_lines_but_cannot_start_a_record() -> None:
    first, *rest = TextFormatter().format(_hostile_record(exc=True)).split("\n")
    assert not CONTROLS & set(first)
    assert rest and all(line.startswith(TRACEBACK_INDENT) for line in rest)
    assert not CONTROLS & set("".join(rest))
    # The exception's own line break stays, but its second line is indented.
    assert f"{TRACEBACK_INDENT}ValueError: eve\\x0d" in rest
    assert f"{TRACEBACK_INDENT}{FAKE_AUDIT}\\x1b[2J\\x1b]0;pwned\\x07\\x9b1m\\u2028\\x7f" in rest


@pytest.mark.parametrize("exc", [False, True])
def test_json_fields_escape_every_control_character(exc: bool) -> None:
    text = JsonFormatter().format(_hostile_record(exc=exc))
    assert "\n" not in text
    line = json.loads(text)
    for key in ("msg", "user_id", "reason"):
        assert not CONTROLS & set(line[key]), key
        assert "\\x1b[2J" in line[key]
    if exc:
        # The traceback keeps its (server-written) line breaks inside the JSON
        # string, nothing else.
        assert not (CONTROLS - {"\n"}) & set(line["exc"])
        assert f"ValueError: eve\\x0d\n{FAKE_AUDIT}\\x1b[2J" in line["exc"]


def test_plain_lines_are_unchanged() -> None:
    text = TextFormatter().format(_record("joined room %s as %s", "lobby", "Zoë 🎉"))
    assert text.endswith("WARNING sbd.test: joined room lobby as Zoë 🎉")
    assert json.loads(JsonFormatter().format(_record("tab\there")))["msg"] == "tab\\x09here"
