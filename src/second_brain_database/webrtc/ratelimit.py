"""A token bucket, one per connection, for client frames."""

from __future__ import annotations

import time


class TokenBucket:
    __slots__ = ("_burst", "_rate", "_stamp", "_tokens", "strikes")

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self.strikes = 0
        """Frames refused since the last one allowed."""

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.strikes = 0
            return True
        self.strikes += 1
        return False
