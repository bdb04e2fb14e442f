"""uvicorn's WebSocket protocol, with a direct path for signaling sessions.

``sbd serve`` runs uvicorn with ``ws=SignalingWebSocketProtocol``. Every
WebSocket still goes through the ASGI application for its handshake, so
routing, dependencies (token checks, admission limits), middleware and
rejections with close codes work as under any ASGI server. The scope carries
one extension, :data:`~second_brain_database.webrtc.transport.NATIVE_EXTENSION`;
a signaling session that finds it takes the accepted connection over with
:class:`NativeSocket` and from then on reads and writes frames directly:

- a client message is handed to the session as a ``str``, not as an ASGI
  event passed through an ``asyncio.Queue``, Starlette's state checks and the
  middleware's wrappers, and reading is paused only when a backlog builds
  up, not once per message;
- a frame is written to the transport when it is sent, with no writer task
  in between, and waits in the session's bounded queue only while the
  transport's buffer is above its high-water mark;
- the session runs in a task of its own, so the ASGI call returns once the
  session has started, and with it the middleware, routing and dependency
  frames, the scope and the handshake's headers are freed.

Together these take a relayed message from about 45 to about 30 us of CPU,
and an idle connection from about 50 to about 15 KB (BENCHMARKS.md).

The handshake and the keepalive pings are uvicorn's ``websockets-sansio``
protocol's, unchanged. Client frames after the handshake are parsed by
:class:`~second_brain_database.webrtc.rfc6455.ClientFrameParser` (UTF-8,
fragmentation, control frames, the close handshake, size limits) instead of
the websockets library's parser, for every connection, taken over or not.
This module leans on uvicorn's protocol internals, so pyproject.toml caps
uvicorn at the minor version the contract suite ran on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

from second_brain_database.webrtc import metrics
from second_brain_database.webrtc.rfc6455 import (
    FIN,
    OP_CLOSE,
    OP_PONG,
    ClientFrameParser,
    encode_frame,
    text_frame,
)
from second_brain_database.webrtc.transport import (
    NATIVE_EXTENSION,
    ClientGone,
    SignalingSocket,
)

logger = logging.getLogger(__name__)

# Reading pauses when this many client messages wait for the session, and
# resumes once it has taken them all.
INBOX_HIGH_WATER = 64


class NativeSocket(SignalingSocket):
    """A session's side of a :class:`SignalingWebSocketProtocol` connection."""

    __slots__ = (
        "_drained",
        "_gone",
        "_inbox",
        "_limit",
        "_on_arrival",
        "_outbox",
        "_protocol",
        "_waiter",
        "_writing_paused",
    )

    def __init__(self, protocol: SignalingWebSocketProtocol, queue_size: int) -> None:
        self._protocol = protocol
        self._limit = queue_size
        # Both queues are made on first use: an empty deque costs 760 bytes,
        # and most connections are idle most of the time.
        self._inbox: deque[str | bytes] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._gone: int | None = None
        # Frames not yet written: only while the transport is paused, or gone.
        self._outbox: deque[str] | None = None
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._on_arrival: Callable[[str | bytes], bool] | None = None

    # --- called by the protocol -------------------------------------------

    def message_received(self, message: str | bytes) -> None:
        waiter = self._waiter
        if (
            self._on_arrival is not None
            and waiter is not None
            and not waiter.done()
            and not self._inbox
            and self._on_arrival(message)
        ):
            return
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append(message)
        if len(self._inbox) >= INBOX_HIGH_WATER:
            self._protocol.pause_reading()
        self._wake()

    def connection_gone(self, code: int) -> None:
        if self._gone is None:
            self._gone = code
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def writing_paused(self) -> None:
        self._writing_paused = True

    def writing_resumed(self) -> None:
        self._writing_paused = False
        outbox = self._outbox
        while outbox and not self._writing_paused and self._writable():
            self._write(outbox.popleft())
        if not outbox and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # --- the session's side -------------------------------------------------

    async def run_session(self, session: Coroutine[Any, Any, None]) -> None:
        self._protocol.run_detached(session)

    def handle_on_arrival(self, handler: Callable[[str | bytes], bool] | None) -> None:
        self._on_arrival = handler

    async def receive(self) -> str | bytes:
        while True:
            inbox = self._inbox
            if inbox:
                message = inbox.popleft()
                if not inbox:
                    self._protocol.resume_reading()
                return message
            if self._gone is not None:
                raise ClientGone(self._gone)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def send(self, frame: str) -> bool:
        if not self._outbox and not self._writing_paused and self._writable():
            self._write(frame)
            return True
        if self._outbox is None:
            self._outbox = deque()
        elif len(self._outbox) >= self._limit:
            return False
        # Kept, in order, until the transport takes more; or, if the
        # connection is gone, for the peer's mailbox (Session.unsent).
        self._outbox.append(frame)
        return True

    def _writable(self) -> bool:
        protocol = self._protocol
        return not (protocol.close_sent or protocol.disconnected or protocol.transport.is_closing())

    def _write(self, frame: str) -> None:
        self._protocol.transport.write(text_frame(frame.encode()))
        metrics.count_sent_frame(frame)

    async def flush(self, timeout: float) -> None:
        if not self._outbox or not self._writable():
            return
        self._drained = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._drained), timeout)
        except TimeoutError:
            pass
        finally:
            self._drained = None

    async def stop(self) -> list[str]:
        unsent = list(self._outbox or ())
        self._outbox = None
        return unsent

    async def close(self, code: int, reason: str) -> None:
        self._protocol.close_natively(code, reason[:120])


