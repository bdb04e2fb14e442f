"""The relay on the ``websockets`` library's own asyncio server (no ASGI), uvloop."""

from __future__ import annotations

import asyncio

import orjson
import uvloop
from websockets.asyncio.server import ServerConnection, serve

from bench.ceiling.common import OPEN, args, peer_id

_peers: dict[str, ServerConnection] = {}


async def handler(ws: ServerConnection) -> None:
    me = peer_id(ws.request.path if ws.request else "")
    if me is None:
        await ws.close(1008)
        return
    _peers[me] = ws
    await ws.send(OPEN)
    try:
        async for raw in ws:
            msg = orjson.loads(raw)
            msg["src"] = me
            target = _peers.get(msg.get("dst"))
            if target is not None:
                await target.send(orjson.dumps(msg).decode())
    finally:
        _peers.pop(me, None)


async def main() -> None:
    a = args()
    async with serve(handler, a.host, a.port, compression=None, max_size=65536, ping_interval=None):
        await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main())
