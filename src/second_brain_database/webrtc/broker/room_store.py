"""Where room state lives: members, the session serving each, resume
secrets, mailboxes, media states, policies.

Each connection is a *session* with its own id (its ``owner`` token). A peer
is served by one session at a time; when that connection ends without
``leave`` the peer waits, for ``SBD_RESUME_TTL`` seconds, for a new session
to resume it, and messages to it go to its mailbox meanwhile. The states a
peer goes through, and every transition, are the table in
docs/architecture.md ("The room state machine"), which tests/test_room_store.py
runs against both stores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from second_brain_database.webhooks.events import LeaveReason
from second_brain_database.webhooks.outbox import Outbox
from second_brain_database.webrtc.broker.model import (
    Envelope,
    Member,
    Resumed,
    RoomPolicy,
)
from second_brain_database.webrtc.schemas import Participant


class RoomStore(ABC):
    """What the connection manager and the HTTP API need of room state."""

    def __init__(self, *, resume_ttl: float, outbox: Outbox | None) -> None:
        self.resume_ttl = resume_ttl
        self.outbox = outbox
        """Where this store writes webhook events (None: webhooks are off)."""

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def disconnect(self) -> None: ...

    @abstractmethod
    async def ready(self) -> bool:
        """Whether the store can serve now (health checks)."""

    @abstractmethod
    async def join(
        self,
        room_id: str,
        member: Member,
        owner: str,
        capacity: int,
        resume_secret: str,
        *,
        privileged: bool = False,
    ) -> list[Participant]:
        """Add ``member``, served by session ``owner``, unless the room is full
        (:class:`RoomFull`) or its policy refuses the user (:class:`JoinRefused`;
        ``privileged`` admins pass); announce it with ``user-joined``; return
        the participants that were already there.

        With webhooks configured, every change that admits or removes a peer
        for good writes its events (``room.started``, ``participant.joined``,
        ``participant.left``, ``room.finished``) in the same step as the
        change (docs/webhooks.md)."""

    @abstractmethod
    async def set_policy(
        self,
        room_id: str,
        user_id: str,
        *,
        locked: bool,
        invited: list[str] | None,
        privileged: bool = False,
    ) -> RoomPolicy:
        """Restrict or lock the room. The first host to do so owns its policy;
        anyone else but an admin (``privileged``) gets :class:`PolicyForbidden`.
        Policies expire POLICY_TTL_S after their last change."""

    @abstractmethod
    async def get_policy(self, room_id: str) -> RoomPolicy: ...

    @abstractmethod
    async def reregister(
        self, room_id: str, member: Member, owner: str, resume_secret: str
    ) -> bool:
        """Put a live local peer back if the store lost it, announcing it with
        ``user-joined``; True when it was missing."""

    @abstractmethod
    async def leave(
        self, room_id: str, member: Member, owner: str, reason: LeaveReason = LeaveReason.LEAVE
    ) -> bool:
        """Remove the peer while ``owner`` still serves it and announce
        ``user-left`` (and, with webhooks, ``participant.left`` with
        ``reason``); False when it was not (or no longer) ``owner``'s."""

    @abstractmethod
    async def away(self, room_id: str, member: Member, owner: str) -> bool:
        """``owner``'s connection ended without ``leave``: keep the peer for
        ``resume_ttl`` seconds and publish the barrier control to it. False
        when ``owner`` no longer serves the peer."""

    @abstractmethod
    async def release(self, room_id: str, member: Member, unsent: list[str]) -> None:
        """Put the frames the old session never sent at the head of the
        peer's mailbox and make the peer resumable."""

    @abstractmethod
    async def resume(
        self,
        room_id: str,
        peer_id: str,
        user_id: str,
        secret: str,
        owner: str,
        new_secret: str,
        *,
        force: bool = False,
    ) -> Resumed:
        """Hand the peer to session ``owner``. Raises :class:`ResumeRefused`,
        or :class:`ResumeBusy` while another session serves it (``force``
        takes it regardless, for an owner that died)."""

    @abstractmethod
    async def may_resume(self, room_id: str, peer_id: str, user_id: str, secret: str) -> bool:
        """Whether :meth:`resume` would take these credentials: ``peer_id`` is
        in the room, ``user_id`` is its user and ``secret`` its current resume
        secret. Reads only: checked before a resume disturbs the session that
        serves the peer."""

    @abstractmethod
    async def relay(self, room_id: str, envelope: Envelope) -> bool:
        """Deliver to the room (``to`` empty) or to one peer, into the mailbox
        of peers waiting to resume; False (nothing sent) when ``envelope.to``
        is not a member. One backend round trip."""

    @abstractmethod
    async def set_media(self, room_id: str, media: bytes, envelope: Envelope) -> None:
        """Record the media state of the envelope's sender (its ``exclude``)
        and relay the envelope with it."""

    @abstractmethod
    async def kick(self, room_id: str, peer_id: str) -> bool:
        """Remove a peer: its session is told to close (``ControlKind.KICK``),
        or, when it is waiting to resume, it is removed at once. False if not
        a member."""

    @abstractmethod
    async def participants(self, room_id: str) -> list[Participant]: ...

    @abstractmethod
    async def list_rooms(self, cursor: str, count: int) -> tuple[list[tuple[str, int]], str]:
        """One page of rooms that have members, as ``(room_id, member count)``,
        and the cursor of the next page (``"0"`` after the last). SCAN
        semantics: a page may be shorter or longer than ``count``, and a room
        that exists for the whole walk is listed at least once."""


class SynchronousRoomStore(RoomStore):
    """A store whose relaying never waits (the embedded one delivers in
    process), so a message can be relayed from a read callback."""

    @abstractmethod
    def relay_now(self, room_id: str, envelope: Envelope) -> bool:
        """:meth:`relay`, done before returning."""
