"""uvicorn's WebSocket and HTTP protocols, extended: the one module that
touches uvicorn's internals.

``sbd serve`` runs uvicorn with ``ws=SignalingWebSocketProtocol`` and
``http=SignalingHttpProtocol``. Every WebSocket still goes through the ASGI
application for its handshake, so routing, dependencies (token checks,
admission limits), middleware and rejections with close codes work as under
any ASGI server. The scope carries one extension,
:data:`~second_brain_database.webrtc.transport.NATIVE_EXTENSION`; a signaling
session that finds it takes the accepted connection over with
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

The handshake and the keepalive pings are uvicorn's ``websockets-sansio``
protocol's. Client frames after the handshake are parsed by
:class:`~second_brain_database.webrtc.rfc6455.ClientFrameParser` instead of
the websockets library's parser, for every connection, taken over or not.
Hostile clients are bounded here: the request head (size, time, how many
connections may be waiting for theirs), an HTTP/1.0 upgrade (refused), pongs
(one pending at most), and a close the client never answers (the socket is
aborted after ``SBD_CLOSE_TIMEOUT_S``). docs/security.md lists the limits.

What of uvicorn this module uses, and so what a uvicorn upgrade must keep
(pyproject.toml caps uvicorn at the minor version `make test-uvicorn-latest`
last passed on; docs/conformance.md):

- ``uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol``,
  subclassed. Attributes read or set: ``app``, ``scope``, ``queue`` (replaced
  by :class:`_DisconnectRoute` once a session reads natively), ``request``,
  ``response``, ``conn`` (the websockets ``ServerProtocol``: ``reject``,
  ``send_response``, ``send_close``, ``data_to_send``,
  ``available_extensions``), ``transport``, ``loop``, ``tasks``, ``logger``,
  ``handshake_initiated``, ``handshake_complete``, ``close_sent``,
  ``disconnected``, ``close_timer``, ``close_timeout``, ``read_paused``,
  ``writable``, ``config.ws_max_size``, ``config.ws_per_message_deflate``.
  Methods overridden: ``run_asgi`` (uvicorn's, except that an application
  that handed the connection to a session leaves it open), ``handle_connect``,
  ``data_received``, ``pause_writing``, ``resume_writing``, ``send``,
  ``receive``. Methods called: ``handle_connect``, ``data_received`` (the
  handshake), ``handle_pong``, ``send``, ``receive``, ``send_500_response``.
- ``uvicorn.protocols.http.httptools_impl.HttpToolsProtocol``, subclassed.
  Attributes: ``transport``, ``loop``, ``scope``, ``parser``. Methods
  overridden: ``connection_made``, ``connection_lost``, ``data_received``,
  ``on_message_begin``, ``on_headers_complete``,
  ``handle_websocket_upgrade``; called: ``send_400_response``.
- ``uvicorn.protocols.utils.ClientDisconnected``; ``uvicorn.config.Config``
  and ``uvicorn.server.ServerState`` (constructor arguments only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from socket import SO_LINGER, SOL_SOCKET
from typing import Any, ClassVar, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

from second_brain_database.config import get_settings
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


def abort_transport(transport: asyncio.Transport) -> None:
    """Drop the connection and what its buffers hold, now. (A plain close, or
    asyncio's abort, leaves unsent data to the kernel, which keeps the socket
    and its buffer until the peer reads; linger 0 makes the close a reset.)"""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_SOCKET, SO_LINGER, _LINGER_OFF)
    transport.abort()


_LINGER_OFF = struct.pack("ii", 1, 0)


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

    def has_unread(self) -> bool:
        return bool(self._inbox)

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
                # Every message before a violation has been taken: now fail.
                self._protocol.fail_pending()
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

    def empty(self) -> bool:
        return not self._socket.has_unread()


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
        if self.conn.available_extensions:
            # ClientFrameParser refuses every reserved bit: a compressed frame
            # (RSV1) would fail every connection that negotiated it.
            raise RuntimeError(
                "SignalingWebSocketProtocol does not decompress: run uvicorn with "
                "ws_per_message_deflate=False"
            )
        settings = get_settings()
        self.close_timeout = settings.close_timeout_s
        self.max_fragments = settings.max_message_fragments
        self.native: NativeSocket | None = None
        self.native_session: asyncio.Task[None] | None = None
        self.frame_parser: ClientFrameParser | None = None
        # A violation whose close waits until the application has taken the
        # messages that arrived before it.
        self.pending_failure: tuple[int, str] | None = None
        # The client's close or a violation ended the connection, not the app.
        self.ended_by_client = False
        self.pending_pong: bytes | None = None

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
            self.close_transport()

    def run_detached(self, session: Coroutine[Any, Any, None]) -> None:
        """Run the session in a task of its own, so that the ASGI call returns
        and its frames (the middleware, routing and dependency stack) are
        freed. uvicorn's shutdown waits for the task as it would for the ASGI
        call."""
        task = self.loop.create_task(session)
        task.add_done_callback(self._session_done)
        self.tasks.add(task)
        self.native_session = task

    def _session_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("signaling session failed", exc_info=task.exception())
        if self.close_timer is None:
            self.close_transport()

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
        self.close_transport()

    def attach(self, queue_size: int) -> NativeSocket:
        """Hand the accepted connection to a session: what the ASGI queue
        holds so far is moved over, in order, and the ASGI receive path ends."""
        socket = NativeSocket(self, queue_size)
        # Only put_nowait and empty are called on the queue from here on
        # (uvicorn's receive() is the ASGI path's, which this connection has left).
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

    # --- the ASGI path: errors the application expects, in order ------------

    async def send(self, message: Any) -> None:
        if self.ended_by_client and message["type"] in ("websocket.send", "websocket.close"):
            # The client closed or broke the connection: for the application
            # an I/O error (ASGI's "send on a closed connection"), not the
            # RuntimeError uvicorn keeps for applications that close twice.
            if message["type"] == "websocket.send":
                raise ClientDisconnected()
            return
        await super().send(message)
        if message["type"] == "websocket.close" and self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = self.loop.call_later(self.close_timeout, self.abort)

    async def receive(self) -> Any:
        event = await super().receive()
        if event["type"] == "websocket.disconnect":
            self.fail_pending()
        return event

    # --- client frames: rfc6455.ClientFrameParser after the handshake -------

    def data_received(self, data: bytes) -> None:
        if self.frame_parser is None:
            # The upgrade request (uvicorn replays it): the handshake is the
            # websockets library's, the frames after it are ours.
            super().data_received(data)
            self.frame_parser = ClientFrameParser(self, self.config.ws_max_size, self.max_fragments)
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
        if self.close_sent:
            return
        if not self.writable.is_set():
            # A client that pings and does not read gets one pong at most,
            # for its latest ping (RFC 6455 section 5.5.3), once it reads.
            self.pending_pong = payload
            return
        self.transport.write(encode_frame(FIN | OP_PONG, payload))

    def on_pong(self, payload: bytes) -> None:
        self.handle_pong(Frame(Opcode.PONG, payload))

    def on_close(self, code: int, reason: str, payload: bytes) -> None:
        if self.close_sent:  # the client's answer to our close
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = None
            self.close_transport()
            return
        if not self.transport.is_closing():
            self.ended_by_client = True
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.transport.write(encode_frame(FIN | OP_CLOSE, payload))  # the echo
            self.close_transport()

    def on_violation(self, code: int, reason: str) -> None:
        """Fail the connection with ``code`` (uvicorn's handle_parser_exception),
        once the application has taken every message that arrived before the
        violation: their answers go out before the close."""
        self.pending_failure = (code, reason)
        unread = not self.queue.empty()
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if unread:
            # An application that stops reading does not keep the connection.
            self.loop.call_later(self.close_timeout, self.fail_pending)
        else:
            self.fail_pending()

    def fail_pending(self) -> None:
        """Send the close of a violation that waited for the application."""
        if self.pending_failure is None:
            return
        code, reason = self.pending_failure
        self.pending_failure = None
        self.ended_by_client = True
        if not (self.close_sent or self.transport.is_closing()):
            close = code.to_bytes(2, "big") + reason.encode()
            self.transport.write(encode_frame(FIN | OP_CLOSE, close))
        self.close_sent = True
        self.close_transport()

    def close_transport(self) -> None:
        """Close once the buffer is out, but abort if the client does not take
        it within the close timeout: one that never reads must not hold a
        socket and its buffers."""
        self.transport.close()
        if not self.disconnected:
            self.loop.call_later(self.close_timeout, self.abort)

    def abort(self) -> None:
        if not self.disconnected:
            abort_transport(self.transport)

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
        if self.pending_pong is not None and not (self.close_sent or self.transport.is_closing()):
            self.transport.write(encode_frame(FIN | OP_PONG, self.pending_pong))
        self.pending_pong = None
        if self.native is not None:
            self.native.writing_resumed()

    def close_natively(self, code: int, reason: str) -> None:
        """The ASGI ``websocket.close`` of an open connection, without its wait
        for the transport to become writable: a client that does not read
        must not hold a session open. Its socket is aborted if the client has
        not answered the close within the close timeout."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.resume_reading()  # read until the client's close reply
        self.close_timer = self.loop.call_later(self.close_timeout, self.abort)

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        if self.transport.is_closing():
            self.loop.call_later(self.close_timeout, self.abort)


class SignalingHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on the request head, the part
    of a connection (a WebSocket handshake or any HTTP request) that a client
    controls before the application sees it: its size
    (``SBD_MAX_HANDSHAKE_BYTES``, 431 past it), the time to complete it
    (``SBD_HANDSHAKE_TIMEOUT_S``, then the socket is aborted) and how many
    connections of this process may be waiting for theirs
    (``SBD_MAX_PENDING_HANDSHAKES``, the rest are aborted on arrival). A
    WebSocket upgrade over HTTP/1.0 gets 400 (RFC 6455 section 4.1)."""

    # Connections of this process whose current request head is incomplete.
    pending: ClassVar[set[SignalingHttpProtocol]] = set()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self.max_head_bytes = settings.max_handshake_bytes
        self.head_timeout = settings.handshake_timeout_s
        self.max_pending = settings.max_pending_handshakes
        self.head_bytes = 0
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.pending) >= self.max_pending:
            abort_transport(transport)
            return
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_done()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self.pending.add(self)
        self.head_bytes = 0
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(
                self.head_timeout, abort_transport, self.transport
            )

    def _head_done(self) -> None:
        self.pending.discard(self)
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def data_received(self, data: bytes) -> None:
        waiting = self in self.pending
        super().data_received(data)
        if waiting and self in self.pending:
            self.head_bytes += len(data)
            if self.head_bytes > self.max_head_bytes:
                self._head_done()
                self._refuse(431, "Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self not in self.pending:  # the next request on a kept-alive connection
            self._await_head()

    def on_headers_complete(self) -> None:
        self._head_done()
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        if self.scope.get("http_version") == "1.0":
            self.send_400_response("WebSocket upgrades need HTTP/1.1 or later (RFC 6455 4.1)")
            return
        super().handle_websocket_upgrade()

    def _refuse(self, status: int, phrase: str) -> None:
        body = phrase.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, phrase.encode(), len(body), body)
        )
        self.transport.close()
        self.loop.call_later(self.head_timeout, abort_transport, self.transport)
