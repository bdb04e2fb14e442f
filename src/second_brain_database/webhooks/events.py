"""The room events a webhook carries (PROTOCOL.md, "Webhooks"), made where
the room state changes: each room store writes them in the same step as the
change (docs/webhooks.md)."""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from second_brain_database.webrtc.broker.model import Member


class LeaveReason(StrEnum):
    """Why a peer is gone for good: the ``reason`` of the ``participant.left``
    webhook (PROTOCOL.md, "Webhooks")."""

    LEAVE = "leave"
    """It sent ``leave``."""
    KICKED = "kicked"
    """A host or an operator removed it."""
    EXPIRED = "expired"
    """Its token expired."""
    TIMEOUT = "timeout"
    """Its resume window ran out."""
    REAPED = "reaped"
    """Its instance died."""
    CLOSED = "closed"
    """Any other ending (rate limit, idleness, no resume configured)."""


class EventType(StrEnum):
    ROOM_STARTED = "room.started"
    PARTICIPANT_JOINED = "participant.joined"
    PARTICIPANT_LEFT = "participant.left"
    ROOM_FINISHED = "room.finished"
    CALL_RINGING = "call.ringing"
    CALL_ENDED = "call.ended"


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One event as it waits in the outbox and is sent: ``body`` is the JSON
    request body, signed and sent as is on every attempt."""

    id: str
    """The ``webhook-id``: the same on every retry, unique per event."""
    type: str
    at: float
    """Unix time it happened."""
    body: bytes


def new_event_id() -> str:
    """``msg_`` and 100 random bits, lowercase base32 (Standard Webhooks ids
    conventionally carry a ``msg_`` prefix)."""
    return "msg_" + base64.b32encode(secrets.token_bytes(10)).decode().lower()


def make_event(kind: EventType, data: dict[str, object], at: float | None = None) -> WebhookEvent:
    at = time.time() if at is None else at
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    stamp = stamp.replace("+00:00", "Z")
    body = orjson.dumps({"type": kind.value, "timestamp": stamp, "data": data})
    return WebhookEvent(new_event_id(), kind.value, at, body)


def room_started(room_id: str) -> WebhookEvent:
    return make_event(EventType.ROOM_STARTED, {"room_id": room_id})


def participant_joined(room_id: str, member: Member) -> WebhookEvent:
    return make_event(
        EventType.PARTICIPANT_JOINED,
        {
            "room_id": room_id,
            "peer_id": member.peer_id,
            "user_id": member.user_id,
            "name": member.name,
        },
    )


def participant_left(room_id: str, member: Member, reason: LeaveReason) -> WebhookEvent:
    return make_event(
        EventType.PARTICIPANT_LEFT,
        {
            "room_id": room_id,
            "peer_id": member.peer_id,
            "user_id": member.user_id,
            "reason": reason.value,
        },
    )


def room_finished(room_id: str) -> WebhookEvent:
    return make_event(EventType.ROOM_FINISHED, {"room_id": room_id})
