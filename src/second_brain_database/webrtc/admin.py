"""The admin API: rooms and peers across every instance, for operators.

Every endpoint needs a bearer token with the claim ``"role": "admin"``
(``sbd token NAME --role admin``). Room listing pages through the room store
with SCAN (never KEYS), so it is safe on a busy Redis. Kicks and notices are
published to the room like any message, so they reach the instance holding
each peer. Each action is written to the ``second_brain_database.audit``
logger with who did what to which room and peer, and counted in
``sbd_admin_actions_total``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel, Field

from second_brain_database.auth.tokens import Principal
from second_brain_database.webrtc import metrics
from second_brain_database.webrtc.broker import Envelope
from second_brain_database.webrtc.dependencies import CurrentUser, Service
from second_brain_database.webrtc.schemas import (
    MAX_NOTICE_CHARS,
    ROOM_ID_PATTERN,
    NoticeMessage,
    NoticePayload,
    Participant,
    encode,
)

audit = logging.getLogger("second_brain_database.audit")

ADMIN_ROLE = "admin"
MAX_PAGE = 500

RoomId = Annotated[str, Path(pattern=ROOM_ID_PATTERN, description="room id")]
PeerIdParam = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="peer id")]


async def require_admin(user: CurrentUser) -> Principal:  # async: no worker thread
    if user.role != ADMIN_ROLE:
        metrics.AUTH_FAILURES.labels(reason="admin role required").inc()
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role required")
    return user


Admin = Annotated[Principal, Depends(require_admin)]

router = APIRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    responses={
        401: {"description": "missing, invalid or expired token"},
        403: {"description": "the token has no admin role"},
    },
)


# --- the server notice (a server-to-client message type) -------------------


# --- responses --------------------------------------------------------------


class RoomSummary(BaseModel):
    room_id: str
    participants: int


class RoomPage(BaseModel):
    rooms: list[RoomSummary]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null after the last page"
    )


class RoomDetails(BaseModel):
    room_id: str
    participants: list[Participant]


class ClosedRoom(BaseModel):
    room_id: str
    kicked: list[str]


class NoticeSent(BaseModel):
    room_id: str
    participants: int


# --- endpoints --------------------------------------------------------------


@router.get("/rooms", response_model=RoomPage)
async def list_rooms(
    service: Service,
    admin: Admin,
    cursor: Annotated[str, Query(pattern=r"^[0-9]{1,20}$")] = "0",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> RoomPage:
    """Rooms with at least one peer, with their participant counts, a page at a
    time. Follow ``next_cursor`` until it is null; like Redis SCAN, a page may
    hold more or fewer than ``limit`` rooms, and a room that exists for the
    whole walk is listed at least once."""
    rooms, next_cursor = await service.rooms.list_rooms(cursor, limit)
    return RoomPage(
        rooms=[RoomSummary(room_id=room, participants=count) for room, count in rooms],
        next_cursor=None if next_cursor == "0" else next_cursor,
    )


@router.get("/rooms/{room_id}", response_model=RoomDetails, responses={404: {}})
async def room_details(room_id: RoomId, service: Service, admin: Admin) -> RoomDetails:
    """Everyone in the room (peers waiting to resume included)."""
    return RoomDetails(room_id=room_id, participants=await _participants(service, room_id))


@router.delete(
    "/rooms/{room_id}/peers/{peer_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "no such peer in the room"}},
)
async def kick_peer(room_id: RoomId, peer_id: PeerIdParam, service: Service, admin: Admin) -> None:
    """Close the peer's connection with 4003 (it may not resume); the others
    get ``user-left``."""
    kicked = await _kick(service, room_id, peer_id)
    _audit(admin, "kick", room_id, peer_id=peer_id, outcome="done" if kicked else "not_found")
    if not kicked:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no peer {peer_id} in room {room_id}")


@router.delete("/rooms/{room_id}", response_model=ClosedRoom, responses={404: {}})
async def close_room(room_id: RoomId, service: Service, admin: Admin) -> ClosedRoom:
    """Kick every peer of the room; it ceases to exist once they are gone."""
    kicked = [
        p.peer_id
        for p in await _participants(service, room_id)
        if await _kick(service, room_id, p.peer_id)
    ]
    _audit(admin, "close_room", room_id, outcome="done", kicked=len(kicked))
    return ClosedRoom(room_id=room_id, kicked=kicked)


class NoticeRequest(BaseModel):
    message: str = Field(min_length=1, max_length=MAX_NOTICE_CHARS)
    level: Literal["info", "warning"] = "info"


@router.post(
    "/rooms/{room_id}/notices",
    response_model=NoticeSent,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {}},
)
async def send_notice(
    room_id: RoomId, body: NoticeRequest, service: Service, admin: Admin
) -> NoticeSent:
    """Send every peer of the room a ``notice`` message (server to client:
    ``{"type": "notice", "payload": {"message": "...", "level": "info"}}``)."""
    participants = await _participants(service, room_id)
    frame = encode(NoticeMessage(payload=NoticePayload(message=body.message, level=body.level)))
    await service.rooms.relay(room_id, Envelope("", "", frame.decode()))
    _audit(admin, "notice", room_id, outcome="done", level=body.level, chars=len(body.message))
    return NoticeSent(room_id=room_id, participants=len(participants))


# --- helpers ----------------------------------------------------------------


async def _participants(service: Service, room_id: str) -> list[Participant]:
    participants = await service.rooms.participants(room_id)
    if not participants:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no room {room_id} (it has no peers)")
    return participants


async def _kick(service: Service, room_id: str, peer_id: str) -> bool:
    # What a host's in-room kick does: the instance serving the peer closes it
    # with 4003 (a peer waiting to resume is removed at once); user-left follows.
    return await service.rooms.kick(room_id, peer_id)


def _audit(admin: Principal, action: str, room_id: str, **fields: object) -> None:
    metrics.ADMIN_ACTIONS.labels(action=action).inc()
    audit.info(
        "admin %s: %s on room %s%s",
        admin.user_id,
        action,
        room_id,
        f" peer {fields['peer_id']}" if "peer_id" in fields else "",
        extra={"audit": True, "actor": admin.user_id, "action": action, "room_id": room_id}
        | {("target_" + k if k == "peer_id" else k): v for k, v in fields.items()},
    )
