"""Attack clients for the hostile tests, each aimed at one real `sbd serve`.

An :class:`Attacker` holds the target and hands out the three kinds of
client an attacker has: a raw TCP socket (bytes of its choice, before or
instead of any handshake), a raw RFC 6455 connection (hand-built frames after
a real handshake, ``tests/rawws.py``) and an authenticated WebSocket peer
(``tests/peers.py``) with any token claims it likes, signed with the
server's key or not. A new attack is then a few lines, e.g.::

    async def test_x(attacker: Attacker) -> None:
        code, _ = await attacker.refused("room", sub="eve\\n")
        assert code == 4003
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from tests.peers import Peer
from tests.rawws import RawWebSocket
from tests.servers import TEST_SECRET, SbdServer


def forge_token(sub: Any = "attacker", ttl: float = 600, **claims: Any) -> str:
    """A token signed with the server's key whose claims are whatever the
    attacker wants (``exp`` and ``sub`` included: pass them to override)."""
    now = int(time.time())
    body: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl, **claims}
    # PyJWT writes lone surrogates as \\udxxx escapes, as a careless issuer would.
    return jwt.encode(body, TEST_SECRET, algorithm="HS256")


class RawTcp:
    """A plain TCP connection to the target: send anything, read what comes."""

    def __init__(self, port: int, timeout: float = 5) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_all(self, timeout: float = 5) -> bytes:
        """Everything the server sends until it closes (or ``timeout`` passes)."""
        self.sock.settimeout(timeout)
        received = b""
        try:
            while chunk := self.sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received

    def close(self) -> None:
        self.sock.close()


_room_numbers = itertools.count()


async def depart(peer: Peer) -> None:
    """Leave for good (no resume window, no late ``user-left`` in a later test)."""
    with contextlib.suppress(Exception):
        await peer.send({"type": "leave"})
        await peer.expect_close()
    await peer.close()


@dataclass
class Attacker:
    target: SbdServer

    @staticmethod
    def room(prefix: str = "room") -> str:
        """A room id no other test of the session uses."""
        return f"{prefix}-{next(_room_numbers)}-{time.monotonic_ns()}"

    # --- HTTP ---------------------------------------------------------------

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.target.base_url, timeout=5)

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        with self.http() as client:
            return client.get(path, headers=headers)

    def post(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        with self.http() as client:
            return client.post(path, headers=headers, **kwargs)

    # --- raw sockets ----------------------------------------------------------

    def tcp(self) -> RawTcp:
        return RawTcp(self.target.port)

    def raw_ws(self, room: str, token: str | None = None, headers: str = "") -> RawWebSocket:
        """A completed handshake on a room socket, then frames by hand."""
        token = token if token is not None else forge_token()
        return RawWebSocket.open(
            self.target.port, f"/ws/webrtc/{room}?token={token}", headers=headers
        )

    # --- authenticated peers ----------------------------------------------------

    async def join(self, room: str, token: str | None = None, **claims: Any) -> Peer:
        """A peer past its ``welcome``, with ``token`` or one forged from ``claims``."""
        return await Peer.join(self.target.ws_url, room, token or forge_token(**claims))

    async def refused(self, room: str, token: str | None = None, **claims: Any) -> tuple[int, str]:
        """Open a room socket that the server must refuse: its close code and
        reason (a ``welcome`` instead fails the test)."""
        peer = await Peer.connect(self.target.ws_url, room, token or forge_token(**claims))
        try:
            return await peer.expect_close()
        finally:
            await peer.close()

    def log(self) -> str:
        return self.target.log()
