"""WebSocket handshakes per client address, counted by each instance.

Consulted before anything costly (token signatures, room state), so it
costs no Redis round trip. It keys on the address uvicorn reports, which
behind a proxy is the client only if ``--forwarded-allow-ips`` trusts that
proxy; IPv6 clients are keyed by their /64, the smallest block a single host
is routinely given.
"""

from __future__ import annotations

import ipaddress

from second_brain_database.limits.token_bucket import TokenBuckets


def client_key(host: str | None) -> str:
    """The rate-limit key of a client address: IPv4 as is, IPv6 by /64."""
    if not host:
        return "?"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class HandshakeLimiter:
    """A token bucket per client address; a rate of 0 turns it off."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.enabled = rate_per_s > 0
        self._buckets = TokenBuckets(rate_per_s, burst)

    def allow(self, host: str | None) -> bool:
        return not self.enabled or self._buckets.allow(client_key(host))
