"""The admin API from the command line (``sbd rooms``, ``sbd room``, ``sbd kick``,
``sbd notice``, ``sbd close-room``, ``sbd webhooks``).

The commands talk to a running instance over HTTP, so they see every
instance's rooms (through Redis) and every action is audit-logged by the
server like any admin API call. They sign a one-minute admin token with the
host's ``SBD_JWT_SECRET`` unless given one (``--token`` or
``SBD_ADMIN_TOKEN``, e.g. when tokens come from an external issuer).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

ADMIN_PREFIX = "/api/v1/admin"
CLI_ADMIN_USER = "sbd-cli"


class AdminError(Exception):
    """The server refused or could not be reached; the message says why."""


class AdminClient:
    def __init__(self, base_url: str, token: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def rooms(self, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every room, following the cursor to the end; a room that moved
        between pages may show up twice, so repeats are dropped."""
        cursor: str | None = "0"
        seen: set[str] = set()
        while cursor is not None:
            page = self._call("GET", f"/rooms?{urlencode({'cursor': cursor, 'limit': page_size})}")
            for room in page["rooms"]:
                if room["room_id"] not in seen:
                    seen.add(room["room_id"])
                    yield room
            cursor = page["next_cursor"]

    def room(self, room_id: str) -> dict[str, Any]:
        return self._call("GET", f"/rooms/{quote(room_id, safe='')}")

    def kick(self, room_id: str, peer_id: str) -> None:
        self._call("DELETE", f"/rooms/{quote(room_id, safe='')}/peers/{quote(peer_id, safe='')}")

    def close_room(self, room_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/rooms/{quote(room_id, safe='')}")

    def notice(self, room_id: str, message: str, level: str = "info") -> dict[str, Any]:
        body = {"message": message, "level": level}
        return self._call("POST", f"/rooms/{quote(room_id, safe='')}/notices", body)

    def webhooks(self) -> dict[str, Any]:
        return self._call("GET", "/webhooks")

    def redeliver_webhooks(self, event_id: str | None) -> dict[str, Any]:
        return self._call("POST", "/webhooks/redeliver", {"event_id": event_id})

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base_url + ADMIN_PREFIX + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                **({"Content-Type": "application/json"} if body is not None else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise AdminError(f"{exc.code}: {_detail(exc.read())}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdminError(f"cannot reach {self.base_url}: {reason}") from None
        answer: dict[str, Any] = json.loads(raw) if raw else {}
        return answer


def _detail(raw: bytes) -> str:
    try:
        detail = json.loads(raw).get("detail", raw.decode(errors="replace"))
    except (ValueError, AttributeError):
        return raw.decode(errors="replace")[:200]
    return detail if isinstance(detail, str) else json.dumps(detail)[:200]


def format_rooms(rooms: list[dict[str, Any]]) -> str:
    if not rooms:
        return "no rooms"
    width = max(len("ROOM"), *(len(r["room_id"]) for r in rooms))
    lines = [f"{'ROOM':<{width}}  PEERS"]
    lines += [f"{r['room_id']:<{width}}  {r['participants']:>5}" for r in rooms]
    total = sum(r["participants"] for r in rooms)
    lines.append(f"{len(rooms)} room{'s' * (len(rooms) != 1)}, {total} peers")
    return "\n".join(lines)


def format_room(room: dict[str, Any]) -> str:
    participants = room["participants"]
    rows = [("PEER", "USER", "NAME", "MEDIA")]
    for p in participants:
        media = ",".join(kind for kind, on in sorted(p.get("media", {}).items()) if on) or "-"
        rows.append((p["peer_id"], p["user_id"], p["name"], media))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"room {room['room_id']}: {len(participants)} peers"]
    lines += [
        "  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row))
        for row in rows
    ]
    return "\n".join(lines)


def format_webhooks(status: dict[str, Any]) -> str:
    endpoints = status["endpoints"]
    width = max(len("URL"), *(len(e["url"]) for e in endpoints))
    lines = [f"{'URL':<{width}}  PENDING  FAILED"]
    lines += [f"{e['url']:<{width}}  {e['pending']:>7}  {e['failed']:>6}" for e in endpoints]
    errors = status["last_errors"]
    lines.append("last errors:" if errors else "no failed attempts")
    for error in errors[:10]:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(error["at"]))
        lines.append(
            f"  {at}Z  {error['url']}  {error['type']} {error['event_id']}"
            f" (room {error['room_id']}): {error['error']}"
        )
    return "\n".join(lines)
