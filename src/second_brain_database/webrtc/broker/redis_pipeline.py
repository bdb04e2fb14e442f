"""Every command of this instance's sessions over one connection, pipelined.

A connection pool opens a connection per concurrent command, so Redis
connections would grow with the number of clients. Instead, commands queue
here in call order; one task writes whatever has queued as a single batch and
reads the replies back in order. Redis runs one connection's commands in
order, so a session that awaits each command keeps its messages ordered, and
under load a batch carries many commands per system call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, RedisError, ResponseError

from second_brain_database.redis_clients import COMMAND_TIMEOUT_S, RedisClients
from second_brain_database.webrtc.broker.model import BrokerUnavailable

logger = logging.getLogger(__name__)

MAX_BATCH = 512

_Pending = tuple[tuple[Any, ...], "asyncio.Future[Any]"]


def pack_commands(commands: list[tuple[Any, ...]]) -> bytes:
    """Commands as RESP arrays of bulk strings: what redis-py's
    ``Connection.pack_commands`` writes, at a fifth of its cost (it runs for
    every relayed message). Arguments are str, bytes, int or float."""
    parts: list[bytes] = []
    append = parts.append
    for args in commands:
        append(b"*%d\r\n" % len(args))
        for arg in args:
            if isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, bytes):
                data = arg
            elif isinstance(arg, int | float) and not isinstance(arg, bool):
                data = repr(arg).encode()
            else:
                raise TypeError(f"cannot send {type(arg).__name__} to Redis")
            append(b"$%d\r\n" % len(data))
            append(data)
            append(b"\r\n")
    return b"".join(parts)


class CommandPipeline:
    def __init__(self, redis: RedisClients, scripts: dict[str, str]) -> None:
        self._redis = redis
        self._scripts = scripts  # sha -> source, loaded on NOSCRIPT
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._connection: AbstractConnection | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sbd-redis-pipeline")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop_connection()
        for _, future in self._queue:
            if not future.done():
                future.set_exception(BrokerUnavailable("shutting down"))

    async def execute(self, *args: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((args, future))
        self._wakeup.set()
        return await future

    async def evalsha(self, sha: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            # Redis restarted (or SCRIPT FLUSH): load it once, then run it again.
            await self.execute("SCRIPT", "LOAD", self._scripts[sha])
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
                await self._send(batch)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            connection = await self._connect()
            await connection.send_packed_command(
                pack_commands([args for args, _ in batch]), check_health=False
            )
            # One deadline for the whole batch rather than redis-py's own per
            # reply (a timeout context each): the same bound on a stuck Redis.
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                for _, future in batch:
                    try:
                        reply: Any = await connection.read_response(timeout=math.inf)
                    except ResponseError as error:  # this command failed; the stream is intact
                        reply = error
                    if future.done():  # its caller was cancelled
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        except (RedisError, OSError) as exc:
            # Unanswered commands may or may not have run: report them failed.
            logger.warning("Redis command connection failed: %s", exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(BrokerUnavailable(str(exc)))
            await self._drop_connection()

    async def _connect(self) -> AbstractConnection:
        if self._connection is None:
            # RESP2 keeps replies plain (lists, not sets or maps), as the scripts expect.
            connection = self._redis.connection(protocol=2)
            await connection.connect()  # type: ignore[no-untyped-call]
            self._connection = connection
        return self._connection

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(RedisError, OSError):
                await connection.disconnect()
