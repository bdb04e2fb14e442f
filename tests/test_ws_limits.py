"""Hostile clients against the WebSocket layer (webrtc/native_ws.py,
webrtc/rfc6455.py), on raw sockets against real `sbd serve` processes:
messages before a violation, fragment floods, clients that never finish the
handshake, never read, or flood pings (issues 17 and 20)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.autobahn_echo import start_echo
from tests.conftest import SHARED_SERVER_ENV, SbdFactory
from tests.peers import make_token
from tests.rawws import BINARY, CLOSE, CONT, PING, PONG, TEXT, RawWebSocket, build_frame
from tests.scrape import scrape, value
from tests.servers import SbdServer, free_port

CLOSE_TIMEOUT_S = 1.0
HANDSHAKE_TIMEOUT_S = 1.0
MAX_PENDING_HANDSHAKES = 4
LIMITS_ENV = {
    **SHARED_SERVER_ENV,
    "SBD_CLOSE_TIMEOUT_S": str(CLOSE_TIMEOUT_S),
    "SBD_SEND_QUEUE_SIZE": "4",
    "SBD_RATE_LIMIT_BURST": "5000",
    "SBD_LOG_FORMAT": "text",
}


@pytest.fixture(scope="module", params=["native", "asgi"])
def any_path_server(request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[SbdServer]:
    """``sbd serve`` on its native path and on the plain ASGI path
    (``--ws websockets-sansio``)."""
    args = ("--ws", "websockets-sansio") if request.param == "asgi" else ()
    instance = SbdServer(LIMITS_ENV, log_dir=artifacts_dir, args=args).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def native_server(artifacts_dir: Path) -> Iterator[SbdServer]:
    instance = SbdServer(LIMITS_ENV, log_dir=artifacts_dir).start()
    yield instance
    instance.stop()


def join(
    server: SbdServer, room: str, user: str, rcvbuf: int | None = None
) -> tuple[RawWebSocket, str]:
    path = f"/ws/webrtc/{room}?token={make_token(user)}"
    ws = RawWebSocket.open(server.port, path, rcvbuf=rcvbuf)
    welcome = json.loads(ws.recv_frame().payload)
    assert welcome["type"] == "welcome"
    return ws, welcome["payload"]["peer_id"]


PING_MESSAGE = build_frame(TEXT, json.dumps({"type": "ping", "id": "before"}).encode())

# Autobahn 3.2, 3.3, 4.1.3, 4.1.4, 4.2.3, 4.2.4, 5.15: a valid message and a
# violation in one read.
VIOLATIONS = {
    "3.2 rsv": build_frame(TEXT, b"x", rsv=2),
    "3.3 rsv": build_frame(TEXT, b"x", rsv=3),
    "4.1.3 opcode 3": build_frame(0x3),
    "4.1.4 opcode 4": build_frame(0x4, b"x"),
    "4.2.3 opcode 11": build_frame(0xB),
    "4.2.4 opcode 12": build_frame(0xC, b"x"),
    "5.15 stray continuation": build_frame(CONT, b"x"),
}


def test_messages_before_a_violation_are_answered_and_the_log_stays_clean(
    any_path_server: SbdServer,
) -> None:
    """The valid message is answered before the 1002 (on the native path;
    uvicorn's own protocol drops it), and no line at ERROR or traceback reaches
    the log on either path, whatever the client sends."""
    native = "--ws" not in any_path_server.args
    for name, violation in VIOLATIONS.items():
        ws, _ = join(any_path_server, "violations", "mallory")
        try:
            ws.send(PING_MESSAGE + violation + build_frame(PING))
            frames = []
            while (frame := ws.recv_frame()).opcode != CLOSE:
                frames.append(frame)
            assert frame.close_code == 1002, name
            if native:
                assert [json.loads(f.payload)["type"] for f in frames] == ["pong"], name
        finally:
            ws.close()
    time.sleep(0.5)
    log = any_path_server.log()
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def echo_server(artifacts_dir: Path) -> Iterator[tuple[int, Path]]:
    """tests/autobahn_echo.py: the production protocol serving an echo, on
    the native path (/native) and on a route that stays on ASGI (/asgi)."""
    port = free_port()
    log = artifacts_dir / f"echo-{port}.log"
    process = start_echo(port, log)
    yield port, log
    process.terminate()
    process.wait(10)


@pytest.mark.parametrize("path", ["/native", "/asgi"])
def test_an_echo_answers_the_message_before_a_violation_without_an_error_line(
    echo_server: tuple[int, Path], path: str
) -> None:
    """Autobahn's seven cases: the echo of the valid message arrives, then
    the 1002; an application that answers after the close went out gets an
    I/O error it expects, and nothing is logged at ERROR."""
    port, log = echo_server
    for name, violation in VIOLATIONS.items():
        ws = RawWebSocket.open(port, path)
        try:
            ws.send(build_frame(TEXT, b"Hello, world!") + violation + build_frame(PING))
            echo = ws.recv_frame()
            assert (echo.opcode, echo.payload) == (TEXT, b"Hello, world!"), name
            assert ws.expect_close().close_code == 1002, name
        finally:
            ws.close()
    time.sleep(0.5)
    text = log.read_text()
    assert "ERROR" not in text and "Traceback" not in text, text[-3000:]


def test_empty_continuation_frames_are_counted_and_refused_with_1009(
    native_server: SbdServer,
) -> None:
    ws, _ = join(native_server, "fragments", "mallory")
    try:
        ws.send(build_frame(TEXT, b"{", fin=False) + build_frame(CONT, fin=False) * 2000)
        assert ws.expect_close().close_code == 1009
    finally:
        ws.close()


def test_one_byte_fragments_cost_their_size_and_are_refused_at_the_cap(
    native_server: SbdServer,
) -> None:
    ws, _ = join(native_server, "fragments", "mallory")
    try:
        fragments = (build_frame(BINARY if i == 0 else CONT, b"x", fin=False) for i in range(1100))
        ws.send(b"".join(fragments))
        assert ws.expect_close().close_code == 1009
    finally:
        ws.close()


def server_side_socket_exists(server_port: int, client_port: int) -> bool:
    """Whether the server process still holds its end of this connection."""
    wanted = f"0100007F:{server_port:04X} 0100007F:{client_port:04X}"
    with open("/proc/net/tcp") as table:
        return any(wanted in " ".join(line.split()[1:3]) for line in table)


def test_a_slow_consumer_closed_with_1013_loses_its_socket_within_the_close_timeout(
    native_server: SbdServer,
) -> None:
    """A reader that never reads is closed with 1013 when its queue is full;
    its socket (and the kernel buffers behind it) is aborted when it has not
    answered the close within SBD_CLOSE_TIMEOUT_S, not kept until it reads."""
    reader, reader_id = join(native_server, "slow", "reader", rcvbuf=4096)
    reader_port = reader.sock.getsockname()[1]
    sender, _ = join(native_server, "slow", "sender")
    try:
        sdp = "v=0" + "x" * 30000
        offer = json.dumps(
            {"type": "offer", "to": reader_id, "payload": {"type": "offer", "sdp": sdp}}
        ).encode()
        for _ in range(400):
            sender.send(build_frame(TEXT, offer))
            if not server_side_socket_exists(native_server.port, reader_port):
                break
        deadline = time.monotonic() + CLOSE_TIMEOUT_S + 5
        while server_side_socket_exists(native_server.port, reader_port):
            assert time.monotonic() < deadline, "the server still holds the slow reader's socket"
            time.sleep(0.1)
        samples = scrape(native_server.base_url)
        assert value(samples, "sbd_websocket_connections") == 1  # the sender's
    finally:
        reader.close()
        sender.close()


def test_a_ping_flood_from_a_client_that_does_not_read_gets_one_pending_pong(
    native_server: SbdServer,
) -> None:
    """Pongs honour the write buffer's bound: once it is full, further pings
    are coalesced into one pong, written when the client reads again."""
    ws, _ = join(native_server, "pings", "flooder", rcvbuf=4096)
    pings = 80_000  # 10 MB of pongs: past the kernel's buffers and the transport's
    pongs = 0
    try:
        ws.sock.settimeout(30)
        ws.send(b"".join(build_frame(PING, b"p" * 125) for _ in range(pings)))
        ws.sock.settimeout(1.5)
        with contextlib.suppress(TimeoutError):
            while True:  # until nothing more comes
                pongs += ws.recv_frame().opcode == PONG
    finally:
        ws.close()
    assert 1 <= pongs < pings // 2, pongs


def raw_connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_a_request_head_that_never_ends_is_refused_with_431(native_server: SbdServer) -> None:
    with raw_connect(native_server.port) as sock:
        sock.sendall(b"GET /ws/webrtc/r HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20_000)
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 431"), answer
        assert closed_by_server(sock, 3)


def test_handshake_bounds(sbd_factory: SbdFactory) -> None:
    """A connection that never completes its request head is aborted after
    SBD_HANDSHAKE_TIMEOUT_S; past SBD_MAX_PENDING_HANDSHAKES such connections
    the next is aborted at once; once they are gone, clients get in again."""
    server = sbd_factory(
        {
            **LIMITS_ENV,
            "SBD_HANDSHAKE_TIMEOUT_S": str(HANDSHAKE_TIMEOUT_S),
            "SBD_MAX_PENDING_HANDSHAKES": str(MAX_PENDING_HANDSHAKES),
        }
    )
    silent = [raw_connect(server.port) for _ in range(MAX_PENDING_HANDSHAKES)]
    trickle = silent[0]
    trickle.sendall(b"GET /ws/webrtc/r HTTP/1.1\r\n")  # started, never finished
    try:
        time.sleep(0.2)
        with raw_connect(server.port) as over_the_cap:
            assert closed_by_server(over_the_cap, 0.5)
        for sock in silent:
            assert closed_by_server(sock, HANDSHAKE_TIMEOUT_S + 2)
    finally:
        for sock in silent:
            sock.close()
    ws, _ = join(server, "after", "alice")
    ws.close()


def test_an_http_1_0_upgrade_is_refused(native_server: SbdServer) -> None:
    request = (
        f"GET /ws/webrtc/r?token={make_token('alice')} HTTP/1.0\r\nHost: x\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    status = RawWebSocket.send_raw_request(native_server.port, request)
    assert status.startswith("HTTP/1.1 400"), status
