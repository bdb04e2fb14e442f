"""A raw protocol peer for the contract tests: real WebSocket, raw frames."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import jwt
import orjson
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.servers import TEST_SECRET

RECV_TIMEOUT = 5.0


def make_token(
    user: str = "alice", ttl: float = 600, secret: str = TEST_SECRET, **claims: Any
) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"sub": user, "iat": now, "exp": now + ttl, **claims}
    return jwt.encode(body, secret, algorithm="HS256")


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll state the test cannot subscribe to (Redis, a process) until true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition still false after {timeout}s")
        await asyncio.sleep(0.05)


class Peer:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}

    @property
    def peer_id(self) -> str:
        peer_id: str = self.welcome["payload"]["peer_id"]
        return peer_id

    @classmethod
    async def join(
        cls,
        base_ws_url: str,
        room: str,
        token: str | None = None,
        *,
        user: str = "alice",
        query: str = "",
        **connect: Any,
    ) -> Peer:
        """Connect and read the welcome (fails the test if the first frame is not one)."""
        peer = await cls.connect(
            base_ws_url, room, token or make_token(user), query=query, **connect
        )
        peer.welcome = await peer.expect("welcome")
        return peer

    @classmethod
    async def connect(
        cls, base_ws_url: str, room: str, token: str | None, *, query: str = "", **connect: Any
    ) -> Peer:
        url = f"{base_ws_url}/ws/webrtc/{room}"
        params = [f"token={token}"] if token is not None else []
        if query:
            params.append(query)
        if params:
            url += "?" + "&".join(params)
        return cls(await websockets.connect(url, open_timeout=5, max_size=None, **connect))

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(
            message if isinstance(message, (str, bytes)) else orjson.dumps(message).decode()
        )

    async def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        message: dict[str, Any] = orjson.loads(frame)
        return message

    async def expect(self, kind: str, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        """The next frame, which must be of type ``kind``."""
        message = await self.recv(timeout)
        assert message["type"] == kind, f"expected {kind}, got {message}"
        return message

    async def expect_close(self, timeout: float = RECV_TIMEOUT) -> tuple[int, str]:
        """Read until the server closes; return its close code and reason."""

        async def drain() -> None:
            while True:
                await self.ws.recv()

        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(drain(), timeout)
        assert self.ws.close_code is not None, "connection still open"
        return self.ws.close_code, self.ws.close_reason or ""

    async def assert_silent(self, seconds: float = 0.3) -> None:
        """Nothing arrives within ``seconds``."""
        try:
            frame = await asyncio.wait_for(self.ws.recv(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame: {frame!r}")

    async def close(self) -> None:
        await self.ws.close()

    def offer(self, to: str | None, sdp: str = "v=0\r\n", **extra: Any) -> dict[str, Any]:
        return {"type": "offer", "to": to, "payload": {"type": "offer", "sdp": sdp}, **extra}


class Device(Peer):
    """A user socket (``/ws/user``): a device of a user, reachable for calls."""

    @property
    def connection_id(self) -> str:
        connection_id: str = self.welcome["payload"]["connection_id"]
        return connection_id

    @classmethod
    async def open(cls, base_ws_url: str, token: str | None, **connect: Any) -> Device:
        """Connect without reading anything."""
        url = f"{base_ws_url}/ws/user" + (f"?token={token}" if token is not None else "")
        return cls(await websockets.connect(url, open_timeout=5, max_size=None, **connect))

    @classmethod
    async def ready(cls, base_ws_url: str, user: str = "bob", token: str | None = None) -> Device:
        """Connect and read ``ready`` (kept in ``welcome``)."""
        device = await cls.open(base_ws_url, token or make_token(user))
        device.welcome = await device.expect("ready")
        return device

    async def call(self, to_user: str, room: str, ref: str = "c1", data: Any = None) -> str:
        """Ring ``to_user``; the call id from the ``ringing`` answer."""
        await self.send(
            {
                "type": "call",
                "id": ref,
                "payload": {"to_user": to_user, "room_id": room, "data": data},
            }
        )
        state = await self.expect("call-state")
        assert state["ref"] == ref and state["payload"]["state"] == "ringing", state
        call_id: str = state["payload"]["call_id"]
        return call_id

    async def answer(self, call_id: str, accept: bool = True, ref: str | None = None) -> None:
        message: dict[str, Any] = {
            "type": "call-answer",
            "payload": {"call_id": call_id, "accept": accept},
        }
        if ref is not None:
            message["id"] = ref
        await self.send(message)

    async def expect_state(self, state: str, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        message = await self.expect("call-state", timeout)
        assert message["payload"]["state"] == state, message
        return message
