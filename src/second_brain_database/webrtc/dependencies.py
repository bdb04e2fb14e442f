"""Request dependencies: the running service, and who is calling.

WebSocket rejections are sent as close frames after ``accept()``, since a
browser cannot read the HTTP 403 that a close before accept turns into.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from second_brain_database.auth.tokens import InvalidToken, Principal
from second_brain_database.webrtc import metrics
from second_brain_database.webrtc.schemas import ROOM_ID_RE, CloseCode
from second_brain_database.webrtc.service import SignalingService

_bearer = HTTPBearer(auto_error=False)


def get_service(connection: HTTPConnection) -> SignalingService:
    service: SignalingService = connection.app.state.signaling
    return service


Service = Annotated[SignalingService, Depends(get_service)]


async def get_current_user(
    service: Service,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller of a REST endpoint, from ``Authorization: Bearer <token>``."""
    try:
        return service.tokens.verify(credentials.credentials if credentials else None)
    except InvalidToken as exc:
        metrics.AUTH_FAILURES.labels(reason=exc.reason).inc()
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, exc.reason, headers={"WWW-Authenticate": "Bearer"}
        ) from None


CurrentUser = Annotated[Principal, Depends(get_current_user)]


def require_room_access(room_id: str, user: CurrentUser) -> Principal:
    if not ROOM_ID_RE.fullmatch(room_id):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid room id")
    if not user.may_join(room_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "token not valid for this room")
    return user


async def get_current_user_ws(
    websocket: WebSocket, room_id: str, service: Service, token: str | None = None
) -> Principal | None:
    """Admit a signaling WebSocket: origin, room id, token, room claim, in that
    order. Returns the caller, or None once the socket is closed with the
    contract's code (1008, 4400 or 4003) and a short reason."""
    settings = service.settings
    origin = websocket.headers.get("origin")
    if settings.allowed_origins and origin not in settings.allowed_origins:
        await _reject(websocket, CloseCode.POLICY_VIOLATION, "origin not allowed")
        return None
    if service.draining:
        await _reject(websocket, CloseCode.SERVICE_RESTART, "server is restarting")
        return None
    if not ROOM_ID_RE.fullmatch(room_id):
        await _reject(websocket, CloseCode.INVALID_ROOM, "invalid room id")
        return None
    try:
        principal = service.tokens.verify(token)
    except InvalidToken as exc:
        metrics.AUTH_FAILURES.labels(reason=exc.reason).inc()
        await _reject(websocket, CloseCode.UNAUTHORIZED, exc.reason)
        return None
    if not principal.may_join(room_id):
        metrics.AUTH_FAILURES.labels(reason="room not allowed").inc()
        await _reject(websocket, CloseCode.UNAUTHORIZED, "token not valid for this room")
        return None
    await websocket.accept()
    return principal


async def _reject(websocket: WebSocket, code: int, reason: str) -> None:
    await websocket.accept()
    await websocket.close(code, reason)
