"""A call as the call store records it, how it ends, and what it reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import orjson


class CallResult(StrEnum):
    """How a ringing call ended (``call.ended``'s ``result``)."""

    ACCEPTED = "accepted"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    MISSED = "missed"


RINGING: Final = "ringing"


@dataclass(frozen=True, slots=True)
class CallerRoute:
    """Where a call's caller hears back: the user socket ``connection_id`` of
    the caller's user, or the peer ``peer_id`` of room ``room_id`` (through the
    room store, so that a peer away for a resume gets it in its mailbox)."""

    connection_id: str = ""
    room_id: str = ""
    peer_id: str = ""

    @classmethod
    def user_socket(cls, connection_id: str) -> CallerRoute:
        return cls(connection_id=connection_id)

    @classmethod
    def in_room(cls, room_id: str, peer_id: str) -> CallerRoute:
        return cls(room_id=room_id, peer_id=peer_id)

    def encode(self) -> str:
        return orjson.dumps([self.connection_id, self.room_id, self.peer_id]).decode()

    @classmethod
    def decode(cls, text: str | bytes) -> CallerRoute:
        connection_id, room_id, peer_id = orjson.loads(text)
        return cls(str(connection_id), str(room_id), str(peer_id))


@dataclass(frozen=True, slots=True)
class Call:
    call_id: str
    from_user: str
    to_user: str
    room_id: str
    route: CallerRoute
    deadline: float
    """Wall-clock time (``time.time()``) at which it is ``missed``."""
    incoming: str
    """The ``incoming-call`` frame, serialized once: the same text for every
    device, the ones that connect while it rings included."""
    state: str = RINGING
    """``ringing``, or the :class:`CallResult` it ended with."""

    def fields(self) -> dict[str, str]:
        """As stored (a Redis hash)."""
        return {
            "call_id": self.call_id,
            "from_user": self.from_user,
            "to_user": self.to_user,
            "room_id": self.room_id,
            "route": self.route.encode(),
            "deadline": repr(self.deadline),
            "incoming": self.incoming,
            "state": self.state,
        }

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Call:
        return cls(
            call_id=fields["call_id"],
            from_user=fields["from_user"],
            to_user=fields["to_user"],
            room_id=fields["room_id"],
            route=CallerRoute.decode(fields["route"]),
            deadline=float(fields["deadline"]),
            incoming=fields["incoming"],
            state=fields["state"],
        )


@dataclass(frozen=True, slots=True)
class CallEvent:
    """What a call store transition reports, in the shape of the contract's
    webhooks (``call.ringing``, ``call.ended``): made by the store with each
    transition (:class:`Transition`), the seam where a webhook outbox takes
    them (today the service logs them)."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def ringing(cls, call: Call, devices: int) -> CallEvent:
        return cls("call.ringing", {**_common(call), "devices": devices})

    @classmethod
    def ended(cls, call: Call, result: CallResult) -> CallEvent:
        return cls("call.ended", {**_common(call), "result": result.value})


def _common(call: Call) -> dict[str, Any]:
    return {
        "call_id": call.call_id,
        "from_user": call.from_user,
        "to_user": call.to_user,
        "room_id": call.room_id,
    }


@dataclass(frozen=True, slots=True)
class Transition:
    """A call store transition: the call (as it was before an ending), what
    it reports, and for a start the user sockets it rings."""

    call: Call
    event: CallEvent
    devices: int = 0


class TooManyCalls(Exception):
    """The caller already has ``SBD_CALL_MAX_RINGING`` calls ringing."""
