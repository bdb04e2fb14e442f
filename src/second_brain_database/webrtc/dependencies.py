"""Request dependencies: the running service, and who is calling.

WebSocket rejections are sent as close frames after ``accept()``, since a
browser cannot read the HTTP 403 that a close before accept turns into.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from second_brain_database.auth.tickets import TicketUnavailable
from second_brain_database.auth.tokens import InvalidToken, Principal
from second_brain_database.limits.connections import Lease
from second_brain_database.webrtc import metrics
from second_brain_database.webrtc.schemas import ROOM_ID_RE, CloseCode
from second_brain_database.webrtc.service import SignalingService

_bearer = HTTPBearer(auto_error=False)


# Dependencies are coroutines even when they need no await: FastAPI runs a
# plain ``def`` dependency in a worker thread, a hand-off per connection.
async def get_service(connection: HTTPConnection) -> SignalingService:
    service: SignalingService = connection.app.state.signaling
    return service


Service = Annotated[SignalingService, Depends(get_service)]


async def get_current_user(
    service: Service,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller of a REST endpoint, from ``Authorization: Bearer <token>``."""
    try:
        return await service.auth.tokens.verify_async(
            credentials.credentials if credentials else None
        )
    except InvalidToken as exc:
        metrics.AUTH_FAILURES.labels(reason=exc.detail).inc()
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, exc.reason, headers={"WWW-Authenticate": "Bearer"}
        ) from None


CurrentUser = Annotated[Principal, Depends(get_current_user)]


async def require_room_access(room_id: str, user: CurrentUser) -> Principal:
    if not ROOM_ID_RE.fullmatch(room_id):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid room id")
    if not user.may_join(room_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "token not valid for this room")
    return user


@dataclass(frozen=True, slots=True)
class Admitted:
    """An accepted signaling WebSocket's caller, and its slot in the per-user
    connection cap, which the session gives back when it ends."""

    principal: Principal
    lease: Lease


async def admit_websocket(
    websocket: WebSocket,
    room_id: str,
    service: Service,
    token: str | None = None,
    ticket: str | None = None,
) -> Admitted | None:
    """Admit a room's signaling WebSocket, or close it with the contract's code.

    Returns the caller once the socket is accepted, or None once it is closed
    (1008, 1012, 1013, 4003, 4029 or 4400, with a short reason)."""
    return await _accept(
        websocket, service, await _admit(websocket, room_id, service, token, ticket)
    )


async def admit_user_websocket(
    websocket: WebSocket, service: Service, token: str | None = None
) -> Admitted | None:
    """Admit a user socket (``/ws/user?token=``): the same checks, limits and
    close codes as a room's, without a room (so without tickets, which are
    bound to one)."""
    return await _accept(websocket, service, await _admit(websocket, None, service, token, None))


async def _accept(
    websocket: WebSocket, service: SignalingService, principal: Principal | None
) -> Admitted | None:
    """Count the admitted caller against its per-user cap, then accept."""
    if principal is None:
        return None
    connections = service.admission.connections
    lease = await connections.acquire(principal.user_id)
    if lease is None:
        metrics.ADMISSION_REFUSED.labels(limit="connections per user").inc()
        await _reject(websocket, CloseCode.RATE_LIMITED, "too many connections for this user")
        return None
    try:
        await websocket.accept()
    except BaseException:
        await connections.release(lease)
        raise
    return Admitted(principal, lease)


async def _admit(
    websocket: WebSocket,
    room_id: str | None,
    service: SignalingService,
    token: str | None,
    ticket: str | None,
) -> Principal | None:
    """Every check before the socket is accepted, cheapest first: the per-IP
    handshake limit comes before anything an attacker could make costly."""
    settings = service.settings
    if not service.admission.handshakes.allow(websocket.client.host if websocket.client else None):
        metrics.ADMISSION_REFUSED.labels(limit="handshakes per ip").inc()
        await _reject(websocket, CloseCode.RATE_LIMITED, "too many connection attempts")
        return None
    # A client that sends no Origin is not a browser (a native or Python
    # client): no web page can be riding on it, so the allowlist does not apply.
    origin = websocket.headers.get("origin")
    if settings.allowed_origins and origin is not None and origin not in settings.allowed_origins:
        await _reject(websocket, CloseCode.POLICY_VIOLATION, "origin not allowed")
        return None
    if service.draining:
        await _reject(websocket, CloseCode.SERVICE_RESTART, "server is restarting")
        return None
    if room_id is not None and not ROOM_ID_RE.fullmatch(room_id):
        await _reject(websocket, CloseCode.INVALID_ROOM, "invalid room id")
        return None
    try:
        principal = await _authenticate(service, room_id, token, ticket)
    except TicketUnavailable:
        await _reject(websocket, CloseCode.TRY_AGAIN_LATER, "ticket store unavailable, retry")
        return None
    except InvalidToken as exc:
        metrics.AUTH_FAILURES.labels(reason=exc.detail).inc()
        await _reject(websocket, CloseCode.UNAUTHORIZED, exc.reason)
        return None
    if principal.expires_at <= time.time():
        # Past ``exp`` but within the verification leeway: a session would get
        # ``welcome`` and then 4003 at once, so it is refused here instead.
        metrics.AUTH_FAILURES.labels(reason="token expired").inc()
        await _reject(websocket, CloseCode.UNAUTHORIZED, "token expired")
        return None
    if room_id is not None and not principal.may_join(room_id):
        metrics.AUTH_FAILURES.labels(reason="room not allowed").inc()
        await _reject(websocket, CloseCode.UNAUTHORIZED, "token not valid for this room")
        return None
    return principal


async def _authenticate(
    service: SignalingService, room_id: str | None, token: str | None, ticket: str | None
) -> Principal:
    if ticket is not None and room_id is not None:
        if token is not None:
            # Two credentials that may name two users: refuse the ambiguity.
            raise InvalidToken("send a token or a ticket, not both")
        return await service.auth.tickets.redeem(ticket, room_id)
    return await service.auth.tokens.verify_async(token)


async def _reject(websocket: WebSocket, code: int, reason: str) -> None:
    await websocket.accept()
    await websocket.close(code, reason)
