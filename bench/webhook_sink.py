"""A webhook receiver for the benchmark, in a process of its own (so that
it does not share the load generator's CPU): records when each event
arrived; ``GET /stats`` returns them. It does not verify signatures (the
tests do, with the ``standardwebhooks`` package)."""

from __future__ import annotations

import time
from typing import Any

import orjson

arrivals: dict[str, dict[str, Any]] = {}
"""webhook-id -> {type, peer_id, room_id, at}: the first arrival of each event."""
requests = 0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global requests
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] == "GET":
        answer = orjson.dumps({"requests": requests, "arrivals": list(arrivals.values())})
    else:
        requests += 1
        headers = dict(scope["headers"])
        event = orjson.loads(body)
        arrivals.setdefault(
            headers[b"webhook-id"].decode(),
            {
                "type": event["type"],
                "peer_id": event["data"].get("peer_id", ""),
                "room_id": event["data"]["room_id"],
                "at": time.time(),
            },
        )
        answer = b"{}"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": answer})
