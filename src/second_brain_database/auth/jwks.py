"""An issuer's signing keys from its JWKS URL, fetched off the hot path and cached.

Token verification runs on the event loop that relays signaling, so the
fetch is async (httpx) and never happens inside :meth:`TokenService.verify`.
Two things trigger one:

- a ``kid`` the cache does not know (key rotation): the caller awaits a
  refetch, but at most one per ``min_refresh_s``, so a stream of tokens with
  forged ``kid`` values cannot turn the server into a load generator against
  the issuer;
- keys older than ``max_age_s``: refreshed in the background while the old
  ones keep serving.

A failed fetch keeps the keys already known (the issuer being briefly down
must not lock everyone out) and is logged without the response body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

import httpx
import orjson

logger = logging.getLogger(__name__)

MAX_JWKS_BYTES = 256 * 1024
FETCH_TIMEOUT_S = 5.0
# Only public-key types: an ``oct`` (shared secret) key published in a JWKS
# would let anyone who reads the JWKS mint tokens.
ASYMMETRIC_KTY = frozenset({"RSA", "EC", "OKP"})
Jwk = dict[str, Any]


class JwksCache:
    def __init__(self, url: str, *, max_age_s: float, min_refresh_s: float) -> None:
        self.url = url
        self._max_age_s = max_age_s
        self._min_refresh_s = min_refresh_s
        self._keys: dict[str, Jwk] = {}
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None
        self._background: asyncio.Task[None] | None = None
        self.fetches = 0
        """Fetch attempts so far (observable by tests and operators)."""

    def key(self, kid: str | None) -> Jwk | None:
        """The key for ``kid``; a token without one matches a JWKS of one key."""
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    @property
    def stale(self) -> bool:
        return time.monotonic() - self._fetched_at > self._max_age_s

    async def refetch_for_unknown_kid(self) -> None:
        """Refetch now unless one was attempted within ``min_refresh_s``."""
        async with self._lock:
            if time.monotonic() - self._attempted_at < self._min_refresh_s:
                return
            await self._fetch_locked()

    def refresh_in_background(self) -> None:
        """Start a refresh if the keys are stale and none is running."""
        if not self.stale or (self._background is not None and not self._background.done()):
            return
        self._background = asyncio.create_task(self._refresh_if_stale(), name="sbd-jwks-refresh")

    async def _refresh_if_stale(self) -> None:
        async with self._lock:
            if self.stale and time.monotonic() - self._attempted_at >= self._min_refresh_s:
                await self._fetch_locked()

    async def _fetch_locked(self) -> None:
        self._attempted_at = time.monotonic()
        self.fetches += 1
        try:
            keys = await self._download()
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("JWKS fetch from %s failed: %s", self.url, type(exc).__name__)
            return
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def _download(self) -> dict[str, Jwk]:
        if self._client is None:
            # No redirects: the configured URL is the trust anchor.
            self._client = httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=False)
        body = bytearray()
        async with self._client.stream("GET", self.url) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("JWKS document too large")
        return parse_jwks(bytes(body))

    async def aclose(self) -> None:
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def parse_jwks(body: bytes) -> dict[str, Jwk]:
    """kid -> JWK for the usable signature keys of a JWKS document."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("JWKS is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("JWKS has no keys list")
    keys: dict[str, Jwk] = {}
    for jwk in entries:
        if not isinstance(jwk, dict) or jwk.get("kty") not in ASYMMETRIC_KTY:
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        keys[kid if isinstance(kid, str) else ""] = jwk
    return keys
