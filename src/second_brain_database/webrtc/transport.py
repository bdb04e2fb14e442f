"""What a session needs from its WebSocket, whichever server carries it.

``sbd serve`` runs uvicorn with this package's own WebSocket protocol
(:mod:`second_brain_database.webrtc.native_ws`), which hands sessions a
:class:`SignalingSocket` that reads and writes frames without the ASGI
message round trip. Under any other ASGI server (the router mounted into
another application) a session talks ASGI through :class:`AsgiSocket`. The
session code is the same on both.

Sending never blocks the sender: frames a client cannot take yet wait in a
bounded queue, and ``send`` returns False once that queue is full, so one
slow client is closed instead of slowing delivery to everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from second_brain_database.webrtc.schemas import CloseCode

CLOSE_TIMEOUT_S = 2.0
# The ASGI scope extension through which native_ws offers its direct path.
NATIVE_EXTENSION = "sbd.signaling_socket"


class ClientGone(Exception):
    """The client closed the connection, or it was lost (``code``)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class SignalingSocket(ABC):
    """One accepted WebSocket, as a session sees it."""

    __slots__ = ()

    @abstractmethod
    async def run_session(self, session: Coroutine[Any, Any, None]) -> None:
        """Run ``session`` (the connection's whole life) to its end, or hand it
        to the server to run so that the ASGI call can return."""

    @abstractmethod
    async def receive(self) -> str | bytes:
        """The next client message: text or binary. Raises :class:`ClientGone`."""

    def handle_on_arrival(self, handler: Callable[[str | bytes], bool] | None) -> None:
        """Offer each client message to ``handler`` as it arrives, while the
        session waits in :meth:`receive` with nothing queued before it; a
        handler that returns False leaves the message to :meth:`receive`.
        None stops it. Optional: a socket may deliver everything to receive."""
        return None

    @abstractmethod
    def send(self, frame: str) -> bool:
        """Queue a text frame; False (and not queued) once the queue is full."""

    @abstractmethod
    async def flush(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, until every queued frame is out."""

    @abstractmethod
    async def stop(self) -> list[str]:
        """Stop sending; the frames never handed to the connection, in order."""

    @abstractmethod
    async def close(self, code: int, reason: str) -> None:
        """Close with ``code``, unless already closed; never waits on the peer."""


class AsgiSocket(SignalingSocket):
    """A session over ASGI: a writer task drains the send queue in order."""

    def __init__(self, websocket: WebSocket, queue_size: int) -> None:
        self._websocket = websocket
        self._limit = queue_size
        self._outbox: deque[str] = deque()
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._sending: str | None = None
        self._writer: asyncio.Task[None] | None = None
        self._failed = False

    async def run_session(self, session: Coroutine[Any, Any, None]) -> None:
        await session

    async def receive(self) -> str | bytes:
        event = await self._websocket.receive()
        if event["type"] == "websocket.disconnect":
            raise ClientGone(event.get("code", CloseCode.GOING_AWAY))
        text: str | None = event.get("text")
        if text is not None:
            return text
        data: bytes = event.get("bytes") or b""
        return data

    def send(self, frame: str) -> bool:
        if len(self._outbox) >= self._limit:
            return False
        # After a failed write the frame stays queued, for the peer's mailbox
        # (Session.unsent): the reader sees the connection go and ends the session.
        self._outbox.append(frame)
        if self._failed:
            return True
        self._ready.set()
        self._drained.clear()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_forever(), name="sbd-writer")
        return True

    async def _write_forever(self) -> None:
        send = self._websocket.send
        outbox, ready = self._outbox, self._ready
        try:
            while True:
                while outbox:
                    self._sending = outbox.popleft()
                    await send({"type": "websocket.send", "text": self._sending})
                    self._sending = None
                self._drained.set()
                ready.clear()
                await ready.wait()
        except asyncio.CancelledError:
            self._sending = None  # possibly sent: never deliver it twice
            raise
        except Exception:
            # The client went away; its reader gets the disconnect and ends the
            # session. The frame being sent stays in _sending: it was not sent.
            self._failed = True
            self._drained.set()

    async def flush(self, timeout: float) -> None:
        if self._failed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout)

    async def stop(self) -> list[str]:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        unsent = [self._sending] if self._sending is not None else []
        unsent.extend(self._outbox)
        self._outbox.clear()
        self._sending = None
        return unsent

    async def close(self, code: int, reason: str) -> None:
        websocket = self._websocket
        if (
            websocket.application_state != WebSocketState.CONNECTED
            or websocket.client_state != WebSocketState.CONNECTED
        ):
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(code, reason[:120]), CLOSE_TIMEOUT_S)


def open_socket(websocket: WebSocket, queue_size: int) -> SignalingSocket:
    """The accepted ``websocket`` as a :class:`SignalingSocket`: the server's
    direct path when it offers one, ASGI otherwise."""
    native = websocket.scope.get("extensions", {}).get(NATIVE_EXTENSION)
    if native is not None:
        socket: SignalingSocket = native["attach"](queue_size)
        return socket
    return AsgiSocket(websocket, queue_size)
