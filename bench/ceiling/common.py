"""Shared by the ceiling relays: argument parsing and the PeerJS query string."""

from __future__ import annotations

import argparse
from urllib.parse import parse_qs, urlsplit


def args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    return parser.parse_args()


def peer_id(path: str) -> str | None:
    """``/peerjs?key=peerjs&id=ID&token=T`` -> ID."""
    parts = urlsplit(path)
    if not parts.path.endswith("/peerjs"):
        return None
    ids = parse_qs(parts.query).get("id")
    return ids[0] if ids else None


OPEN = '{"type":"OPEN"}'
