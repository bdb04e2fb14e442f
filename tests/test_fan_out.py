"""The room channel's fan-out (ConnectionManager.deliver) without a server:
envelopes in the order a Redis listener may bring them, frames out."""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import Any

import orjson

from second_brain_database.auth.tokens import Principal
from second_brain_database.config import Settings
from second_brain_database.webrtc import server_frames
from second_brain_database.webrtc.broker.model import Envelope, Member
from second_brain_database.webrtc.connection import Connection
from second_brain_database.webrtc.connection_manager import ConnectionManager
from second_brain_database.webrtc.service import SignalingService
from second_brain_database.webrtc.session import Session
from second_brain_database.webrtc.transport import SignalingSocket

ROOM = "room"
ALICE = Member("pa", "alice", "Alice")
BOB = Member("pb", "bob", "Bob")


class RecordingSocket(SignalingSocket):
    """The send side of a socket, kept in a list (deliver only sends)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def run_session(self, session: Coroutine[Any, Any, None]) -> None:
        await session

    async def receive(self) -> str | bytes:
        raise AssertionError("deliver never reads")

    def send(self, frame: str) -> bool:
        self.sent.append(frame)
        return True

    async def flush(self, timeout: float) -> None:
        return None

    async def stop(self) -> list[str]:
        return []

    async def close(self, code: int, reason: str) -> None:
        return None


def live_connection(
    manager: ConnectionManager, member: Member, *, joining: bool
) -> Connection[Session]:
    principal = Principal(member.user_id, member.name, time.time() + 60)
    session = Session(ROOM, member, principal, manager.settings, 0.0)
    session.welcomed()
    connection: Connection[Session] = Connection(RecordingSocket(), session)
    connection.joining = joining
    manager._local.setdefault(ROOM, {})[member.peer_id] = connection  # as run() registers it
    return connection


def types(connection: Connection[Session]) -> list[str]:
    assert isinstance(connection.socket, RecordingSocket)
    return [orjson.loads(frame)["type"] for frame in connection.socket.sent]


def test_a_joining_peer_gets_nothing_published_before_its_own_join() -> None:
    settings = Settings(jwt_secret="x" * 32)
    manager = SignalingService.build(settings, None).manager  # embedded, not started
    alice = live_connection(manager, ALICE, joining=False)
    bob = live_connection(manager, BOB, joining=True)
    chat = orjson.dumps({"type": "app", "from": "pa", "payload": {}}).decode()

    # Alice's user-joined and a broadcast of hers, late from the listener:
    # both were published before Bob's join, whose welcome lists Alice.
    manager.deliver(ROOM, server_frames.user_joined(ALICE))
    manager.deliver(ROOM, Envelope("", ALICE.peer_id, chat))
    assert types(bob) == []
    manager.deliver(ROOM, server_frames.user_joined(BOB))  # the echo of Bob's join
    manager.deliver(ROOM, Envelope("", ALICE.peer_id, chat))
    assert types(bob) == ["app"]
    assert types(alice) == ["user-joined"]  # Bob's; her own excluded her


def test_a_resuming_peer_is_not_held_back() -> None:
    settings = Settings(jwt_secret="x" * 32)
    manager = SignalingService.build(settings, None).manager  # embedded, not started
    bob = live_connection(manager, BOB, joining=False)
    manager.deliver(ROOM, server_frames.user_joined(ALICE))
    assert types(bob) == ["user-joined"]
