"""Password guesses are rationed per client address and per username."""

from __future__ import annotations

from second_brain_database.webrtc.limits import HandshakeLimiter


class LoginThrottle:
    """Token buckets of ``per_minute`` attempts (burst of as many) per address
    and per username. A throttled username delays its owner too; that is the
    price of making online guessing slow (docs/security.md)."""

    def __init__(self, per_minute: float) -> None:
        self._by_address = HandshakeLimiter(per_minute / 60, max(int(per_minute), 1))
        self._by_username = HandshakeLimiter(per_minute / 60, max(int(per_minute), 1))

    def allow(self, address: str | None, username: str) -> bool:
        # Both buckets pay for the attempt, so neither can be drained through the other.
        by_address = self._by_address.allow(address)
        by_username = self._by_username.allow(f"user:{username.casefold()}")
        return by_address and by_username
