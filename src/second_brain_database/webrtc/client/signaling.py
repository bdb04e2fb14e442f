"""An asyncio client for the signaling protocol (docs/protocol.md).

One :class:`SignalingClient` is one peer in one room. Frames from the server
come out of :meth:`SignalingClient.recv` (or ``async for``) as the Pydantic
models of :mod:`second_brain_database.webrtc.schemas`; messages go in as
those models or as plain dicts. When the connection drops it reconnects by
itself with ``resume=``, so the session (peer id, messages sent to it while
away) survives; a resumed session shows up as a fresh ``welcome`` carrying
the same peer id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import websockets
from pydantic import BaseModel, TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from second_brain_database.webrtc.schemas import (
    CloseCode,
    Participant,
    ServerFrame,
    WelcomeMessage,
    WelcomePayload,
)

logger = logging.getLogger(__name__)

ServerEvent = ServerFrame
_server_event: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)

# Closes that end the session for good; every other one is worth a resume.
FATAL_CLOSE_CODES = frozenset(
    {
        CloseCode.NORMAL,
        CloseCode.POLICY_VIOLATION,
        CloseCode.UNAUTHORIZED,
        CloseCode.ROOM_FULL,
        CloseCode.INVALID_ROOM,
        CloseCode.IDLE,
        CloseCode.SESSION_REPLACED,
    }
)
ABNORMAL_CLOSURE = 1006
OUTBOX_LIMIT = 512


def parse_server_frame(frame: str | bytes) -> ServerEvent:
    """One server frame as its typed model (raises ``pydantic.ValidationError``)."""
    return _server_event.validate_python(orjson.loads(frame))


class TicketRefused(Exception):
    """The server would not give this token a ticket for the room."""


class SignalingClosed(Exception):
    """The session ended and will not come back (``code`` is the close code)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"signaling closed: {code} {reason}".strip())
        self.code = code
        self.reason = reason


