"""The direct WebSocket path of ``sbd serve`` (webrtc/native_ws.py), where the
contract tests cannot see it: frame encoding at the length boundaries, and
messages sent the moment the handshake completes."""

from __future__ import annotations

import asyncio
import json
import os
import socket

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from second_brain_database.webrtc.native_ws import SignalingWebSocketProtocol
from second_brain_database.webrtc.rfc6455 import text_frame
from tests.peers import Peer, make_token
from tests.rawws import TEXT, RawWebSocket, build_frame
from tests.servers import SbdServer


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_text_frames_use_the_shortest_length_encoding_and_parse_back(length: int) -> None:
    payload = os.urandom(length // 2 + 1).hex()[:length].encode()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        frame = text_frame(payload)
        ours.sendall(frame)
        parsed = RawWebSocket(theirs).recv_frame()
    assert (parsed.fin, parsed.rsv, parsed.opcode, parsed.payload) == (True, 0, TEXT, payload)
    header = 2 if length < 126 else 4 if length < 65536 else 10  # RFC 6455 section 5.2
    assert len(frame) == header + length


def test_messages_sent_as_soon_as_the_handshake_is_read_follow_the_welcome(
    server: SbdServer,
) -> None:
    """Messages a client sends the moment it reads the 101, before the welcome,
    reach the session in order, whether they arrive before the session reads
    natively (moved over from the ASGI queue) or after."""
    ws = RawWebSocket.open(server.port, f"/ws/webrtc/eager?token={make_token('eager')}")
    try:
        ws.send(
            b"".join(
                build_frame(TEXT, json.dumps({"type": "ping", "id": f"p{n}"}).encode())
                for n in range(5)
            )
        )
        answers = [json.loads(ws.recv_frame().payload) for _ in range(6)]
    finally:
        ws.close()
    assert [a["type"] for a in answers] == ["welcome"] + ["pong"] * 5


async def test_one_clients_messages_keep_their_order_across_both_handling_paths(
    server: SbdServer,
) -> None:
    """With the embedded broker, relays are handled on arrival and other types
    by the session's reader; a relay must never overtake an earlier message
    the reader still holds. (On Redis every message takes the reader's path.)"""
    room = "mixed-order"
    a = await Peer.join(server.ws_url, room, user="alice")
    b = await Peer.join(server.ws_url, room, user="bob")
    await a.expect("user-joined")
    sent = []
    for n in range(60):
        if n % 3 == 1:
            message = {"type": "media-state", "payload": {"audio": n % 2 == 0, "video": True}}
        else:
            message = {"type": "app", "to": b.peer_id, "payload": {"n": n}}
        sent.append(message["type"])
        await a.send(message)
    got = [(await b.recv())["type"] for _ in sent]
    assert got == sent
    await a.close()
    await b.close()


@pytest.mark.parametrize("deflate", [True, False])
def test_the_protocol_refuses_to_run_with_permessage_deflate_configured(deflate: bool) -> None:
    """The frame parser refuses every reserved bit, so a negotiated
    permessage-deflate would fail every compressed frame: the protocol itself
    refuses such a configuration, whoever starts uvicorn."""

    async def app(scope: object, receive: object, send: object) -> None:
        return None

    config = Config(app=app, ws_per_message_deflate=deflate)
    config.load()
    loop = asyncio.new_event_loop()
    try:
        if deflate:
            with pytest.raises(RuntimeError, match="ws_per_message_deflate=False"):
                SignalingWebSocketProtocol(config, ServerState(), {}, loop)
        else:
            protocol = SignalingWebSocketProtocol(config, ServerState(), {}, loop)
            assert not protocol.conn.available_extensions
    finally:
        loop.close()
