"""One-time WebSocket tickets, so that no long-lived JWT sits in a URL.

A browser cannot set headers on a WebSocket, so credentials end up in the
query string, where proxies and access logs keep them (OWASP WebSocket
Security Cheat Sheet). ``POST /api/v1/webrtc/ticket`` trades an access token
for a ticket that is:

- random (256 bits) and opaque: it carries nothing, the store does;
- valid for :data:`TICKET_TTL_S` seconds, and never past the token's own ``exp``;
- bound to one user and one room;
- single use, across instances: redeeming is ``GETDEL`` in Redis (or a
  ``dict.pop`` in-process without Redis), so two redemptions race to one
  winner. A ticket presented for the wrong room is consumed all the same.

Only a SHA-256 of the ticket is stored: a Redis dump holds nothing a client
could present.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from second_brain_database.auth.tokens import InvalidToken, Principal

TICKET_TTL_S = 30
# Tickets one user may be issued within TICKET_TTL_S: enough for a page that
# reconnects, not enough to fill the store.
MAX_TICKETS_PER_USER = 20
# In-process store bound, whatever the number of users.
MAX_TICKETS_IN_MEMORY = 100_000
MAX_TICKET_CHARS = 128
TICKET_PREFIX = "sbd:ticket:"


class TicketUnavailable(Exception):
    """The store cannot be reached: single use cannot be guaranteed, so refuse."""


class TooManyTickets(Exception):
    """The user already holds :data:`MAX_TICKETS_PER_USER` live tickets."""


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def _encode(principal: Principal, room_id: str, expires_at: float) -> bytes:
    return orjson.dumps(
        {
            "user_id": principal.user_id,
            "name": principal.name,
            "expires_at": principal.expires_at,
            "rooms": principal.rooms,
            "role": principal.role,
            # A room socket opened by ticket may ring users: the same limit as its token.
            "calls": principal.calls,
            "room_id": room_id,
            "ticket_expires_at": expires_at,
        }
    )


def _decode(stored: bytes | str, room_id: str) -> Principal:
    data: dict[str, Any] = orjson.loads(stored)
    if data["room_id"] != room_id:
        raise InvalidToken("ticket not valid for this room", "ticket for another room")
    if data["ticket_expires_at"] <= time.time():
        raise InvalidToken("ticket expired")
    rooms = data["rooms"]
    calls = data.get("calls")
    return Principal(
        user_id=data["user_id"],
        name=data["name"],
        expires_at=data["expires_at"],
        rooms=tuple(rooms) if rooms is not None else None,
        role=data["role"],
        calls=tuple(calls) if calls is not None else None,
    )


class TicketStore(ABC):
    async def issue(self, principal: Principal, room_id: str) -> tuple[str, int]:
        """A fresh ticket for ``principal`` in ``room_id`` and its lifetime in seconds."""
        ttl = min(TICKET_TTL_S, int(principal.expires_at - time.time()))
        if ttl <= 0:
            raise InvalidToken("token expired")
        ticket = secrets.token_urlsafe(32)
        expires_at = time.time() + ttl
        await self._put(
            _digest(ticket), principal.user_id, _encode(principal, room_id, expires_at), ttl
        )
        return ticket, ttl

    async def redeem(self, ticket: str, room_id: str) -> Principal:
        """The principal a ticket was issued to; the ticket is gone afterwards."""
        if not ticket or len(ticket) > MAX_TICKET_CHARS:
            raise InvalidToken("invalid ticket")
        stored = await self._take(_digest(ticket))
        if stored is None:
            raise InvalidToken("invalid ticket", "unknown, expired or used ticket")
        return _decode(stored, room_id)

    @abstractmethod
    async def _put(self, digest: str, user_id: str, value: bytes, ttl: int) -> None: ...

    @abstractmethod
    async def _take(self, digest: str) -> bytes | str | None: ...


class MemoryTicketStore(TicketStore):
    """Single instance (no Redis)."""

    def __init__(self) -> None:
        # digest -> (expires at, value), oldest first. Nearly every ticket has
        # the full TTL, so purging stops at the first live one; a shorter one
        # left behind is still refused on redeem by its own expiry.
        self._tickets: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._issued: dict[str, deque[float]] = {}

    async def _put(self, digest: str, user_id: str, value: bytes, ttl: int) -> None:
        now = time.monotonic()
        self._purge(now)
        issued = self._issued.setdefault(user_id, deque())
        while issued and issued[0] <= now - TICKET_TTL_S:
            issued.popleft()
        if len(issued) >= MAX_TICKETS_PER_USER:
            raise TooManyTickets
        issued.append(now)
        if len(self._tickets) >= MAX_TICKETS_IN_MEMORY:
            self._tickets.popitem(last=False)
        self._tickets[digest] = (now + ttl, value)

    async def _take(self, digest: str) -> bytes | None:
        self._purge(time.monotonic())
        entry = self._tickets.pop(digest, None)
        return entry[1] if entry is not None else None

    def _purge(self, now: float) -> None:
        while self._tickets:
            digest, (expires, _) = next(iter(self._tickets.items()))
            if expires > now:
                break
            del self._tickets[digest]
        if len(self._issued) > MAX_TICKETS_IN_MEMORY:
            self._issued = {
                u: q for u, q in self._issued.items() if q and q[-1] > now - TICKET_TTL_S
            }


# Counts a ticket in its user's sliding window (issue times by the Redis
# clock); 0 when the window is full. One key, so it runs on a Cluster too:
# the ticket and the window hash to different slots, and the ticket is
# stored only once this said yes.
_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3]) * 1000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], window)
return 1
"""


def issued_key(user_id: str) -> str:
    return f"{TICKET_PREFIX}user:{hashlib.sha256(user_id.encode()).hexdigest()[:32]}"


class RedisTicketStore(TicketStore):
    """Shared by every instance: a ticket issued by one is redeemable once on any."""

    def __init__(self, redis: Redis | RedisCluster) -> None:
        self._redis = redis
        self._count = redis.register_script(_COUNT)

    async def _put(self, digest: str, user_id: str, value: bytes, ttl: int) -> None:
        try:
            counted = await self._count(
                keys=[issued_key(user_id)], args=[MAX_TICKETS_PER_USER, digest, TICKET_TTL_S]
            )
            if counted:
                await self._redis.set(TICKET_PREFIX + digest, value, ex=ttl)
        except RedisError as exc:
            raise TicketUnavailable from exc
        if not counted:
            raise TooManyTickets

    async def _take(self, digest: str) -> bytes | str | None:
        try:
            value: bytes | str | None = await self._redis.getdel(TICKET_PREFIX + digest)
        except RedisError as exc:
            raise TicketUnavailable from exc
        return value
