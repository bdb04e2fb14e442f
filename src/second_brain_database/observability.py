"""ASGI middleware: a request id for every HTTP request and WebSocket
handshake, and per-type counts of the frames sent to signaling clients.

The request id comes from the ``X-Request-ID`` header when the reverse proxy
set one (deploy/nginx.conf passes nginx's ``$request_id``), so one id follows
a request through the proxy log and the instance log; otherwise it is made
here. It is echoed in the response's ``X-Request-ID`` header and put on every
log line of the request (logging_setup.LogContext).

On a signaling WebSocket the first frame sent is always the ``welcome``
(PROTOCOL.md); its ``peer_id`` is bound to the connection's log context
here, so every later line of the session names the peer.

This middleware sees only frames sent through the ASGI ``send`` callable
(``--ws asgi``); the native WebSocket path (the default) bypasses ASGI
sends and counts its frames itself (webrtc/native_ws.py).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from second_brain_database.logging_setup import LogContext, new_context
from second_brain_database.webrtc import metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = b"x-request-id"
# A proxy's id is trusted only in this shape: it goes into every log line.
_VALID_ID = re.compile(rb"^[A-Za-z0-9._-]{8,64}$")


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == HEADER and _VALID_ID.match(value):
            return str(value.decode())
    return secrets.token_hex(8)


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        context = new_context(request_id)
        if kind == "http":
            await self.app(scope, receive, _with_request_id(send, request_id))
        else:
            await self.app(scope, receive, _counting_frames(send, context))


def _with_request_id(send: Send, request_id: str) -> Send:
    header = (HEADER, request_id.encode())

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), header]
        await send(message)

    return send_with_id


def _counting_frames(send: Send, context: LogContext) -> Send:
    count = metrics.count_sent_frame

    async def send_counted(message: Message) -> None:
        if message["type"] == "websocket.send":
            text = message.get("text")
            if text is not None:
                count(text)
                if text.startswith(_WELCOME):
                    context.peer_id = _peer_of_welcome(text)
        await send(message)

    return send_counted


_WELCOME = '{"type":"welcome"'


def _peer_of_welcome(frame: str) -> str | None:
    try:
        peer = orjson.loads(frame)["payload"]["peer_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return peer if isinstance(peer, str) else None
