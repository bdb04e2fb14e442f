"""The one place Redis clients are made, for every part that uses Redis.

The settings choose one of three deployments:

- ``SBD_REDIS_SENTINELS``: the primary that the Sentinels name for
  ``SBD_REDIS_SENTINEL_MASTER``, through redis-py's own Sentinel support:
  every new connection asks the Sentinels where the primary is, so after a
  failover connections go to the promoted replica, and a connection still
  open to a demoted primary fails on its first write (``READONLY``) and is
  opened again;
- ``SBD_REDIS_URL`` of a Cluster node (``INFO cluster`` says so): a
  :class:`~redis.asyncio.RedisCluster`, which routes each command by slot;
- ``SBD_REDIS_URL`` otherwise: one Redis server.

``SBD_REDIS_PASSWORD`` applies to each. The broker, the ticket store, the
per-user connection cap and the login throttle share one command client
(:attr:`RedisClients.client`); the broker's Pub/Sub listeners and command
pipeline open connections of their own with :meth:`RedisClients.connection`.

Keys: on a Cluster a script or transaction must find all its keys in one hash
slot, so every multi-key operation keeps its keys under one hash tag
(``{...}``); single-key commands need none.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from second_brain_database.config import Settings

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 5.0
SENTINEL_TIMEOUT_S = 1.0
# How long start-up waits for Redis to answer (a container starting beside it).
STARTUP_ATTEMPTS = 20
STARTUP_RETRY_DELAY_S = 0.5


class RedisUnreachable(Exception):
    """Redis did not answer at start-up."""


class RedisMode(enum.StrEnum):
    STANDALONE = "standalone"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


def _client_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": COMMAND_TIMEOUT_S,
        # One quick retry: after a Redis restart or a failover, pooled
        # connections are stale and the first command on each fails before
        # reaching the server.
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        "retry_on_error": [RedisConnectionError],
    }
    if settings.redis_password is not None:
        options["password"] = settings.redis_password
    return options


def sentinel_addresses(settings: Settings) -> list[tuple[str, int]]:
    """``SBD_REDIS_SENTINELS`` as (host, port) pairs."""
    pairs = []
    for address in settings.redis_sentinels:
        host, _, port = address.rpartition(":")
        pairs.append((host.strip("[]"), int(port)))
    return pairs


def make_sentinel(settings: Settings) -> Sentinel:
    """A client of the Sentinels themselves, which carry no password here."""
    return Sentinel(
        sentinel_addresses(settings),
        sentinel_kwargs={
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
            "socket_timeout": SENTINEL_TIMEOUT_S,
        },
        **_client_options(settings),
    )


@dataclass
class RedisClients:
    """Redis as the settings describe it, connected: one shared command
    client, and fresh connections on demand."""

    mode: RedisMode
    client: Redis | RedisCluster
    sentinel: Sentinel | None = None

    @property
    def cluster(self) -> RedisCluster | None:
        return self.client if isinstance(self.client, RedisCluster) else None

    def connection(self, node: ClusterNode | None = None, **overrides: Any) -> AbstractConnection:
        """A new connection, not yet connected, for a caller that drives one
        itself (Pub/Sub, pipelining): to the primary (with Sentinel, asked
        for again on each ``connect()``), or on a Cluster to ``node``."""
        if isinstance(self.client, RedisCluster):
            if node is None:
                raise ValueError("a Cluster connection needs the node it goes to")
            return node.connection_class(**{**node.connection_kwargs, **overrides})
        pool = self.client.connection_pool
        return pool.connection_class(**{**pool.connection_kwargs, **overrides})

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.sentinel is not None:
            await self.sentinel.aclose()


async def connect_redis(
    settings: Settings, *, attempts: int = STARTUP_ATTEMPTS
) -> RedisClients | None:
    """Redis as the settings describe it, once it answers; None without Redis
    (the embedded broker). Raises :class:`RedisUnreachable` when it does not
    answer within ``attempts`` tries, :data:`STARTUP_RETRY_DELAY_S` apart."""
    if not settings.uses_redis:
        return None
    options = _client_options(settings)
    if settings.redis_sentinels:
        sentinel = make_sentinel(settings)
        primary = sentinel.master_for(settings.redis_sentinel_master, **options)
        clients = RedisClients(RedisMode.SENTINEL, primary, sentinel)
        await _wait_for(clients, "the primary that SBD_REDIS_SENTINELS name", attempts)
        return clients
    url = settings.redis_url
    assert url is not None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"unsupported SBD_REDIS_URL scheme: {url.split(':', 1)[0]!r}")
    plain = RedisClients(RedisMode.STANDALONE, Redis.from_url(url, **options))
    info = await _wait_for(plain, "SBD_REDIS_URL", attempts)
    if not info.get("cluster_enabled"):
        return plain
    await plain.aclose()
    cluster = RedisCluster.from_url(url, **options)
    await cluster.initialize()
    return RedisClients(RedisMode.CLUSTER, cluster)


async def _wait_for(clients: RedisClients, what: str, attempts: int) -> dict[str, Any]:
    for attempt in range(attempts):
        try:
            info: dict[str, Any] = await clients.client.info("cluster")
            return info
        except (RedisError, OSError) as exc:
            if attempt == attempts - 1:
                await clients.aclose()
                raise RedisUnreachable(f"Redis at {what} is unreachable: {exc}") from exc
            await asyncio.sleep(STARTUP_RETRY_DELAY_S)
    raise AssertionError("unreachable")
