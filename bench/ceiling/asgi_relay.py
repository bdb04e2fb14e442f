"""A raw ASGI relay (no framework), served by uvicorn like our app:
``python -m uvicorn bench.ceiling.asgi_relay:app``."""

from __future__ import annotations

from typing import Any

import orjson

from bench.ceiling.common import OPEN, peer_id

Send = Any
_peers: dict[str, Send] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "websocket":
        return
    query = scope.get("query_string", b"").decode()
    me = peer_id(f"{scope['path']}?{query}")
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    if me is None:
        await send({"type": "websocket.close", "code": 1008})
        return
    _peers[me] = send
    await send({"type": "websocket.send", "text": OPEN})
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            msg = orjson.loads(message.get("text") or message.get("bytes") or b"{}")
            msg["src"] = me
            target = _peers.get(msg.get("dst"))
            if target is not None:
                await target({"type": "websocket.send", "text": orjson.dumps(msg).decode()})
    finally:
        _peers.pop(me, None)
