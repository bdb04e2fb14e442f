"""An asyncio client of user sockets (``/ws/user``): a device of a user,
reachable for calls (docs/protocol.md, "Calls").

One :class:`CallClient` is one device. It rings (:meth:`CallClient.call`),
answers (:meth:`~CallClient.accept`, :meth:`~CallClient.decline`) and cancels
(:meth:`~CallClient.cancel`); every server frame also comes out of
:meth:`~CallClient.recv` as its typed model (``IncomingCallMessage``,
``CallStateMessage``, ...). When the connection drops it reconnects by itself
and gets a fresh ``ready``, followed by the calls still ringing its user.
The accepted side joins the call's room with the ticket it got:
``SignalingClient(base_url, state.room_id, token, ticket=state.ticket)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
import websockets
from pydantic import Field, TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from second_brain_database.webrtc.client.signaling import (
    ABNORMAL_CLOSURE,
    FATAL_CLOSE_CODES,
    SignalingClosed,
    ws_origin,
)
from second_brain_database.webrtc.schemas import (
    CallStateMessage,
    CallStatePayload,
    ErrorMessage,
    ErrorPayload,
    PongMessage,
    ReadyMessage,
    ReadyPayload,
    UserServerMessage,
)

logger = logging.getLogger(__name__)

UserServerEvent = Annotated[UserServerMessage, Field(discriminator="type")]
_user_event: TypeAdapter[UserServerEvent] = TypeAdapter(UserServerEvent)


class CallRefused(Exception):
    """The server answered a call frame with an ``error`` (``error.code``:
    ``forbidden``, ``rate_limited``, ``unknown_call``, ...)."""

    def __init__(self, error: ErrorPayload) -> None:
        super().__init__(f"{error.code.value}: {error.message}")
        self.error = error


class CallClient:
    """A device of the token's user, reconnecting on drops.

    ``base_url`` is the server's ``http(s)://`` or ``ws(s)://`` origin."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        reconnect: bool = True,
        max_attempts: int | None = None,
        initial_delay: float = 0.2,
        max_delay: float = 5.0,
        open_timeout: float = 5.0,
        ping_interval: float = 20.0,
    ) -> None:
        self.ws_base = ws_origin(base_url)
        # A device waits for calls for hours: pings keep the server's idle
        # timeout (SBD_IDLE_TIMEOUT, a 4408 close) away. Their pongs are not
        # passed on.
        self.ping_interval = ping_interval
        self.token = token
        self.reconnect = reconnect
        self.max_attempts = max_attempts
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.open_timeout = open_timeout
        self.ready: ReadyPayload | None = None
        self.reconnects = 0
        self._events: asyncio.Queue[UserServerEvent | SignalingClosed] = asyncio.Queue()
        self._ws: ClientConnection | None = None
        self._open = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closed: SignalingClosed | None = None
        self._first_ready: asyncio.Future[ReadyPayload] | None = None
        self._waiters: list[tuple[Callable[[UserServerEvent], bool], asyncio.Future[Any]]] = []
        self._refs = itertools.count(1)

    # --- lifecycle -----------------------------------------------------------

    async def connect(self) -> ReadyPayload:
        """Open the user socket; the first ``ready``, or :class:`SignalingClosed`."""
        if self._runner is not None:
            raise RuntimeError("connect() may be called once")
        self._first_ready = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._loop(), name="user socket")
        return await self._first_ready

    async def close(self) -> None:
        """Send ``leave`` and close (this device's ringing calls stop)."""
        ws = self._ws
        if ws is not None and self._open.is_set():
            with contextlib.suppress(ConnectionClosed):
                await ws.send(b'{"type":"leave"}', text=True)
        self._finish(SignalingClosed(1000, "closed by client"))
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if ws is not None:
            await ws.close()

    async def drop(self) -> None:
        """Cut the transport as a network failure would; the client reconnects."""
        if self._ws is not None:
            self._open.clear()
            self._ws.transport.abort()

    async def wait_open(self, timeout: float | None = None) -> ReadyPayload:
        async with asyncio.timeout(timeout):
            await self._open.wait()
        assert self.ready is not None
        return self.ready

    # --- receiving -------------------------------------------------------------

    async def recv(self, timeout: float | None = None) -> UserServerEvent:
        """The next server frame; :class:`SignalingClosed` once it is over."""
        async with asyncio.timeout(timeout):
            event = await self._events.get()
        if isinstance(event, SignalingClosed):
            self._events.put_nowait(event)
            raise event
        return event

    async def wait_for(self, kind: str, timeout: float = 10.0) -> UserServerEvent:
        """The next frame of type ``kind``; frames before it are dropped."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.recv()
                if event.type == kind:
                    return event

    def __aiter__(self) -> AsyncIterator[UserServerEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[UserServerEvent]:
        while True:
            try:
                yield await self.recv()
            except SignalingClosed:
                return

    # --- calls -------------------------------------------------------------------

    async def call(
        self, to_user: str, room_id: str, data: Any = None, timeout: float = 10.0
    ) -> CallStatePayload:
        """Ring every device of ``to_user``; the ``ringing`` state (its
        ``call_id``, ``devices``), or :class:`CallRefused`."""
        ref = f"call-{next(self._refs)}"

        def reply(event: UserServerEvent) -> bool:
            return isinstance(event, CallStateMessage) and event.ref == ref

        message = {"to_user": to_user, "room_id": room_id, "data": data}
        return await self._request({"type": "call", "id": ref, "payload": message}, reply, timeout)

    async def accept(self, call_id: str, timeout: float = 10.0) -> CallStatePayload:
        """Answer yes: ``accepted`` with ``room_id`` and ``ticket`` when this
        device won; :class:`CallRefused` (``unknown_call``) when the call had
        ended (another device answered first, it was cancelled or missed)."""
        return await self._answer(call_id, True, timeout)

    async def decline(self, call_id: str, timeout: float = 10.0) -> CallStatePayload:
        return await self._answer(call_id, False, timeout)

    async def cancel(self, call_id: str, timeout: float = 10.0) -> CallStatePayload:
        """Stop ringing a call this device started: ``cancelled``."""
        ref = f"cancel-{next(self._refs)}"

        def reply(event: UserServerEvent) -> bool:
            return _state_of(event, call_id) == "cancelled"

        message = {"type": "call-cancel", "id": ref, "payload": {"call_id": call_id}}
        return await self._request(message, reply, timeout)

    async def _answer(self, call_id: str, accept: bool, timeout: float) -> CallStatePayload:
        ref = f"answer-{next(self._refs)}"
        wanted = "accepted" if accept else "declined"

        def reply(event: UserServerEvent) -> bool:
            return _state_of(event, call_id) == wanted

        message = {
            "type": "call-answer",
            "id": ref,
            "payload": {"call_id": call_id, "accept": accept},
        }
        return await self._request(message, reply, timeout)

    async def _request(
        self,
        message: dict[str, Any],
        reply: Callable[[UserServerEvent], bool],
        timeout: float,
    ) -> CallStatePayload:
        """Send ``message``; the payload of the first frame ``reply`` picks, or
        :class:`CallRefused` for an ``error`` naming the message's id."""
        ref = message["id"]

        def answers(event: UserServerEvent) -> bool:
            refused = isinstance(event, ErrorMessage) and event.payload.ref == ref
            return refused or reply(event)

        waiter: asyncio.Future[UserServerEvent] = asyncio.get_running_loop().create_future()
        entry = (answers, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                ws = self._ws if self._open.is_set() else None
                if ws is None:
                    await self.wait_open()
                    ws = self._ws
                assert ws is not None
                await ws.send(orjson.dumps(message), text=True)
                event = await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)
        if isinstance(event, ErrorMessage):
            raise CallRefused(event.payload)
        assert isinstance(event, CallStateMessage)
        return event.payload

    # --- the connection loop ---------------------------------------------------

    async def _loop(self) -> None:
        attempts = 0
        while self._closed is None:
            code, reason, opened = await self._session()
            if self._closed is not None:
                return
            if opened:
                attempts = 0
            if code in FATAL_CLOSE_CODES or not self.reconnect:
                self._finish(SignalingClosed(code, reason))
                return
            attempts += 1
            if self.max_attempts is not None and attempts > self.max_attempts:
                self._finish(SignalingClosed(code, f"gave up after {attempts - 1} attempts"))
                return
            self.reconnects += 1
            ceiling = min(self.max_delay, self.initial_delay * 2.0 ** (attempts - 1))
            await asyncio.sleep(ceiling / 2 + random.random() * ceiling / 2)

    async def _session(self) -> tuple[int, str, bool]:
        """One WebSocket connection; returns (close code, reason, got ready)."""
        url = f"{self.ws_base}/ws/user?{urlencode({'token': self.token})}"
        try:
            ws = await websockets.connect(url, open_timeout=self.open_timeout, max_size=None)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            return ABNORMAL_CLOSURE, str(exc), False
        self._ws = ws
        opened = False
        keepalive = asyncio.create_task(self._ping_forever(ws), name="user socket keepalive")
        try:
            async for frame in ws:
                try:
                    event = _user_event.validate_python(orjson.loads(frame))
                except ValidationError:
                    logger.warning("ignoring unexpected frame: %.200r", frame)
                    continue
                if isinstance(event, ReadyMessage):
                    opened = True
                    self._on_ready(event.payload)
                elif isinstance(event, PongMessage):
                    continue
                self._answer_waiters(event)
                self._events.put_nowait(event)
        except ConnectionClosed:
            pass
        finally:
            keepalive.cancel()
            self._open.clear()
            self._ws = None
        code = ws.close_code if ws.close_code is not None else ABNORMAL_CLOSURE
        return code, ws.close_reason or "", opened

    async def _ping_forever(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.ping_interval)
                await ws.send(b'{"type":"ping"}', text=True)

    def _on_ready(self, ready: ReadyPayload) -> None:
        self.ready = ready
        self._open.set()
        if self._first_ready is not None and not self._first_ready.done():
            self._first_ready.set_result(ready)

    def _answer_waiters(self, event: UserServerEvent) -> None:
        for answers, waiter in self._waiters:
            if not waiter.done() and answers(event):
                waiter.set_result(event)

    def _finish(self, closed: SignalingClosed) -> None:
        if self._closed is not None:
            return
        self._closed = closed
        self._events.put_nowait(closed)
        if self._first_ready is not None and not self._first_ready.done():
            self._first_ready.set_exception(closed)
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(closed)


def _state_of(event: UserServerEvent, call_id: str) -> str | None:
    """The state a ``call-state`` frame gives ``call_id``, else None."""
    if isinstance(event, CallStateMessage) and event.payload.call_id == call_id:
        return event.payload.state
    return None
