"""Token buckets: one per connection for client frames, or one per key
(a client address, a username) in a bounded map."""

from __future__ import annotations

import time
from collections import OrderedDict

# Keys tracked at once; the least recently seen is forgotten first (it then
# starts again with a full bucket, which is the lenient direction).
MAX_TRACKED_KEYS = 10_000


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


class TokenBuckets:
    """A bucket per key, in this process, for at most :data:`MAX_TRACKED_KEYS` keys."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, key: str) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst)
            if len(self._buckets) > MAX_TRACKED_KEYS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.allow()
