"""RFC 6455 conformance of the production server (`sbd serve`, default
settings), case by case with hand-built frames on raw sockets.

The Autobahn testsuite needs Python 2 or docker, neither of which is here; this
is a focused equivalent of its framing (1-4), fragmentation (5), UTF-8 (6),
close (7) and limits (9) sections, plus the opening handshake. Every protocol
violation must end in the right close code *and* a closed TCP connection;
every valid sequence must leave the session working. docs/conformance.md
records the results.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import make_token
from tests.rawws import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    HandshakeRefused,
    RawWebSocket,
    build_frame,
    close_payload,
)
from tests.servers import SbdServer

PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1002, 1007, 1009
MAX_BYTES = 65536  # the default SBD_MAX_MESSAGE_BYTES
_rooms = itertools.count()
UVICORN_UTF8_LOG = "Invalid UTF-8 sequence received from client."


@pytest.fixture(scope="module")
def prod(artifacts_dir: Path) -> Iterator[SbdServer]:
    server = SbdServer({}, log_dir=artifacts_dir).start()  # production defaults
    yield server
    # No violation may crash the app or write a traceback, nor any log line a
    # client can cause at will: an invalid UTF-8 message is answered with 1007
    # and not logged (uvicorn's own protocols log it, docs/conformance.md).
    log = server.log()
    assert "Traceback" not in log, "a violation crashed the app or logged a trace"
    assert UVICORN_UTF8_LOG not in log
    server.stop()


@pytest.fixture
def ws(prod: SbdServer) -> Iterator[RawWebSocket]:
    """A joined session: handshake done, welcome read."""
    n = next(_rooms)
    conn = RawWebSocket.open(prod.port, f"/ws/webrtc/conf-{n}?token={make_token(f'raw-{n}')}")
    welcome = conn.recv_frame()
    assert welcome.opcode == TEXT and json.loads(welcome.payload)["type"] == "welcome"
    yield conn
    conn.close()


def ping_message(pad: int = 0) -> bytes:
    """A protocol ping, padded with an ignored field to a chosen size."""
    return json.dumps({"type": "ping", "pad": "x" * pad}).encode()


def assert_pong(ws: RawWebSocket) -> None:
    frame = ws.recv_frame()
    assert (frame.opcode, json.loads(frame.payload)) == (TEXT, {"type": "pong"}), frame


def assert_fails(ws: RawWebSocket, code: int) -> None:
    assert ws.expect_close().close_code == code


# --- 1: framing ---------------------------------------------------------------


@pytest.mark.parametrize("pad", [0, 100, 125, 126, 200, 65535 - 30, MAX_BYTES - 30])
def test_text_frames_with_7_16_and_64_bit_lengths(ws: RawWebSocket, pad: int) -> None:
    message = ping_message(pad)
    assert len(message) <= MAX_BYTES
    ws.send_frame(TEXT, message)
    assert_pong(ws)


def test_a_binary_frame_is_answered_not_fatal(ws: RawWebSocket) -> None:
    ws.send_frame(BINARY, b"\x00\xff" * 10)
    frame = ws.recv_frame()
    assert frame.opcode == TEXT and json.loads(frame.payload)["type"] == "error"
    ws.send_frame(TEXT, ping_message())
    assert_pong(ws)


def test_an_unmasked_client_frame_fails_the_connection(ws: RawWebSocket) -> None:
    ws.send_frame(TEXT, ping_message(), mask=False)
    assert_fails(ws, PROTOCOL_ERROR)


# --- 2: ping and pong -----------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(125))])
def test_a_ping_is_answered_with_its_payload(ws: RawWebSocket, payload: bytes) -> None:
    ws.send_frame(PING, payload)
    frame = ws.recv_frame()
    assert (frame.opcode, frame.payload) == (PONG, payload)


def test_ten_pings_get_ten_pongs(ws: RawWebSocket) -> None:
    ws.send(b"".join(build_frame(PING, str(i).encode()) for i in range(10)))
    assert [ws.recv_frame().payload for _ in range(10)] == [str(i).encode() for i in range(10)]


def test_an_unsolicited_pong_is_ignored(ws: RawWebSocket) -> None:
    ws.send_frame(PONG, b"unsolicited")
    ws.send_frame(TEXT, ping_message())
    assert_pong(ws)


def test_a_control_frame_over_125_bytes_fails(ws: RawWebSocket) -> None:
    ws.send_frame(PING, b"x" * 126)
    assert_fails(ws, PROTOCOL_ERROR)


def test_a_fragmented_ping_fails(ws: RawWebSocket) -> None:
    ws.send_frame(PING, b"half", fin=False)
    assert_fails(ws, PROTOCOL_ERROR)


# --- 3, 4: reserved bits and opcodes ----------------------------------------------


@pytest.mark.parametrize(("opcode", "rsv"), [(TEXT, 1), (TEXT, 2), (TEXT, 4), (PING, 7)])
def test_reserved_bits_fail_the_connection(ws: RawWebSocket, opcode: int, rsv: int) -> None:
    # RSV1 would mean permessage-deflate, which was never negotiated.
    ws.send_frame(opcode, ping_message() if opcode == TEXT else b"", rsv=rsv)
    assert_fails(ws, PROTOCOL_ERROR)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_fail_the_connection(ws: RawWebSocket, opcode: int) -> None:
    ws.send_frame(opcode, b"reserved")
    assert_fails(ws, PROTOCOL_ERROR)


# --- 5: fragmentation -----------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, 64])
def test_a_fragmented_text_message_is_reassembled(ws: RawWebSocket, size: int) -> None:
    message = ping_message(150)
    chunks = [message[i : i + size] for i in range(0, len(message), size)]
    for i, chunk in enumerate(chunks):
        ws.send_frame(TEXT if i == 0 else CONT, chunk, fin=i == len(chunks) - 1)
    assert_pong(ws)


def test_a_ping_between_fragments_is_answered_at_once(ws: RawWebSocket) -> None:
    message = ping_message(10)
    ws.send_frame(TEXT, message[:5], fin=False)
    ws.send_frame(PING, b"between")
    pong = ws.recv_frame()
    assert (pong.opcode, pong.payload) == (PONG, b"between")
    ws.send_frame(CONT, message[5:])
    assert_pong(ws)


def test_empty_fragments_are_fine(ws: RawWebSocket) -> None:
    ws.send_frame(TEXT, b"", fin=False)
    ws.send_frame(CONT, ping_message(), fin=False)
    ws.send_frame(CONT, b"")
    assert_pong(ws)


def test_a_continuation_without_a_start_fails(ws: RawWebSocket) -> None:
    ws.send_frame(CONT, ping_message())
    assert_fails(ws, PROTOCOL_ERROR)


def test_a_new_message_inside_a_fragmented_one_fails(ws: RawWebSocket) -> None:
    ws.send_frame(TEXT, b'{"type":', fin=False)
    ws.send_frame(TEXT, ping_message())
    assert_fails(ws, PROTOCOL_ERROR)


# --- 6: UTF-8 ------------------------------------------------------------------


def test_valid_utf8_is_accepted_even_split_inside_a_character(ws: RawWebSocket) -> None:
    message = json.dumps({"type": "ping", "pad": "κόσμε 😀 \u202e"}, ensure_ascii=False).encode()
    cut = message.index("😀".encode()) + 2  # in the middle of a 4-byte sequence
    ws.send_frame(TEXT, message[:cut], fin=False)
    ws.send_frame(CONT, message[cut:])
    assert_pong(ws)


@pytest.mark.parametrize(
    "bad",
    [
        b"\xff",  # never valid
        b"\xc0\x80",  # overlong NUL
        b"\xed\xa0\x80",  # a UTF-16 surrogate
        b"\xf4\x90\x80\x80",  # above U+10FFFF
        b"\xce\xba\xe1",  # truncated at the end of the message
    ],
)
def test_invalid_utf8_in_text_fails_with_1007(ws: RawWebSocket, bad: bytes) -> None:
    ws.send_frame(TEXT, b'{"type":"ping","pad":"' + bad + b'"}')
    assert_fails(ws, INVALID_DATA)


def test_invalid_utf8_in_a_fragment_fails_with_1007(ws: RawWebSocket) -> None:
    ws.send_frame(TEXT, b'{"type":"ping","pad":"', fin=False)
    ws.send_frame(CONT, b"\xed\xa0\x80", fin=False)
    ws.send_frame(CONT, b'"}')
    assert_fails(ws, INVALID_DATA)


# --- 7: closing ----------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999])
def test_a_valid_close_is_echoed(ws: RawWebSocket, code: int) -> None:
    ws.send_frame(CLOSE, close_payload(code, b"bye"))
    assert ws.expect_close().close_code == code


def test_an_empty_close_is_answered(ws: RawWebSocket) -> None:
    ws.send_frame(CLOSE)
    assert ws.expect_close().opcode == CLOSE


def test_a_close_with_a_123_byte_reason_is_echoed(ws: RawWebSocket) -> None:
    ws.send_frame(CLOSE, close_payload(1000, b"r" * 123))
    assert ws.expect_close().close_code == 1000


def test_frames_after_a_close_are_ignored(ws: RawWebSocket) -> None:
    ws.send(build_frame(CLOSE, close_payload(1000)) + build_frame(TEXT, ping_message()))
    frame = ws.expect_close()  # no pong before it: the text frame was dropped
    assert frame.close_code == 1000


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_an_invalid_close_code_fails(ws: RawWebSocket, code: int) -> None:
    ws.send_frame(CLOSE, close_payload(code))
    assert_fails(ws, PROTOCOL_ERROR)


def test_a_one_byte_close_payload_fails(ws: RawWebSocket) -> None:
    ws.send_frame(CLOSE, b"\x03")
    assert_fails(ws, PROTOCOL_ERROR)


def test_invalid_utf8_in_a_close_reason_fails(ws: RawWebSocket) -> None:
    ws.send_frame(CLOSE, struct.pack("!H", 1000) + b"\xff\xfe")
    assert ws.expect_close().close_code in (PROTOCOL_ERROR, INVALID_DATA)


# --- 9: limits -------------------------------------------------------------------


def test_a_message_over_the_limit_closes_with_1009(ws: RawWebSocket) -> None:
    ws.send_frame(TEXT, ping_message(MAX_BYTES))
    assert_fails(ws, TOO_BIG)


def test_fragments_adding_up_over_the_limit_close_with_1009(ws: RawWebSocket) -> None:
    chunk = b"x" * 16384
    ws.send_frame(TEXT, b'{"type":"ping","pad":"' + chunk, fin=False)
    for _ in range(4):
        ws.send_frame(CONT, chunk, fin=False)
    ws.send_frame(CONT, b'"}')
    assert_fails(ws, TOO_BIG)


def test_a_frame_header_claiming_a_huge_length_closes_with_1009(ws: RawWebSocket) -> None:
    # 2**62 bytes announced, none sent: refused on the header alone.
    ws.send(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 1 << 62) + b"\x00" * 4)
    assert_fails(ws, TOO_BIG)


# --- the opening handshake -----------------------------------------------------------


def test_an_unsupported_version_is_refused(prod: SbdServer) -> None:
    with pytest.raises(HandshakeRefused) as refused:
        RawWebSocket.open(prod.port, f"/ws/webrtc/v?token={make_token()}", version="8")
    # RFC 6455 4.4: 426, naming the version the server speaks.
    assert refused.value.status_line.startswith("HTTP/1.1 426")
    assert refused.value.headers.get("sec-websocket-version") == "13"


@pytest.mark.parametrize(
    "headers",
    [
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",  # no key
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: not-16-bytes\r\n",
    ],
)
def test_a_bad_key_is_refused_with_400(prod: SbdServer, headers: str) -> None:
    request = f"GET /ws/webrtc/k?token={make_token()} HTTP/1.1\r\nHost: x\r\n{headers}\r\n"
    status = RawWebSocket.send_raw_request(prod.port, request.encode())
    assert status.startswith("HTTP/1.1 400"), status
