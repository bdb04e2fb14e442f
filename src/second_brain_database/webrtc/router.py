"""The signaling endpoints: the room WebSocket and its REST companions."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, WebSocket, status
from pydantic import BaseModel, Field

from second_brain_database.auth.tokens import Principal
from second_brain_database.logging_setup import bind_session
from second_brain_database.webrtc import metrics, ticket_route
from second_brain_database.webrtc.broker import BrokerUnavailable, PolicyForbidden, RoomPolicy
from second_brain_database.webrtc.dependencies import (
    Admitted,
    CurrentUser,
    Service,
    admit_user_websocket,
    admit_websocket,
    require_room_access,
)
from second_brain_database.webrtc.schemas import Participant
from second_brain_database.webrtc.service import SignalingService
from second_brain_database.webrtc.transport import SignalingSocket, open_socket
from second_brain_database.webrtc.turn import RtcConfiguration, rtc_configuration, with_lifetime

logger = logging.getLogger(__name__)
router = APIRouter(tags=["webrtc"])
router.include_router(ticket_route.router)


@asynccontextmanager
async def backend_errors_as_503() -> AsyncIterator[None]:
    try:
        yield
    except BrokerUnavailable:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "signaling backend unavailable, retry"
        ) from None


class ParticipantsResponse(BaseModel):
    room_id: str
    participants: list[Participant]


@router.websocket("/ws/webrtc/{room_id}")
async def signaling_socket(
    websocket: WebSocket,
    room_id: str,
    service: Service,
    admitted: Annotated[Admitted | None, Depends(admit_websocket)],
    resume: str | None = None,
) -> None:
    """Join ``room_id`` and exchange signaling messages (docs/protocol.md)."""
    if admitted is None:
        return
    socket = open_socket(websocket, service.settings.send_queue_size)
    await socket.run_session(_session(service, socket, room_id, admitted, resume))


async def _session(
    service: SignalingService,
    socket: SignalingSocket,
    room_id: str,
    admitted: Admitted,
    resume: str | None,
) -> None:
    bind_session(room_id=room_id, user_id=admitted.principal.user_id)
    async with _counted(service, admitted):
        await service.manager.run(socket, room_id, admitted.principal, resume)


@router.websocket("/ws/user")
async def user_socket(
    websocket: WebSocket,
    service: Service,
    admitted: Annotated[Admitted | None, Depends(admit_user_websocket)],
) -> None:
    """A device of the token's user, reachable for calls (docs/protocol.md, "Calls")."""
    if admitted is None:
        return
    socket = open_socket(websocket, service.settings.send_queue_size)
    await socket.run_session(_user_session(service, socket, admitted))


async def _user_session(
    service: SignalingService, socket: SignalingSocket, admitted: Admitted
) -> None:
    bind_session(user_id=admitted.principal.user_id)
    async with _counted(service, admitted):
        await service.user_sockets.run(socket, admitted.principal)


@asynccontextmanager
async def _counted(service: SignalingService, admitted: Admitted) -> AsyncIterator[None]:
    """A connection's life in the gauges, and its slot in the per-user cap."""
    metrics.CONNECTIONS_OPENED.inc()
    metrics.CONNECTIONS.inc()
    try:
        yield
    finally:
        metrics.CONNECTIONS.dec()
        await service.admission.connections.release(admitted.lease)


@router.get(
    "/api/v1/webrtc/config", response_model=RtcConfiguration, response_model_exclude_none=True
)
async def webrtc_config(
    user: CurrentUser, service: Service, response: Response
) -> RtcConfiguration:
    """An RTCConfiguration with STUN and, when configured, ephemeral TURN
    credentials; relay candidates only for a token with ``"ice": "relay"``."""
    response.headers["Cache-Control"] = "no-store"
    now = time.time()
    config = rtc_configuration(
        service.settings, user.user_id, now=now, token_expires_at=user.expires_at
    )
    return with_lifetime(config, now).model_copy(update={"iceTransportPolicy": user.ice_policy})


@router.get("/api/v1/webrtc/rooms/{room_id}/participants", response_model=ParticipantsResponse)
async def room_participants(
    room_id: str,
    service: Service,
    _user: Annotated[Principal, Depends(require_room_access)],
) -> ParticipantsResponse:
    """Who is in the room now; an unknown room is an empty list."""
    async with backend_errors_as_503():
        participants = await service.rooms.participants(room_id)
    return ParticipantsResponse(room_id=room_id, participants=participants)


class RoomPolicyUpdate(BaseModel):
    """What a host sets: a guest list (None: anyone with a token for the room)
    and whether the room is locked against new peers."""

    invited_users: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None, max_length=1000
    )
    locked: bool = False


class RoomPolicyResponse(BaseModel):
    room_id: str
    owner: str | None
    locked: bool
    invited_users: list[str] | None


def _policy_response(room_id: str, policy: RoomPolicy) -> RoomPolicyResponse:
    invited = list(policy.invited) if policy.invited is not None else None
    return RoomPolicyResponse(
        room_id=room_id, owner=policy.owner, locked=policy.locked, invited_users=invited
    )


@router.put("/api/v1/webrtc/rooms/{room_id}/policy", response_model=RoomPolicyResponse)
async def set_room_policy(
    room_id: str,
    update: RoomPolicyUpdate,
    service: Service,
    user: Annotated[Principal, Depends(require_room_access)],
) -> RoomPolicyResponse:
    """Restrict a room to a guest list, or lock it (hosts and admins only).

    The first host to set a policy owns it; the owner and admins pass their
    own locks and lists. Peers already in the room stay."""
    if not user.is_host:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only a host may restrict a room")
    try:
        async with backend_errors_as_503():
            policy = await service.rooms.set_policy(
                room_id,
                user.user_id,
                locked=update.locked,
                invited=update.invited_users,
                privileged=user.role == "admin",
            )
    except PolicyForbidden:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "another host owns this room") from None
    logger.info("room policy set", extra={"room_id": room_id, "locked": policy.locked})
    return _policy_response(room_id, policy)


@router.get("/api/v1/webrtc/rooms/{room_id}/policy", response_model=RoomPolicyResponse)
async def get_room_policy(
    room_id: str,
    service: Service,
    _user: Annotated[Principal, Depends(require_room_access)],
) -> RoomPolicyResponse:
    async with backend_errors_as_503():
        policy = await service.rooms.get_policy(room_id)
    return _policy_response(room_id, policy)
