"""An echo server for Autobahn|Testsuite (``make conformance``), test-only.

It runs under uvicorn with the production WebSocket protocol
(``webrtc.native_ws.SignalingWebSocketProtocol``) and frame parser
(``webrtc.rfc6455``), unchanged; only the application is an echo:

- ``/native``: the connection is taken over as a signaling session takes it
  (``transport.open_socket``), and each message is echoed by the session's
  socket: the native path.
- ``/asgi``: the connection stays on the ASGI path of the same protocol (a
  route that never takes it over).

Run: ``uvicorn tests.autobahn_echo:app --ws
second_brain_database.webrtc.native_ws:SignalingWebSocketProtocol``.
"""

from __future__ import annotations

import os
import socket as sockets
import subprocess
import sys
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from second_brain_database.webrtc.native_ws import NativeSocket
from second_brain_database.webrtc.rfc6455 import FIN, OP_BINARY, encode_frame
from second_brain_database.webrtc.transport import ClientGone, open_socket
from tests.servers import _wait_until

QUEUE_SIZE = 1024
ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = "second_brain_database.webrtc.native_ws:SignalingWebSocketProtocol"
# Autobahn's section 9 sends messages of up to 16 MiB to the echoes.
ECHO_MAX_SIZE = 16 * 1024 * 1024 + 1024


async def native_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    socket = open_socket(websocket, QUEUE_SIZE)
    assert isinstance(socket, NativeSocket), "run under SignalingWebSocketProtocol"

    async def echo_forever() -> None:
        try:
            while True:
                message = await socket.receive()
                if isinstance(message, str):
                    socket.send(message)
                else:
                    # The signaling contract sends text only, so the session's
                    # socket has no binary send: write the frame on its transport.
                    socket._protocol.transport.write(encode_frame(FIN | OP_BINARY, message))
        except ClientGone:
            pass

    await socket.run_session(echo_forever())


async def asgi_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message.get("bytes") or b"")
    except WebSocketDisconnect:
        pass


app = Starlette(routes=[WebSocketRoute("/native", native_echo), WebSocketRoute("/asgi", asgi_echo)])


def start_echo(port: int, log: Path) -> subprocess.Popen[bytes]:
    """This app under uvicorn with the production protocol, on ``port``."""
    # Section 9 sends 4 MiB in 64-byte fragments.
    env = {**os.environ, "SBD_MAX_MESSAGE_FRAGMENTS": str(ECHO_MAX_SIZE // 64)}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "tests.autobahn_echo:app",
                "--app-dir", str(ROOT), "--host", "127.0.0.1", "--port", str(port),
                "--ws", PROTOCOL, "--ws-max-size", str(ECHO_MAX_SIZE),
                "--ws-per-message-deflate", "false", "--log-level", "warning",
            ],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
        )  # fmt: skip

    def listening() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the echo server exited: {log.read_text()}")
        with sockets.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    _wait_until(listening, 20, "the echo server")
    return process
