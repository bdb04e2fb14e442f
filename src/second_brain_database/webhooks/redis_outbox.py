"""The shared outbox: a Redis Stream per room (``sbd:room:{R}:events``),
written by the room scripts in the same step as the change, and an index of
rooms with events (``sbd:webhooks:{w}:rooms``) that instances claim rooms
from. docs/architecture.md ("Webhook outbox") says why it is laid out so.

- Each URL is a consumer group of the room's stream (its key, so a URL's
  progress survives restarts); the instance holding the room reads with its
  id as consumer and acknowledges (``XACK``) what the URL acknowledged.
- A room is claimed for ``SBD_PRESENCE_TTL`` seconds and the claim renewed
  while it is delivered; the claim of a dead instance runs out, another
  instance claims the room and takes the dead consumer's pending entries
  over (``XAUTOCLAIM``), sending them again under the same ``webhook-id``.
- The index entry is written right after the script (another slot on a
  Cluster); a periodic sweep of the room streams puts back any room whose
  instance died in between.
- A call's events wait in a stream of their own, named as a room's by the
  call id: ``sbd:room:{<call id>}:events`` shares its hash tag with the call
  (``sbd:call:{<call id>}``), so the call's one script writes ``call.ended``
  in the step that ends the call (calls/redis_scripts.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError

from second_brain_database.redis_clients import RedisClients
from second_brain_database.webhooks.events import WebhookEvent
from second_brain_database.webhooks.outbox import (
    MAX_ERRORS_KEPT,
    MAX_FAILED_KEPT,
    Endpoint,
    EndpointStatus,
    FailedEvent,
    Failure,
    Outbox,
    Pending,
    WebhookStatus,
)
from second_brain_database.webrtc.broker.redis_keys import (
    WEBHOOK_ERRORS_KEY,
    WEBHOOK_FAILED_KEY,
    WEBHOOK_HOLDERS_KEY,
    WEBHOOK_ROOMS_KEY,
    RoomKeys,
    room_of_key,
)

SWEEP_EVERY_S = 30.0
"""How often room streams are matched against the index (see the module doc)."""
STATUS_MAX_ROOMS = 10_000
"""Rooms ``sbd webhooks`` looks at when counting pending events."""

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: rooms, holders; ARGV: instance, claim_ms, limit -> rooms now claimed
CLAIM = (
    _NOW
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, room in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), room)
  redis.call('HSET', KEYS[2], room, ARGV[1])
end
return due
"""
)

