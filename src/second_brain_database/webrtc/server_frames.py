"""Server frames, each serialized once for all of its receivers."""

from __future__ import annotations

import time
from typing import Any

import orjson

from second_brain_database.webrtc.broker.model import Envelope, Member
from second_brain_database.webrtc.schemas import (
    Participant,
    UserJoinedMessage,
    UserJoinedPayload,
    UserLeftMessage,
    UserLeftPayload,
    WelcomeMessage,
    WelcomePayload,
    encode,
)


def user_joined(member: Member) -> Envelope:
    payload = UserJoinedPayload(peer_id=member.peer_id, user_id=member.user_id, name=member.name)
    frame = encode(UserJoinedMessage(payload=payload)).decode()
    return Envelope(to="", exclude=member.peer_id, frame=frame)


def user_left(member: Member) -> Envelope:
    payload = UserLeftPayload(peer_id=member.peer_id, user_id=member.user_id)
    frame = encode(UserLeftMessage(payload=payload)).decode()
    return Envelope(to="", exclude=member.peer_id, frame=frame)


def welcome(
    member: Member, room_id: str, resume_token: str, participants: list[Participant]
) -> str:
    payload = WelcomePayload(
        peer_id=member.peer_id,
        user_id=member.user_id,
        room_id=room_id,
        resume_token=resume_token,
        participants=participants,
    )
    return encode(WelcomeMessage(payload=payload)).decode()


def relayed(kind: str, sender: Member, to: str | None, payload: Any) -> Envelope:
    """A client message as its receivers see it, stamped with its sender."""
    frame = orjson.dumps(
        {
            "type": kind,
            "from": sender.peer_id,
            "from_user": sender.user_id,
            "to": to,
            "payload": payload,
        }
    ).decode()
    return Envelope(to=to or "", exclude=sender.peer_id, frame=frame, sent_at=time.time())
