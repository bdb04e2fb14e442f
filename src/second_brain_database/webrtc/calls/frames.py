"""The frames of calls and user sockets, each serialized once."""

from __future__ import annotations

from typing import Any

import orjson

from second_brain_database.webrtc.calls.model import CallResult
from second_brain_database.webrtc.schemas import (
    CallStateMessage,
    CallStateName,
    CallStatePayload,
    IncomingCallMessage,
    IncomingCallPayload,
    ReadyMessage,
    ReadyPayload,
    ServerInfo,
    encode,
)


def ready(user_id: str, connection_id: str, server: ServerInfo) -> str:
    payload = ReadyPayload(user_id=user_id, connection_id=connection_id, server=server)
    return encode(ReadyMessage(payload=payload)).decode()


def incoming_call(call_id: str, from_user: str, room_id: str, name: str, data: Any) -> str:
    payload = IncomingCallPayload(call_id=call_id, room_id=room_id, name=name, data=data)
    return encode(IncomingCallMessage(from_user=from_user, payload=payload)).decode()


def call_state(
    call_id: str,
    state: CallStateName | CallResult,
    *,
    ref: str | None = None,
    devices: int | None = None,
    room_id: str | None = None,
    ticket: str | None = None,
) -> str:
    payload = CallStatePayload(
        call_id=call_id,
        state=state.value if isinstance(state, CallResult) else state,
        devices=devices,
        room_id=room_id,
        ticket=ticket,
    )
    message = CallStateMessage(ref=ref, payload=payload)
    # Only the fields that apply: no "ticket": null for the caller.
    return orjson.dumps(message.model_dump(mode="json", exclude_none=True)).decode()
