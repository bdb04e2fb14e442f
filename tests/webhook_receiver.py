"""A real webhook receiver for the tests: an ASGI app under uvicorn on a free
port, in the test's event loop, that verifies every request with the
``standardwebhooks`` package (as a user's receiver would) and records what
arrived."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError

from tests.servers import free_port

SECRET = "whsec_" + base64.b64encode(b"sbd test webhook secret 32 bytes").decode()


@dataclass
class Arrival:
    id: str
    event: dict[str, Any]
    answered: int
    at: float


@dataclass
class Receiver:
    port: int
    arrivals: list[Arrival] = field(default_factory=list)
    """Every request, in the order they arrived (retries included)."""
    forged: list[str] = field(default_factory=list)
    """Requests whose signature did not verify (must stay empty)."""
    fail_next: int = 0
    """Answer this many of the next requests with 500."""
    hold_s: float = 0.0
    """Seconds to wait before answering (a slow receiver)."""
    in_flight: dict[str, int] = field(default_factory=dict)
    overlapped: list[str] = field(default_factory=list)
    """Rooms that had two requests in flight at once (must stay empty)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=receiver-secret"

    def delivered(self) -> list[dict[str, Any]]:
        """Acknowledged events, first acknowledgement of each id, in order."""
        seen: set[str] = set()
        events = []
        for arrival in self.arrivals:
            if arrival.answered == 200 and arrival.id not in seen:
                seen.add(arrival.id)
                events.append(arrival.event)
        return events

    def of_room(self, room_id: str) -> list[tuple[str, str, str]]:
        """(type, peer_id, reason) of the room's delivered events, in order."""
        return [
            (e["type"], e["data"].get("peer_id", ""), e["data"].get("reason", ""))
            for e in self.delivered()
            if e["data"]["room_id"] == room_id
        ]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":  # `sbd check` looking whether the URL answers
            await _answer(send, 405)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            event = Webhook(SECRET).verify(body, headers)
        except WebhookVerificationError as exc:
            self.forged.append(str(exc))
            await _answer(send, 400)
            return
        room = event["data"]["room_id"]
        self.in_flight[room] = self.in_flight.get(room, 0) + 1
        if self.in_flight[room] > 1:
            self.overlapped.append(room)
        status = 200
        if self.fail_next > 0:
            self.fail_next -= 1
            status = 500
        self.arrivals.append(Arrival(headers["webhook-id"], event, status, time.time()))
        try:
            if self.hold_s:
                await asyncio.sleep(self.hold_s)
            await _answer(send, status)
        finally:
            self.in_flight[room] -= 1


async def _answer(send: Any, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps({"ok": status}).encode()})


@contextlib.asynccontextmanager
async def running_receiver(receiver: Receiver | None = None) -> AsyncIterator[Receiver]:
    """Serve ``receiver`` (a new one on a free port by default) until the block ends."""
    receiver = receiver or Receiver(free_port())
    config = uvicorn.Config(receiver, host="127.0.0.1", port=receiver.port, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task


def webhook_env(receiver: Receiver, **extra: str) -> dict[str, str]:
    return {
        "SBD_WEBHOOK_URLS": receiver.url,
        "SBD_WEBHOOK_SECRET": SECRET,
        "SBD_WEBHOOK_RETRY_INITIAL_S": "0.2",
        "SBD_WEBHOOK_RETRY_MAX_S": "0.5",
        **extra,
    }
