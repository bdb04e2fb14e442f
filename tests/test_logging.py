"""Structured logs: JSON or text, context on every line, request ids, no secrets."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from typing import Any

import httpx
import pytest

from second_brain_database.logging_setup import (
    AddContext,
    JsonFormatter,
    RedactCredentials,
    TextFormatter,
    bind_session,
    configure_logging,
    current_context,
    new_context,
    resolve_format,
)
from tests.conftest import SbdFactory
from tests.peers import Peer, make_token
from tests.servers import BIN_DIR, SbdServer


def emit(formatter: logging.Formatter, msg: str, *args: Any, **extra: Any) -> str:
    record = logging.LogRecord("sbd.test", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    for log_filter in (RedactCredentials(), AddContext()):
        log_filter.filter(record)
    return formatter.format(record)


async def test_json_lines_carry_the_connection_context() -> None:
    async def session() -> dict[str, Any]:
        new_context("req-0123456789")
        bind_session(room_id="lobby", user_id="alice")
        child = asyncio.create_task(asyncio.sleep(0, current_context()))
        bind_session(peer_id="p1")  # after the task started: still seen by it
        context = await child
        assert context is not None and context.peer_id == "p1"
        return json.loads(emit(JsonFormatter(), "joined with %s", "ws?token=abc.def&x=1"))

    line = await asyncio.create_task(session())
    assert line["msg"] == "joined with ws?token=[redacted]&x=1"
    assert (line["request_id"], line["room_id"], line["peer_id"], line["user_id"]) == (
        "req-0123456789",
        "lobby",
        "p1",
        "alice",
    )
    assert line["level"] == "INFO" and line["logger"] == "sbd.test" and line["instance"]
    # Another connection's task sees none of it.
    other = await asyncio.create_task(asyncio.to_thread(emit, JsonFormatter(), "x"))
    assert "room_id" not in json.loads(other)


def test_extra_fields_and_exceptions_are_kept_and_redacted() -> None:
    try:
        raise ValueError("bad Bearer abc.def.ghi")
    except ValueError:
        record = logging.LogRecord("a", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    record.action = "kick"
    AddContext().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["action"] == "kick"
    assert "Bearer [redacted]" in line["exc"] and "abc.def.ghi" not in line["exc"]


def test_text_format_shows_context_only_when_set() -> None:
    assert emit(TextFormatter(), "plain").endswith("INFO sbd.test: plain")
    text = emit(TextFormatter(), "with", room_id="r", peer_id="p")
    assert text.endswith("INFO sbd.test [room_id=r peer_id=p]: with")


def test_format_choice() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_format("auto", Tty()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("JSON", Tty()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"
    with pytest.raises(ValueError, match="SBD_LOG_FORMAT"):
        resolve_format("xml")
    with pytest.raises(ValueError, match="SBD_LOG_LEVEL"):
        configure_logging("LOUD")
    assert configure_logging("debug")["loggers"][""]["level"] == "DEBUG"


async def test_server_logs_json_with_request_ids_and_session_ids(server: SbdServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        minted = (await http.get("/health/live")).headers["x-request-id"]
        kept = await http.get("/health/live", headers={"X-Request-ID": "proxy-id-12345678"})
        forged = await http.get("/health/live", headers={"X-Request-ID": "spaced id; injected"})
    assert len(minted) == 16
    assert kept.headers["x-request-id"] == "proxy-id-12345678"
    assert forged.headers["x-request-id"] != "spaced id; injected"

    token = make_token("logan")
    peer = await Peer.join(server.ws_url, "log-json-room", token)
    await peer.send({"type": "leave"})
    await peer.expect_close()
    await asyncio.sleep(0.3)

    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = {line["request_id"]: line for line in lines if line["logger"] == "uvicorn.access"}
    assert access[minted]["path"] == "/health/live" and access[minted]["status"] == 200
    assert "proxy-id-12345678" in access
    [ended] = [
        line
        for line in lines
        if line.get("room_id") == "log-json-room" and line["msg"] == "signaling session ended"
    ]
    assert (ended["peer_id"], ended["user_id"]) == (peer.peer_id, "logan")
    # One structured line per session end: why, how long, how many frames.
    assert (ended["close_code"], ended["reason"]) == (1000, "left")
    assert ended["frames_in"] == 1 and ended["frames_out"] == 1  # leave; welcome
    assert ended["duration_s"] >= 0
    # The handshake line of the same connection carries the same request id.
    handshake = [
        line
        for line in lines
        if line.get("request_id") == ended["request_id"] and "WebSocket" in line["msg"]
    ]
    assert handshake and "token=[redacted]" in handshake[0]["msg"]
    assert token not in server.log()
    assert all(line["instance"] == lines[0]["instance"] for line in lines)


async def test_a_refused_session_logs_its_close_code(server: SbdServer) -> None:
    room = "log-refused-room"
    peer = await Peer.join(server.ws_url, room, make_token("ruth"))
    forged = f"{peer.peer_id}.wrong-secret"
    refused = await Peer.connect(server.ws_url, room, make_token("ruth"), query=f"resume={forged}")
    assert (await refused.expect_close())[0] == 4003
    await asyncio.sleep(0.3)
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    ended = [
        line
        for line in lines
        if line.get("room_id") == room and line["msg"] == "signaling session ended"
    ]
    assert [(line["close_code"], line["reason"]) for line in ended] == [
        (4003, "invalid resume token")
    ]
    assert forged not in server.log()


async def test_text_format_from_settings(sbd_factory: SbdFactory) -> None:
    server = sbd_factory({"SBD_LOG_FORMAT": "text"})
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        request_id = (await http.get("/health/live")).headers["x-request-id"]
    await asyncio.sleep(0.2)
    assert not any(line.startswith("{") for line in server.log().splitlines())
    assert f" INFO uvicorn.access [request_id={request_id}]: " in server.log()


LEVEL_PROBE = """
import logging, logging.config
from second_brain_database.logging_setup import configure_logging
logging.config.dictConfig(configure_logging("WARNING", "text"))
for name in ("uvicorn.access", "uvicorn.error", "second_brain_database.webrtc"):
    logging.getLogger(name).info("quiet %s", name)
    logging.getLogger(name).warning("loud %s", name)
"""


def test_level_from_settings_filters_every_logger() -> None:
    # In a process of its own: dictConfig replaces the handlers of the process.
    result = subprocess.run(
        [sys.executable, "-c", LEVEL_PROBE],
        env=SbdServer().env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert [line.split(": ", 1)[1] for line in result.stderr.splitlines()] == [
        "loud uvicorn.access",
        "loud uvicorn.error",
        "loud second_brain_database.webrtc",
    ]


def test_a_bad_log_setting_stops_serve_with_a_reason() -> None:
    env = {**SbdServer().env, "SBD_LOG_LEVEL": "LOUD"}
    result = subprocess.run(
        [str(BIN_DIR / "sbd"), "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "SBD_LOG_LEVEL 'LOUD' is not a logging level" in result.stderr
