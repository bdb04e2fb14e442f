"""``sbd check``: is this host's configuration one that can serve?

Each check yields one line: ``ok``, ``warn`` (works, but not as an operator
likely wants) or ``FAIL`` (will not work). It reads the same settings the
server reads (``SBD_*`` and ``.env``), and talks to Redis and to each TURN
URL the way the server and browsers will.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from second_brain_database.config import Settings

Status = Literal["ok", "warn", "FAIL"]
PROBE_USER = "sbd-check"


@dataclass(frozen=True)
class Finding:
    status: Status
    topic: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<5} {self.topic:<9} {self.detail}"


def run_checks(settings: Settings, *, probe_turn: bool = True) -> list[Finding]:
    findings = [
        *_jwt(settings),
        *_redis(settings),
        *_stun(settings),
        *_turn(settings, probe_turn),
        *_service(settings),
        *_webhooks(settings),
    ]
    return findings


def safe_url(url: str) -> str:
    """``url`` without its password (Redis URLs may carry one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _jwt(settings: Settings) -> Iterator[Finding]:
    algorithms = ", ".join(settings.jwt_algorithms)
    hmac_algs = [a for a in settings.jwt_algorithms if a.startswith("HS")]
    key_algs = [a for a in settings.jwt_algorithms if not a.startswith("HS")]
    if hmac_algs:
        if settings.jwt_secret is None:
            status: Status = "FAIL" if settings.uses_redis else "warn"
            yield Finding(
                status,
                "jwt",
                "SBD_JWT_SECRET is not set: each process makes up its own key, so tokens "
                "do not survive a restart"
                + (" and other instances reject them" if settings.uses_redis else ""),
            )
        elif len(settings.jwt_secret.encode()) < 32:
            yield Finding("FAIL", "jwt", "SBD_JWT_SECRET is shorter than 32 bytes")
        else:
            size = len(settings.jwt_secret.encode())
            yield Finding("ok", "jwt", f"{algorithms}; shared key of {size} bytes")
    if key_algs and not (settings.jwt_public_key or settings.jwt_jwks_url):
        yield Finding(
            "FAIL", "jwt", f"{', '.join(key_algs)} need SBD_JWT_PUBLIC_KEY or SBD_JWT_JWKS_URL"
        )
    elif key_algs:
        source = "SBD_JWT_JWKS_URL" if settings.jwt_jwks_url else "SBD_JWT_PUBLIC_KEY"
        yield Finding("ok", "jwt", f"{', '.join(key_algs)} verified with {source}")
    claims = [
        f"iss={settings.jwt_issuer}" if settings.jwt_issuer else "",
        f"aud={settings.jwt_audience}" if settings.jwt_audience else "",
    ]
    if any(claims):
        yield Finding("ok", "jwt", "tokens must carry " + " ".join(c for c in claims if c))
    if settings.access_token_ttl > 86400:
        yield Finding("warn", "jwt", f"access tokens live {settings.access_token_ttl}s (> 1 day)")


def _redis(settings: Settings) -> Iterator[Finding]:
    if not settings.uses_redis:
        yield Finding("ok", "redis", "not configured: embedded broker, one instance (no --workers)")
        return
    yield from asyncio.run(_probe_redis(settings))


async def _probe_redis(settings: Settings) -> list[Finding]:
    """Redis reached the way the server reaches it (``redis_clients``), once."""
    from redis.exceptions import RedisError

    from second_brain_database.redis_clients import RedisUnreachable, connect_redis

    findings = await _probe_sentinels(settings) if settings.redis_sentinels else []
    if any(f.status == "FAIL" for f in findings):
        return findings
    shown = (
        f"primary of {settings.redis_sentinel_master}"
        if settings.redis_sentinels
        else safe_url(settings.redis_url or "")
    )
    try:
        redis = await connect_redis(settings, attempts=1)
    except RedisUnreachable as exc:
        return [*findings, Finding("FAIL", "redis", f"{shown}: unreachable ({exc.__cause__})")]
    assert redis is not None
    try:
        start = time.perf_counter()
        await redis.client.ping()
        elapsed = (time.perf_counter() - start) * 1000
        instances = await redis.client.zcard("sbd:instances")
        if redis.cluster is not None:
            kind = f"Cluster of {len(redis.cluster.get_primaries())} masters"
        else:
            kind = "Redis " + str((await redis.client.info("server")).get("redis_version", "?"))
    except (RedisError, OSError) as exc:
        return [*findings, Finding("FAIL", "redis", f"{shown}: unreachable ({exc})")]
    finally:
        await redis.aclose()
    detail = f"{shown}: PONG in {elapsed:.1f} ms ({kind}; {instances} live instances)"
    return [*findings, Finding("ok", "redis", detail)]


async def _probe_sentinels(settings: Settings) -> list[Finding]:
    """The Sentinels reached, and the primary and replicas they name."""
    from redis.exceptions import RedisError

    from second_brain_database.redis_clients import make_sentinel

    sentinel = make_sentinel(settings)
    name = settings.redis_sentinel_master
    findings = []
    try:
        reached, missed = [], []
        for address, client in zip(settings.redis_sentinels, sentinel.sentinels, strict=True):
            try:
                await client.ping()
                reached.append(address)
            except (RedisError, OSError):
                missed.append(address)
        count = f"{len(reached)} of {len(settings.redis_sentinels)} Sentinels reached"
        if not reached:
            return [Finding("FAIL", "redis", f"{count}: {', '.join(missed)} unreachable")]
        status: Status = "warn" if missed else "ok"
        unreachable = f"; unreachable: {', '.join(missed)}" if missed else ""
        findings.append(Finding(status, "redis", f"{count} ({', '.join(reached)}){unreachable}"))
        try:
            host, port = await sentinel.discover_master(name)
        except RedisError as exc:
            return [*findings, Finding("FAIL", "redis", f"no primary named {name!r}: {exc}")]
        findings.append(Finding("ok", "redis", f"primary of {name}: {host}:{port}"))
        replicas = await sentinel.discover_slaves(name)
        if replicas:
            listed = ", ".join(":".join(map(str, replica)) for replica in replicas)
            findings.append(Finding("ok", "redis", f"replicas of {name}: {listed}"))
        else:
            findings.append(
                Finding("warn", "redis", f"{name} has no live replica: nothing to fail over to")
            )
    finally:
        await sentinel.aclose()
    return findings


def _stun(settings: Settings) -> Iterator[Finding]:
    bad = [url for url in settings.stun_urls if not url.startswith(("stun:", "stuns:"))]
    if bad:
        yield Finding("FAIL", "stun", f"not stun: URLs: {', '.join(bad)}")
    elif settings.stun_urls:
        yield Finding("ok", "stun", ", ".join(settings.stun_urls))
    else:
        yield Finding("warn", "stun", "no STUN URLs: peers learn no public address")


def _turn(settings: Settings, probe_turn: bool) -> Iterator[Finding]:
    from second_brain_database.ops.turn_probe import TurnProbeError, TurnUrl, probe
    from second_brain_database.webrtc.turn import turn_credential

    if not settings.turn_urls:
        if settings.turn_secret:
            yield Finding("warn", "turn", "SBD_TURN_SECRET is set but SBD_TURN_URLS is empty")
        else:
            yield Finding(
                "warn", "turn", "no TURN: peers behind symmetric NATs or firewalls cannot connect"
            )
        return
    if not settings.turn_secret:
        yield Finding("FAIL", "turn", "SBD_TURN_URLS is set but SBD_TURN_SECRET is not")
        return
    username = f"{int(time.time()) + 60}:{PROBE_USER}"
    password = turn_credential(settings.turn_secret, username)
    for url in settings.turn_urls:
        try:
            TurnUrl.parse(url)
        except ValueError as exc:
            yield Finding("FAIL", "turn", str(exc))
            continue
        if not probe_turn:
            yield Finding("ok", "turn", f"{url}: well formed (not probed)")
            continue
        try:
            allocation = probe(url, username, password)
        except TurnProbeError as exc:
            hint = (
                " (is the TURN server's static-auth-secret the same as SBD_TURN_SECRET?)"
                if exc.code == 401
                else ""
            )
            yield Finding("FAIL", "turn", f"{url}: {exc}{hint}")
        except OSError as exc:
            yield Finding("FAIL", "turn", f"{url}: unreachable ({exc})")
        else:
            yield Finding(
                "ok",
                "turn",
                f"{url}: allocated a relay with a credential from SBD_TURN_SECRET "
                f"(realm {allocation.realm})",
            )
    if settings.turn_ttl > 86400:
        yield Finding("warn", "turn", f"TURN credentials live {settings.turn_ttl}s (> 1 day)")


def _service(settings: Settings) -> Iterator[Finding]:
    if settings.allowed_origins:
        yield Finding("ok", "origins", ", ".join(settings.allowed_origins))
    else:
        yield Finding(
            "warn", "origins", "SBD_ALLOWED_ORIGINS is unset: any web page may open the WebSocket"
        )


def _webhooks(settings: Settings) -> Iterator[Finding]:
    """Each webhook URL answers HTTP (any status: a receiver may refuse a
    request that is not a signed event, but it is there)."""
    import httpx

    for url in settings.webhook_urls:
        shown = safe_url(url.split("?", 1)[0])
        try:
            answer = httpx.get(url, timeout=5)
        except httpx.HTTPError as exc:
            yield Finding("FAIL", "webhooks", f"{shown}: no answer ({type(exc).__name__}: {exc})")
        else:
            yield Finding("ok", "webhooks", f"{shown}: answers (HTTP {answer.status_code})")
