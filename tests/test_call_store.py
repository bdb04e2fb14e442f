"""The call store's one transition (ringing -> ended) and its indexes,
against the embedded store, a real redis-server and a real 3-master Redis
Cluster (every script on one key or one user's keys: no CROSSSLOT)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from second_brain_database.config import Settings
from second_brain_database.redis_clients import connect_redis
from second_brain_database.webrtc.calls.memory_calls import MemoryCallStore
from second_brain_database.webrtc.calls.model import (
    Call,
    CallerRoute,
    CallResult,
    TooManyCalls,
)
from second_brain_database.webrtc.calls.redis_calls import RedisCallStore
from second_brain_database.webrtc.calls.store import CallStore
from tests.servers import RedisClusterServers, RedisServer


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers().start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["memory", "redis", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CallStore]:
    if request.param == "memory":
        yield MemoryCallStore()
        return
    server: RedisServer | RedisClusterServers = request.getfixturevalue(
        "redis_server" if request.param == "redis" else "redis_cluster"
    )
    clients = await connect_redis(Settings(redis_url=server.url))
    assert clients is not None
    yield RedisCallStore(clients.client)
    await clients.aclose()


def a_call(ring_for: float = 30.0, route: CallerRoute | None = None) -> Call:
    tag = uuid.uuid4().hex[:8]
    return Call(
        call_id=f"call-{tag}",
        from_user=f"alice-{tag}",
        to_user=f"bob-{{{tag}}}\n",  # braces and a newline: a digest names its keys
        room_id="room",
        route=route or CallerRoute.user_socket("conn-1"),
        deadline=time.time() + ring_for,
        incoming='{"type":"incoming-call"}',
    )


async def test_of_many_concurrent_endings_exactly_one_wins(store: CallStore) -> None:
    call = a_call()
    started = await store.start(call, max_ringing=5)
    assert started.event.type == "call.ringing" and started.event.data["devices"] == 0
    assert [c.call_id for c in await store.ringing_to(call.to_user)] == [call.call_id]
    results = await asyncio.gather(
        *(store.finish(call.call_id, CallResult.ACCEPTED, callee=call.to_user) for _ in range(20)),
        store.finish(call.call_id, CallResult.CANCELLED, route=call.route),
        store.finish(call.call_id, CallResult.MISSED),
    )
    assert sum(result is not None for result in results) == 1
    ended = await store.get(call.call_id)
    assert ended is not None and ended.state != "ringing"
    assert await store.ringing_to(call.to_user) == []
    assert await store.ringing_from(call.from_user) == []


async def test_only_the_callee_answers_and_only_the_route_cancels(store: CallStore) -> None:
    call = a_call()
    await store.start(call, max_ringing=5)
    assert await store.finish(call.call_id, CallResult.ACCEPTED, callee="mallory") is None
    other = CallerRoute.in_room("room", "peer")
    assert await store.finish(call.call_id, CallResult.CANCELLED, route=other) is None
    won = await store.finish(call.call_id, CallResult.DECLINED, callee=call.to_user)
    assert won is not None and won.call == call
    assert won.event.type == "call.ended" and won.event.data["result"] == "declined"
    assert await store.finish("never-issued", CallResult.MISSED) is None


async def test_a_caller_has_at_most_max_ringing(store: CallStore) -> None:
    first = a_call()
    await store.start(first, max_ringing=1)
    with pytest.raises(TooManyCalls):
        await store.start(dataclasses.replace(first, call_id=f"{first.call_id}-2"), max_ringing=1)
    await store.finish(first.call_id, CallResult.CANCELLED, route=first.route)
    await store.start(dataclasses.replace(first, call_id=f"{first.call_id}-3"), max_ringing=1)


async def test_due_calls_time_out(store: CallStore) -> None:
    call = a_call(ring_for=-1)
    await store.start(call, max_ringing=5)
    assert call.call_id in await store.due(time.time(), 1000)
    assert await store.finish(call.call_id, CallResult.MISSED) is not None
    await store.drop_due(call.call_id)
    assert call.call_id not in await store.due(time.time(), 1000)


async def test_devices_count_until_removed(store: CallStore) -> None:
    user = f"dev-{uuid.uuid4().hex}"
    await store.add_device(user, "a", 30)
    await store.add_device(user, "b", 30)
    assert await store.devices(user) == 2
    await store.remove_device(user, "a")
    assert await store.devices(user) == 1
