"""Password guesses are rationed per client address and per username."""

from __future__ import annotations

import hashlib

from second_brain_database.auth.users import USERNAME_MAX
from second_brain_database.webrtc.limits import HandshakeLimiter


def username_too_long(username: str) -> bool:
    """No stored login is longer (``users.USERNAME_MAX``): such an attempt is
    refused before it costs a bucket, a key or a password hash."""
    return len(username) > USERNAME_MAX


class LoginThrottle:
    """Token buckets of ``per_minute`` attempts (burst of as many) per address
    and per username. A throttled username delays its owner too; that is the
    price of making online guessing slow (docs/security.md).

    Memory stays bounded whatever a client sends: the address bucket is
    checked first, so a throttled address adds no username key, and a
    username is keyed by a fixed-size digest, never by its text."""

    def __init__(self, per_minute: float) -> None:
        self._by_address = HandshakeLimiter(per_minute / 60, max(int(per_minute), 1))
        self._by_username = HandshakeLimiter(per_minute / 60, max(int(per_minute), 1))

    def allow(self, address: str | None, username: str) -> bool:
        if not self._by_address.allow(address):
            return False
        # The address paid for the attempt too, so neither bucket can be
        # drained through the other.
        return self._by_username.allow(username_key(username))


def username_key(username: str) -> str:
    digest = hashlib.blake2b(username.casefold().encode(errors="replace"), digest_size=16)
    return f"user:{digest.hexdigest()}"