class SignalingClient:
    """A peer's connection to one room, reconnecting (and resuming) on drops.

    ``base_url`` is the server's ``http(s)://`` or ``ws(s)://`` origin.
    """

    def __init__(
        self,
        base_url: str,
        room: str,
        token: str,
        *,
        reconnect: bool = True,
        max_attempts: int | None = None,
        initial_delay: float = 0.2,
        max_delay: float = 5.0,
        open_timeout: float = 5.0,
        use_tickets: bool = True,
        ticket: str | None = None,
    ) -> None:
        self.ws_base = ws_origin(base_url)
        self.http_base = self.ws_base.replace("ws", "http", 1)
        self.use_tickets = use_tickets
        # A ticket given up front (the accepted side of a call) opens the
        # first connection; reconnects use the token as usual.
        self._ticket = ticket
        self.room = room
        self.token = token
        self.reconnect = reconnect
        self.max_attempts = max_attempts
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.open_timeout = open_timeout

        self.welcome: WelcomePayload | None = None
        self.resume_token: str | None = None
        self.reconnects = 0
        self._events: asyncio.Queue[ServerEvent | SignalingClosed] = asyncio.Queue()
        self._ws: ClientConnection | None = None
        self._session_open = asyncio.Event()
        self._outbox: deque[bytes] = deque(maxlen=OUTBOX_LIMIT)
        self._runner: asyncio.Task[None] | None = None
        self._closed: SignalingClosed | None = None
        self._first_welcome: asyncio.Future[WelcomePayload] | None = None

    # --- lifecycle -----------------------------------------------------------

    async def connect(self) -> WelcomePayload:
        """Join the room; returns the first ``welcome`` or raises :class:`SignalingClosed`."""
        if self._runner is not None:
            raise RuntimeError("connect() may be called once")
        self._first_welcome = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(), name=f"signaling {self.room}")
        return await self._first_welcome

    async def leave(self) -> None:
        """Leave on purpose (others see ``user-left`` at once) and close."""
        if self._ws is not None and self._session_open.is_set():
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(b'{"type":"leave"}', text=True)
        await self.close()

    async def close(self) -> None:
        """Stop without ``leave`` after the transport closes (the session may
        still be resumed by someone holding :attr:`resume_token`)."""
        self._finish(SignalingClosed(CloseCode.NORMAL, "closed by client"))
        ws = self._ws  # the runner forgets it when cancelled
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if ws is not None:
            await ws.close()

    async def drop(self) -> None:
        """Cut the transport as a network failure would; the client resumes.
        :meth:`wait_open` then waits for the session to be back."""
        if self._ws is not None:
            self._session_open.clear()
            self._ws.transport.abort()

    async def wait_open(self, timeout: float | None = None) -> WelcomePayload:
        """Wait until joined and connected (again, after a drop)."""
        async with asyncio.timeout(timeout):
            await self._session_open.wait()
        assert self.welcome is not None  # set before the session opens
        return self.welcome

    @property
    def peer_id(self) -> str:
        if self.welcome is None:
            raise RuntimeError("not joined yet")
        return self.welcome.peer_id

    @property
    def is_open(self) -> bool:
        """Joined and connected now (false while reconnecting)."""
        return self._session_open.is_set()

    @property
    def participants(self) -> list[Participant]:
        return [] if self.welcome is None else self.welcome.participants

    @property
    def closed(self) -> SignalingClosed | None:
        return self._closed

    # --- receiving -------------------------------------------------------------

    async def recv(self, timeout: float | None = None) -> ServerEvent:
        """The next server frame; raises :class:`SignalingClosed` once the
        session is over and ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            event = await self._events.get()
        if isinstance(event, SignalingClosed):
            self._events.put_nowait(event)  # every later recv() raises too
            raise event
        return event

    async def wait_for(self, kind: str, timeout: float = 10.0) -> ServerEvent:
        """The next frame of type ``kind``; frames before it are dropped."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.recv()
                if event.type == kind:
                    return event

    def __aiter__(self) -> AsyncIterator[ServerEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ServerEvent]:
        while True:
            try:
                yield await self.recv()
            except SignalingClosed:
                return

    # --- sending ---------------------------------------------------------------

    async def send(self, message: BaseModel | dict[str, Any]) -> None:
        """Send a client message. While reconnecting it waits in an outbox
        and goes out once the session is resumed (dropped if it is not)."""
        if isinstance(message, BaseModel):
            data = orjson.dumps(message.model_dump(mode="json", exclude_none=True, by_alias=True))
        else:
            data = orjson.dumps(message)
        if self._closed is not None:
            raise self._closed
        ws = self._ws
        if ws is None or not self._session_open.is_set():
            self._outbox.append(data)
            return
        try:
            await ws.send(data, text=True)
        except ConnectionClosed:
            self._outbox.append(data)

    async def offer(self, to: str | None, sdp: str) -> None:
        await self.send({"type": "offer", "to": to, "payload": {"type": "offer", "sdp": sdp}})

    async def answer(self, to: str | None, sdp: str) -> None:
        await self.send({"type": "answer", "to": to, "payload": {"type": "answer", "sdp": sdp}})

    async def ice_candidate(
        self, to: str | None, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None
    ) -> None:
        """``candidate`` is the ``candidate:...`` line; ``""`` is end-of-candidates."""
        payload = {"candidate": candidate, "sdpMid": sdp_mid, "sdpMLineIndex": sdp_mline_index}
        await self.send({"type": "ice-candidate", "to": to, "payload": payload})

    async def media_state(self, **state: bool) -> None:
        await self.send({"type": "media-state", "payload": state})

    async def app(self, payload: Any, to: str | None = None) -> None:
        await self.send({"type": "app", "to": to, "payload": payload})

    async def call_setup(
        self, outcome: str, setup_ms: float, candidate_type: str | None = None
    ) -> None:
        """Call-setup telemetry of one peer connection (docs/protocol.md)."""
        payload = {"outcome": outcome, "setup_ms": setup_ms, "candidate_type": candidate_type}
        await self.send({"type": "call-setup", "payload": payload})

    async def ping(self) -> None:
        await self.send({"type": "ping"})

    async def refresh(self, token: str) -> None:
        self.token = token
        await self.send({"type": "refresh", "payload": {"token": token}})

    async def kick(self, peer_id: str) -> None:
        await self.send({"type": "kick", "payload": {"peer_id": peer_id}})

    async def call(self, to_user: str, room_id: str, data: Any = None, ref: str = "call") -> None:
        """Ring ``to_user`` from this room socket; ``call-state`` frames
        (``ringing`` with ``ref``, then how it ended) come out of :meth:`recv`."""
        payload = {"to_user": to_user, "room_id": room_id, "data": data}
        await self.send({"type": "call", "id": ref, "payload": payload})

    async def cancel_call(self, call_id: str) -> None:
        await self.send({"type": "call-cancel", "payload": {"call_id": call_id}})

    # --- the connection loop ---------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._loop()
        except Exception as exc:
            # A bug must not leave recv() waiting forever: end the session.
            logger.exception("signaling client failed")
            self._finish(SignalingClosed(ABNORMAL_CLOSURE, f"client error: {exc!r}"))

    async def _loop(self) -> None:
        attempts = 0
        while self._closed is None:
            resuming = self.resume_token is not None
            code, reason, welcomed = await self._session()
            if self._closed is not None:
                return
            if code == CloseCode.UNAUTHORIZED and resuming and not welcomed:
                # The old session is gone (expired or never existed here):
                # start a new one; a bad token then ends it for good.
                self.resume_token = None
                continue
            if welcomed:
                attempts = 0
            if code in FATAL_CLOSE_CODES or not self.reconnect:
                self._finish(SignalingClosed(code, reason))
                return
            attempts += 1
            if self.max_attempts is not None and attempts > self.max_attempts:
                self._finish(SignalingClosed(code, f"gave up after {attempts - 1} attempts"))
                return
            self.reconnects += 1
            await asyncio.sleep(self._delay(attempts, code))

    async def _credential(self) -> dict[str, str]:
        """``ticket=`` for this connection (the token stays out of the URL),
        or ``token=`` where the server has no ticket endpoint."""
        if self._ticket is not None:
            ticket, self._ticket = self._ticket, None
            return {"ticket": ticket}
        if not self.use_tickets:
            return {"token": self.token}
        async with httpx.AsyncClient(base_url=self.http_base, timeout=self.open_timeout) as http:
            response = await http.post(
                "/api/v1/webrtc/ticket",
                json={"room_id": self.room},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        if response.status_code == 404:
            return {"token": self.token}
        if response.status_code in (401, 403):
            raise TicketRefused(response.json().get("detail", "token refused"))
        response.raise_for_status()
        return {"ticket": response.json()["ticket"]}

    async def _session(self) -> tuple[int, str, bool]:
        """One WebSocket connection; returns (close code, reason, welcomed)."""
        try:
            params = await self._credential()
        except TicketRefused as refused:
            return CloseCode.UNAUTHORIZED, str(refused), False
        except httpx.HTTPError as exc:
            return ABNORMAL_CLOSURE, f"ticket request failed: {exc}", False
        if self.resume_token is not None:
            params["resume"] = self.resume_token
        url = f"{self.ws_base}/ws/webrtc/{self.room}?{urlencode(params)}"
        welcomed = False
        try:
            ws = await websockets.connect(url, open_timeout=self.open_timeout, max_size=None)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            logger.debug("connecting to %s failed: %s", self.ws_base, exc)
            return ABNORMAL_CLOSURE, str(exc), False
        self._ws = ws
        try:
            async for frame in ws:
                try:
                    event = parse_server_frame(frame)
                except ValidationError:
                    # A type this client does not know (a newer server): skip it.
                    logger.warning("ignoring unexpected frame: %.200r", frame)
                    continue
                if isinstance(event, WelcomeMessage):
                    welcomed = True
                    previous = self.welcome
                    resumed = previous is not None and previous.peer_id == event.payload.peer_id
                    self._on_welcome(event.payload)
                    await self._flush_outbox(ws, resumed=resumed)
                self._events.put_nowait(event)
        except ConnectionClosed:
            pass
        finally:
            self._session_open.clear()
            self._ws = None
        code = ws.close_code if ws.close_code is not None else ABNORMAL_CLOSURE
        return code, ws.close_reason or "", welcomed

    def _on_welcome(self, welcome: WelcomePayload) -> None:
        self.welcome = welcome
        self.resume_token = welcome.resume_token
        self._session_open.set()
        if self._first_welcome is not None and not self._first_welcome.done():
            self._first_welcome.set_result(welcome)

    async def _flush_outbox(self, ws: ClientConnection, *, resumed: bool) -> None:
        backlog, self._outbox = list(self._outbox), deque(maxlen=OUTBOX_LIMIT)
        if not resumed:
            return  # addressed to a session that no longer exists
        for data in backlog:
            await ws.send(data, text=True)

    def _delay(self, attempts: int, code: int) -> float:
        if attempts == 1 and code in (CloseCode.GOING_AWAY, CloseCode.SERVICE_RESTART):
            return 0.0  # the server asked us to go elsewhere: do it now
        ceiling: float = min(self.max_delay, self.initial_delay * 2.0 ** (attempts - 1))
        return ceiling / 2 + random.random() * ceiling / 2

    def _finish(self, closed: SignalingClosed) -> None:
        if self._closed is not None:
            return
        self._closed = closed
        self._events.put_nowait(closed)
        if self._first_welcome is not None and not self._first_welcome.done():
            self._first_welcome.set_exception(closed)


def ws_origin(base_url: str) -> str:
    base = base_url.rstrip("/")
    if base.startswith("http"):
        return "ws" + base[len("http") :]
    return base