# KEYS: rooms, holders; ARGV: instance, claim_ms, rooms... -> rooms no longer ours
KEEP = (
    _NOW
    + """
local lost = {}
for i = 3, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[1] then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""
)

# KEYS: rooms, holders; ARGV: instance, room
RELEASE = """
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
end
return 1
"""

# Drop the entries every URL (ARGV: the groups) acknowledged; the stream,
# with its groups, goes when nothing is left. -> entries left
TRIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local wanted = {}
for _, group in ipairs(ARGV) do wanted[group] = true end
local floor_ms, floor_seq, found = nil, nil, 0
for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local fields = {}
  for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
  if wanted[fields['name']] then
    if tonumber(fields['pending']) > 0 then return redis.call('XLEN', KEYS[1]) end
    found = found + 1
    local ms, seq = string.match(fields['last-delivered-id'], '(%d+)-(%d+)')
    ms, seq = tonumber(ms), tonumber(seq)
    if floor_ms == nil or ms < floor_ms or (ms == floor_ms and seq < floor_seq) then
      floor_ms, floor_seq = ms, seq
    end
  end
end
if found < #ARGV then return redis.call('XLEN', KEYS[1]) end
redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', floor_ms, floor_seq + 1))
local left = redis.call('XLEN', KEYS[1])
if left == 0 then redis.call('DEL', KEYS[1]) end
return left
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisOutbox(Outbox):
    def __init__(self, redis: RedisClients, *, instance_id: str, claim_ttl: float) -> None:
        self._redis: Redis | RedisCluster = redis.client
        self._instance_id = instance_id
        self._claim_ms = max(int(claim_ttl * 1000), 1000)
        self._scripts = {
            name: self._redis.register_script(script)
            for name, script in (("CLAIM", CLAIM), ("KEEP", KEEP), ("RELEASE", RELEASE))
        }
        self._trim = self._redis.register_script(TRIM)
        self._prepared: set[tuple[str, str]] = set()
        """(room, group) whose group exists and whose dead consumers' entries are ours."""
        self._swept_at = 0.0
        self._work = asyncio.Event()

    async def _index(self, script: str, args: list[Any]) -> Any:
        return await self._scripts[script](keys=[WEBHOOK_ROOMS_KEY, WEBHOOK_HOLDERS_KEY], args=args)

    async def claim(self, limit: int) -> list[str]:
        if time.monotonic() - self._swept_at >= SWEEP_EVERY_S:
            await self._sweep()
        rooms = [
            _text(room)
            for room in await self._index("CLAIM", [self._instance_id, self._claim_ms, limit])
        ]
        # Another instance may have held these since we last did: take over
        # its pending entries again before reading.
        claimed = set(rooms)
        self._prepared = {prepared for prepared in self._prepared if prepared[0] not in claimed}
        return rooms

    async def _sweep(self) -> None:
        """Index every room stream (events whose index entry an instance
        that died right after the script never wrote)."""
        self._swept_at = time.monotonic()
        async for key in self._redis.scan_iter(match="sbd:room:*:events", count=500):
            await self._redis.zadd(WEBHOOK_ROOMS_KEY, {room_of_key(_text(key)): 0}, nx=True)

    async def keep(self, rooms: list[str]) -> list[str]:
        lost = await self._index("KEEP", [self._instance_id, self._claim_ms, *rooms])
        return [_text(room) for room in lost]

    async def next(self, room_id: str, endpoint: Endpoint) -> Pending | None:
        stream = RoomKeys.of(room_id).events
        group = endpoint.key
        try:
            if (room_id, group) not in self._prepared:
                await self._prepare(stream, group)
                self._prepared.add((room_id, group))
            # Our own pending entry first (a send cut short), then the next new one.
            for start in ("0", ">"):
                answer: Any = await self._redis.xreadgroup(
                    group, self._instance_id, {stream: start}, count=1
                )
                if answer and answer[0][1]:
                    ref, fields = answer[0][1][0]
                    return _pending(_text(ref), fields)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc) and "no such key" not in str(exc):
                raise
            self._prepared.discard((room_id, group))  # the stream went: nothing to send
        return None

    async def _prepare(self, stream: str, group: str) -> None:
        """Create the URL's group (from the stream's start: a new group owes
        every entry) and take over what dead consumers left pending."""
        try:
            await self._redis.xgroup_create(stream, group, id="0")
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        cursor: bytes | str = "0-0"
        while True:
            answer: Any = await self._redis.xautoclaim(
                stream, group, self._instance_id, min_idle_time=0, start_id=cursor, count=100
            )
            cursor = answer[0]
            if _text(cursor) == "0-0":
                return

    async def ack(self, room_id: str, endpoint: Endpoint, pending: Pending) -> None:
        await self._redis.xack(RoomKeys.of(room_id).events, endpoint.key, pending.ref)

    async def release(self, room_id: str, endpoints: list[Endpoint]) -> None:
        stream = RoomKeys.of(room_id).events
        await self._trim(keys=[stream], args=[e.key for e in endpoints])
        await self._index("RELEASE", [self._instance_id, room_id])
        for endpoint in endpoints:
            self._prepared.discard((room_id, endpoint.key))
        # An event written after the trim saw the index entry we just
        # removed, or wrote it after: look again.
        if await self._redis.xlen(stream):
            await self._redis.zadd(WEBHOOK_ROOMS_KEY, {room_id: 0}, nx=True)

    async def record_error(self, error: Failure) -> None:
        await self._redis.lpush(WEBHOOK_ERRORS_KEY, error.model_dump_json())
        await self._redis.ltrim(WEBHOOK_ERRORS_KEY, 0, MAX_ERRORS_KEPT - 1)

    async def record_failed(self, failed: FailedEvent) -> None:
        await self._redis.lpush(WEBHOOK_FAILED_KEY, failed.model_dump_json())
        await self._redis.ltrim(WEBHOOK_FAILED_KEY, 0, MAX_FAILED_KEPT - 1)

    async def _failed(self) -> list[tuple[Any, FailedEvent]]:
        raw = await self._redis.lrange(WEBHOOK_FAILED_KEY, 0, -1)
        return [(item, FailedEvent.model_validate_json(item)) for item in raw]

    async def status(self, endpoints: list[Endpoint]) -> WebhookStatus:
        pending = {endpoint.key: 0 for endpoint in endpoints}
        rooms: list[Any] = await self._redis.zrange(WEBHOOK_ROOMS_KEY, 0, STATUS_MAX_ROOMS - 1)
        for room in rooms:
            stream = RoomKeys.of(_text(room)).events
            length = await self._redis.xlen(stream)
            if not length:
                continue
            groups = {_text(g["name"]): g for g in await self._redis.xinfo_groups(stream)}
            for key in pending:
                group = groups.get(key)
                if group is None or group.get("lag") is None:
                    pending[key] += length
                else:
                    pending[key] += int(group["pending"]) + int(group["lag"])
        failed = [f for _, f in await self._failed()]
        errors = await self._redis.lrange(WEBHOOK_ERRORS_KEY, 0, MAX_ERRORS_KEPT - 1)
        return WebhookStatus(
            endpoints=[
                EndpointStatus(
                    url=e.label,
                    pending=pending[e.key],
                    failed=sum(1 for f in failed if f.endpoint == e.key),
                )
                for e in endpoints
            ],
            last_errors=[Failure.model_validate_json(item) for item in errors],
        )

    async def redeliver(self, event_id: str | None) -> int:
        failed_events = await self._failed()
        chosen = [(raw, f) for raw, f in failed_events if event_id in (None, f.event_id)]
        for raw, failed in reversed(chosen):  # oldest first
            await self._redis.xadd(
                RoomKeys.of(failed.room_id).events,
                {
                    "id": failed.event_id,
                    "type": failed.type,
                    "at": f"{failed.event_at:.6f}",
                    "body": failed.body,
                    "only": failed.endpoint,
                },
            )
            await self._redis.lrem(WEBHOOK_FAILED_KEY, 1, raw)
            await self._redis.zadd(WEBHOOK_ROOMS_KEY, {failed.room_id: 0}, nx=True)
        return len(chosen)

    async def append(self, queue: str, event: WebhookEvent) -> None:
        """Write ``event`` to ``queue`` (a room, or a call by its id) outside
        a script: for an event whose change is not one script (``call.ringing``)."""
        await self._redis.xadd(
            RoomKeys.of(queue).events,
            {"id": event.id, "type": event.type, "at": f"{event.at:.6f}", "body": event.body},
        )
        await self.announce(queue)

    async def announce(self, queue: str) -> None:
        """Tell deliverers ``queue`` has events. Not atomic with the script
        that wrote them (the index is in another slot on a Cluster): an
        instance that dies in between leaves them to the sweep."""
        await self._redis.zadd(WEBHOOK_ROOMS_KEY, {queue: 0}, nx=True)
        self.written()

    def written(self) -> None:
        """This instance wrote events: look for rooms now rather than at the
        next poll (rooms written by other instances are found by polling)."""
        self._work.set()

    async def wait_for_work(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout)
        self._work.clear()


def _pending(ref: str, fields: dict[bytes, bytes]) -> Pending:
    event = WebhookEvent(
        id=_text(fields[b"id"]),
        type=_text(fields[b"type"]),
        at=float(fields[b"at"]),
        body=fields[b"body"],
    )
    return Pending(ref, event, _text(fields.get(b"only", b"")))
