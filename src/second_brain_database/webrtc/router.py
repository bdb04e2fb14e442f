"""The signaling endpoints: the room WebSocket and its REST companions."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Response, WebSocket
from pydantic import BaseModel

from second_brain_database.auth.tokens import Principal
from second_brain_database.logging_setup import bind_session
from second_brain_database.webrtc import metrics
from second_brain_database.webrtc.dependencies import (
    CurrentUser,
    Service,
    get_current_user_ws,
    require_room_access,
)
from second_brain_database.webrtc.schemas import Participant
from second_brain_database.webrtc.turn import RtcConfiguration, rtc_configuration

logger = logging.getLogger(__name__)
router = APIRouter(tags=["webrtc"])


class ParticipantsResponse(BaseModel):
    room_id: str
    participants: list[Participant]


@router.websocket("/ws/webrtc/{room_id}")
async def signaling_socket(
    websocket: WebSocket,
    room_id: str,
    service: Service,
    principal: Annotated[Principal | None, Depends(get_current_user_ws)],
    resume: str | None = None,
) -> None:
    """Join ``room_id`` and exchange signaling messages (docs/protocol.md)."""
    if principal is None:
        return
    bind_session(room_id=room_id, user_id=principal.user_id)
    metrics.CONNECTIONS_OPENED.inc()
    metrics.CONNECTIONS.inc()
    try:
        await service.manager.run(websocket, room_id, principal, resume)
    finally:
        metrics.CONNECTIONS.dec()
        # Carries room, peer and user ids (logging_setup.LogContext).
        logger.info("signaling session ended")


@router.get(
    "/api/v1/webrtc/config", response_model=RtcConfiguration, response_model_exclude_none=True
)
async def webrtc_config(
    user: CurrentUser, service: Service, response: Response
) -> RtcConfiguration:
    """An RTCConfiguration with STUN and, when configured, ephemeral TURN credentials."""
    response.headers["Cache-Control"] = "no-store"
    return rtc_configuration(service.settings, user.user_id)


@router.get("/api/v1/webrtc/rooms/{room_id}/participants", response_model=ParticipantsResponse)
async def room_participants(
    room_id: str,
    service: Service,
    _user: Annotated[Principal, Depends(require_room_access)],
) -> ParticipantsResponse:
    """Who is in the room now; an unknown room is an empty list."""
    return ParticipantsResponse(
        room_id=room_id, participants=await service.broker.participants(room_id)
    )
