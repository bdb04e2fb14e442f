"""Ids the server makes up: peers, user sockets."""

from __future__ import annotations

import base64
import secrets


def new_peer_id() -> str:
    """80 random bits in lowercase base32: no leading ``-`` or ``_``, so a
    peer id is never taken for an option when an operator passes it to
    ``sbd kick`` or to any other command line."""
    return base64.b32encode(secrets.token_bytes(10)).decode().lower()
