"""How the Redis room store talks to Redis: its Lua scripts by name, plain
commands, both on the auto-pipelined command connection
(:mod:`.redis_pipeline`) when there is one, failures as
:class:`BrokerUnavailable`."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from second_brain_database.redis_clients import RedisClients
from second_brain_database.webrtc.broker import redis_scripts
from second_brain_database.webrtc.broker.model import BrokerUnavailable
from second_brain_database.webrtc.broker.redis_pipeline import CommandPipeline

SCRIPTS = (
    "JOIN", "REREGISTER", "LEAVE", "AWAY", "RELEASE", "RESUME", "RELAY_TO", "BROADCAST",
    "SET_MEDIA", "KICK", "EXPIRE_AWAY", "PARTICIPANTS", "HEARTBEAT", "DUE_AWAY",
    "DROP_DUE", "SET_POLICY", "GET_POLICY", "MAY_RESUME",
)  # fmt: skip


class RedisCommands:
    def __init__(self, redis: RedisClients) -> None:
        self._clients = redis  # made and closed by the service
        self._redis = redis.client
        self._scripts: dict[str, AsyncScript] = {
            name: self._redis.register_script(getattr(redis_scripts, name)) for name in SCRIPTS
        }
        self._pipeline: CommandPipeline | None = None

    def start(self) -> None:
        if isinstance(self._redis, Redis):
            # One connection carries every session's commands. (On a cluster
            # they go through the cluster client's per-node pools.)
            self._pipeline = CommandPipeline(
                self._clients,
                {script.sha: str(script.script) for script in self._scripts.values()},
            )
            self._pipeline.start()

    async def stop(self) -> None:
        if self._pipeline is not None:
            await self._pipeline.stop()

    async def run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        try:
            if self._pipeline is not None:
                return await self._pipeline.evalsha(self._scripts[script].sha, keys, args)
            return await self._scripts[script](keys=keys, args=args)
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def command(self, *args: Any) -> Any:
        """A plain command, on the pipeline when there is one."""
        try:
            if self._pipeline is not None:
                return await self._pipeline.execute(*args)
            return await self._redis.execute_command(*args)
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc
