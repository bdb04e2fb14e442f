"""The Redis call store: every instance sees every call (keys in
calls/redis_scripts.py). The call's own key holds the truth and its one
script (FINISH) decides every race; the indexes around it are kept up
command by command, and each reader checks the call itself."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from second_brain_database.webhooks.events import WebhookEvent
from second_brain_database.webrtc.broker.model import BrokerUnavailable
from second_brain_database.webrtc.broker.redis_keys import (
    CALL_DEADLINES_KEY,
    RoomKeys,
    UserKeys,
    call_key,
)
from second_brain_database.webrtc.calls import redis_scripts
from second_brain_database.webrtc.calls.model import Call, CallerRoute, CallResult, TooManyCalls
from second_brain_database.webrtc.calls.store import CallStore

if TYPE_CHECKING:  # an import cycle otherwise (the outbox needs the broker's keys)
    from second_brain_database.webhooks.redis_outbox import RedisOutbox

# An ended call is kept this long, so that a late answer meets a call that
# ended (unknown_call all the same) and the sweep can finish a late one.
ENDED_KEPT_MS = 60_000
T = TypeVar("T")


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisCallStore(CallStore):
    def __init__(self, redis: Redis | RedisCluster, outbox: RedisOutbox | None = None) -> None:
        self._redis = redis
        self._outbox = outbox
        self.webhooks = outbox is not None
        self._finish_script = redis.register_script(redis_scripts.FINISH)
        self._count_outgoing = redis.register_script(redis_scripts.COUNT_OUTGOING)

    async def _run(self, command: Callable[[], Awaitable[T]]) -> T:
        try:
            return await command()
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def _start(self, call: Call, max_ringing: int) -> None:
        deadline_ms = _ms(call.deadline)
        caller, callee = UserKeys.of(call.from_user), UserKeys.of(call.to_user)
        key = call_key(call.call_id)
        counted = await self._run(
            lambda: self._count_outgoing(
                keys=[caller.outgoing],
                args=[max_ringing, _ms(time.time()), deadline_ms, call.call_id],
            )
        )
        if not counted:
            raise TooManyCalls
        redis = self._redis

        async def record() -> None:
            await redis.hset(key, mapping=dict(call.fields()))  # type: ignore[arg-type]
            await redis.pexpireat(key, deadline_ms + ENDED_KEPT_MS)
            # The deadline index before the callee's: a call is never ringing
            # without something that will time it out.
            await redis.zadd(CALL_DEADLINES_KEY, {call.call_id: deadline_ms})
            await redis.zadd(callee.ringing, {call.call_id: deadline_ms})
            await redis.pexpireat(callee.ringing, deadline_ms)

        await self._run(record)

    async def get(self, call_id: str) -> Call | None:
        fields = await self._run(lambda: self._redis.hgetall(call_key(call_id)))
        return _call(fields) if fields else None

    async def _finish(
        self,
        call_id: str,
        result: CallResult,
        *,
        callee: str | None,
        route: CallerRoute | None,
        event: WebhookEvent | None,
    ) -> Call | None:
        field, expected = "", ""
        if callee is not None:
            field, expected = "to_user", callee
        elif route is not None:
            field, expected = "route", route.encode()
        flat = await self._run(
            lambda: self._finish_script(
                keys=[call_key(call_id), RoomKeys.of(call_id).events],
                args=[result.value, field, expected, ENDED_KEPT_MS, *_event_args(event)],
            )
        )
        if not flat:
            return None
        call = _call(dict(zip(flat[::2], flat[1::2], strict=True)))
        redis = self._redis

        async def unindex() -> None:
            await redis.zrem(UserKeys.of(call.to_user).ringing, call_id)
            await redis.zrem(UserKeys.of(call.from_user).outgoing, call_id)
            await redis.zrem(CALL_DEADLINES_KEY, call_id)

        await self._run(unindex)
        return call

    async def _write(self, call_id: str, event: WebhookEvent) -> None:
        outbox = self._outbox
        if outbox is not None:
            await self._run(lambda: outbox.append(call_id, event))

    async def _announce(self, call_id: str) -> None:
        if self._outbox is not None:
            with contextlib.suppress(RedisError, OSError):  # the sweep finds it
                await self._outbox.announce(call_id)

    async def ringing_to(self, user_id: str) -> list[Call]:
        return await self._ringing(UserKeys.of(user_id).ringing)

    async def ringing_from(self, user_id: str) -> list[Call]:
        return await self._ringing(UserKeys.of(user_id).outgoing)

    async def _ringing(self, index: str) -> list[Call]:
        now = _ms(time.time())
        ids: list[bytes] = await self._run(
            lambda: self._redis.execute_command("ZRANGEBYSCORE", index, now, "+inf")
        )
        calls = []
        for call_id in ids:
            call = await self.get(_text(call_id))
            if call is not None and call.state == "ringing":
                calls.append(call)
        return calls

    async def due(self, now: float, limit: int) -> list[str]:
        ids: list[bytes] = await self._run(
            lambda: self._redis.execute_command(
                "ZRANGEBYSCORE", CALL_DEADLINES_KEY, "-inf", _ms(now), "LIMIT", 0, limit
            )
        )
        return [_text(call_id) for call_id in ids]

    async def drop_due(self, call_id: str) -> None:
        await self._run(lambda: self._redis.zrem(CALL_DEADLINES_KEY, call_id))

    async def add_device(self, user_id: str, connection_id: str, ttl: float) -> None:
        key = UserKeys.of(user_id).devices
        now = time.time()
        redis = self._redis

        async def add() -> None:
            await redis.zremrangebyscore(key, "-inf", _ms(now))
            await redis.zadd(key, {connection_id: _ms(now + ttl)})
            await redis.pexpire(key, _ms(ttl))

        await self._run(add)

    async def remove_device(self, user_id: str, connection_id: str) -> None:
        await self._run(lambda: self._redis.zrem(UserKeys.of(user_id).devices, connection_id))

    async def devices(self, user_id: str) -> int:
        key = UserKeys.of(user_id).devices
        count: int = await self._run(lambda: self._redis.zcount(key, _ms(time.time()), "+inf"))
        return count


def _event_args(event: WebhookEvent | None) -> list[str | bytes]:
    if event is None:
        return ["", "", "", ""]
    return [event.id, event.type, f"{event.at:.6f}", event.body]


def _call(fields: dict[Any, Any]) -> Call:
    return Call.from_fields({_text(k): _text(v) for k, v in fields.items()})