class _DisconnectRoute:
    """Stands in for the ASGI receive queue once a session reads natively:
    the protocol's disconnect events go to the session's socket. (Not an
    ``asyncio.Queue``: that would be three more deques per connection.)"""

    __slots__ = ("_socket",)

    def __init__(self, socket: NativeSocket) -> None:
        self._socket = socket

    def put_nowait(self, item: Any) -> None:
        if item.get("type") == "websocket.disconnect":
            self._socket.connection_gone(int(item.get("code", 1006)))


class SignalingWebSocketProtocol(WebSocketsSansIOProtocol):
    """``WebSocketsSansIOProtocol`` plus :class:`NativeSocket` for sessions."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.native: NativeSocket | None = None
        self.native_session: asyncio.Task[None] | None = None
        self.frame_parser: ClientFrameParser | None = None

    async def run_asgi(self) -> None:
        # uvicorn's own, except that an application that returns after handing
        # the connection to a session (run_detached) leaves it open.
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self.native_session is not None:
            # The scope holds FastAPI's exit stacks and the request headers
            # (about 4 KB), and nothing reads it once the application returned.
            del self.scope
        elif self.close_timer is None:
            self.transport.close()

    def run_detached(self, session: Coroutine[Any, Any, None]) -> None:
        """Run the session in a task of its own, so that the ASGI call returns
        and its frames (the middleware, routing and dependency stack: about
        13 KB per connection) are freed. uvicorn's shutdown waits for the task
        as it would for the ASGI call."""
        task = self.loop.create_task(session)
        task.add_done_callback(self._session_done)
        self.tasks.add(task)
        self.native_session = task

    def _session_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("signaling session failed", exc_info=task.exception())
        if self.close_timer is None:
            self.transport.close()

    def handle_connect(self, event: Request) -> None:
        versions = event.headers.get_all("Sec-WebSocket-Version")
        if versions and versions != ["13"]:
            self._refuse_version(event)
            return
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][NATIVE_EXTENSION] = {"attach": self.attach}

    def _refuse_version(self, event: Request) -> None:
        """RFC 6455 section 4.4: a version this server does not speak gets 426
        and the one it does (the websockets library answers a bare 400);
        otherwise as uvicorn refuses a handshake."""
        self.request = event
        self.response = self.conn.reject(
            HTTPStatus.UPGRADE_REQUIRED, "Unsupported WebSocket version: this server speaks 13.\n"
        )
        self.response.headers["Sec-WebSocket-Version"] = "13"
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        self.conn.send_response(self.response)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()

    def attach(self, queue_size: int) -> NativeSocket:
        """Hand the accepted connection to a session: what the ASGI queue
        holds so far is moved over, in order, and the ASGI receive path ends."""
        socket = NativeSocket(self, queue_size)
        # Only put_nowait is called on the queue from here on (uvicorn's
        # receive() is the ASGI path's, which this connection has left).
        pending, self.queue = self.queue, cast(Any, _DisconnectRoute(socket))
        self.native = socket
        # The handshake's request and response are done with. (The request
        # lives on all the same, in the websockets library's parser, which
        # is never fed again: about 3 KB per connection.)
        del self.request, self.response
        while not pending.empty():
            event = pending.get_nowait()
            if event["type"] == "websocket.receive":
                text = event.get("text")
                socket.message_received(text if text is not None else event.get("bytes") or b"")
            elif event["type"] == "websocket.disconnect":
                socket.connection_gone(int(event.get("code", 1006)))
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        return socket

    # --- client frames: rfc6455.ClientFrameParser after the handshake -------

    def data_received(self, data: bytes) -> None:
        if self.frame_parser is None:
            # The upgrade request (uvicorn replays it): the handshake is the
            # websockets library's, the frames after it are ours.
            super().data_received(data)
            self.frame_parser = ClientFrameParser(self, self.config.ws_max_size)
            return
        self.frame_parser.feed(data)

    def on_message(self, data: str | bytes) -> None:
        if self.close_sent:
            return  # past our close: discard, as uvicorn does
        if self.native is not None:
            self.native.message_received(data)
            return
        # Not taken over (yet): the ASGI path, as uvicorn's own protocol does it.
        if isinstance(data, str):
            self.queue.put_nowait({"type": "websocket.receive", "text": data})
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        self.pause_reading()  # until the application has read it

    def on_ping(self, payload: bytes) -> None:
        if not self.close_sent:
            self.transport.write(encode_frame(FIN | OP_PONG, payload))

    def on_pong(self, payload: bytes) -> None:
        self.handle_pong(Frame(Opcode.PONG, payload))

    def on_close(self, code: int, reason: str, payload: bytes) -> None:
        if self.close_sent:  # the client's answer to our close
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = None
            self.transport.close()
            return
        if not self.transport.is_closing():
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.transport.write(encode_frame(FIN | OP_CLOSE, payload))  # the echo
            self.transport.close()

    def on_violation(self, code: int, reason: str) -> None:
        """Close with ``code``, at once (uvicorn's handle_parser_exception)."""
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if not (self.close_sent or self.transport.is_closing()):
            close = code.to_bytes(2, "big") + reason.encode()
            self.transport.write(encode_frame(FIN | OP_CLOSE, close))
        self.close_sent = True
        self.transport.close()

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.native is not None:
            self.native.writing_paused()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.native is not None:
            self.native.writing_resumed()

    def close_natively(self, code: int, reason: str) -> None:
        """The ASGI ``websocket.close`` of an open connection, without its wait
        for the transport to become writable: a client that does not read
        must not hold a session open."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.resume_reading()  # read until the client's close reply
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)
