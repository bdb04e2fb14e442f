"""Service settings, read from ``SBD_*`` environment variables (and ``.env``).

The names, meanings and defaults are fixed by the contract (PROTOCOL.md,
"Process, configuration, layout"); ``docs/configuration.md`` lists them.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

logger = logging.getLogger(__name__)

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SBD_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # The docstring under each field is its description: docs/configuration.md
        # is generated from them (scripts/gen_config_docs.py).
        use_attribute_docstrings=True,
    )

    jwt_secret: str | None = None
    """HS256 key for access tokens, at least 32 bytes. Unset: a random key per process, with a
    warning (one instance only).
    """
    jwt_algorithms: CommaList = ["HS256"]
    """Accepted JWT algorithms, comma-separated (never taken from the token)."""
    jwt_public_key: str | None = None
    """PEM public key for RS256/ES256 tokens."""
    jwt_jwks_url: str | None = None
    """JWKS endpoint for RS256/ES256 tokens."""
    jwt_issuer: str | None = None
    """Required `iss` claim, when set."""
    jwt_audience: str | None = None
    """Required `aud` claim, when set."""
    # Clock skew tolerated on exp/nbf/iat; kept small (RFC 8725 3.10 spirit).
    jwt_leeway_s: int = Field(default=10, ge=0, le=60)
    """Seconds of clock skew tolerated on `exp`, `nbf` and `iat`."""
    # JWKS: keys are kept this long, and an unknown ``kid`` triggers a refetch
    # at most once per ``jwt_jwks_min_refresh_s`` (so forged kids cannot make
    # the server hammer the issuer).
    jwt_jwks_cache_s: float = Field(default=300, gt=0)
    """Seconds JWKS keys are kept."""
    jwt_jwks_min_refresh_s: float = Field(default=10, ge=0)
    """Least seconds between JWKS refetches for an unknown `kid` (forged kids cannot make the
    server hammer the issuer).
    """
    access_token_ttl: int = Field(default=3600, gt=0)
    """Seconds an access token from the login endpoint or `sbd token` is valid."""
    # Password attempts per minute, per client address and per username.
    login_attempts_per_minute: float = Field(default=10, gt=0)
    """Password attempts per minute, per client address and per username (429 past it)."""

    redis_url: str | None = None
    """Redis for multi-instance fan-out and shared room state (standalone or Cluster), e.g.
    `redis://127.0.0.1:6379/0`. Unset: the embedded in-process broker, one instance.
    """
    # Sentinel mode (host:port of each Sentinel): Redis is the primary that
    # they name, and follows it through a failover; ``redis_url`` is unused.
    redis_sentinels: CommaList = []
    """Comma-separated `host:port` of Redis Sentinels: Redis is the primary they name, followed
    through a failover (`SBD_REDIS_URL` is then unused).
    """
    redis_sentinel_master: str = "mymaster"
    """The Sentinel master name."""
    # Applies to standalone, Cluster and the Sentinel-named primary (not to
    # the Sentinels themselves); a password inside ``redis_url`` is the other way.
    redis_password: str | None = None
    """Password for Redis: standalone, Cluster or the Sentinel-named primary (not the Sentinels
    themselves). Not together with a password in `SBD_REDIS_URL`.
    """

    stun_urls: CommaList = ["stun:stun.l.google.com:19302"]
    """Comma-separated STUN URLs handed out by the config endpoint."""
    turn_urls: CommaList = []
    """Comma-separated TURN URLs handed out by the config endpoint."""
    turn_secret: str | None = None
    """coturn's `static-auth-secret`, for ephemeral TURN credentials."""
    turn_ttl: int = Field(default=86400, gt=0)
    """Seconds a TURN credential is valid (never past the token's `exp`)."""

    allowed_origins: CommaList = []
    """Comma-separated origins allowed to open the WebSocket; a present, unlisted `Origin` is
    refused with 1008, a connection without `Origin` is admitted. Unset: all.
    """
    max_message_bytes: int = Field(default=65536, gt=0)
    """Largest client message in bytes; larger: close 1009."""
    max_peers_per_room: int = Field(default=16, gt=0)
    """Room capacity; a join to a full room is closed with 4008."""
    presence_ttl: float = Field(default=30, gt=0)
    """Seconds after which the peers of a dead instance are reaped."""
    resume_ttl: float = Field(default=30, ge=0)
    """Seconds a dropped peer may resume its session; 0: no resume."""
    send_queue_size: int = Field(default=256, gt=0)
    """Frames queued per client beyond what its socket buffers hold, before it is closed as too
    slow (1013).
    """
    # A connection that sends no message at all (not even ping) for this long
    # is closed with 4408: it only holds a place in the room.
    call_ring_timeout: float = Field(default=30, gt=0)
    """Seconds a call rings before it is `missed` (docs/protocol.md, "Calls")."""
    call_max_ringing: int = Field(default=5, gt=0)
    """Calls one user may have ringing at once; one more gets `rate_limited`."""
    idle_timeout: float = Field(default=300, gt=0)
    """Seconds without any valid client message before close 4408."""
    rate_limit_per_s: float = Field(default=100, gt=0)
    """Client frames per second per connection (token bucket rate)."""
    rate_limit_burst: int = Field(default=400, gt=0)
    """Client frames a connection may send at once (token bucket size)."""
    # Abuse limits at admission (docs/security.md). A rate of 0 turns the
    # per-IP handshake limit off; 0 turns the per-user cap off.
    handshake_rate_per_s: float = Field(default=20, ge=0)
    """WebSocket handshakes per second per client address, per instance; 0: no limit."""
    handshake_burst: int = Field(default=200, gt=0)
    """Handshakes one client address may make at once, per instance."""
    max_connections_per_user: int = Field(default=100, ge=0)
    """Open WebSocket connections per user across all instances; 0: no cap."""
    # Hostile-client bounds of the WebSocket layer (webrtc/native_ws.py,
    # webrtc/rfc6455.py; docs/security.md).
    max_message_fragments: int = Field(
        default=1024,
        gt=0,
        description="Frames one client message may be sent in; past it the connection "
        "is closed with 1009.",
    )
    close_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="Seconds a client has, after the server's close frame, to answer it "
        "and take what was sent; then its socket is aborted.",
    )
    max_handshake_bytes: int = Field(
        default=16384,
        gt=0,
        description="Bytes of an HTTP request head (a WebSocket handshake or any request); "
        "past it the answer is 431 and the connection is closed.",
    )
    handshake_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds from connecting (or from the start of the next request on a "
        "kept-alive connection) to a complete request head; then the socket is aborted.",
    )
    max_pending_handshakes: int = Field(
        default=1024,
        gt=0,
        description="Connections per process that may be waiting for their request head "
        "at once; connections past it are aborted on arrival.",
    )

    webhook_urls: CommaList = []
    """Comma-separated URLs that receive room events, signed as Standard Webhooks
    (docs/webhooks.md). Unset: no webhooks.
    """
    webhook_secret: str | None = None
    """Standard Webhooks signing secret, `whsec_<base64 of at least 24 bytes>`; required when
    `SBD_WEBHOOK_URLS` is set.
    """
    webhook_retry_initial_s: float = Field(default=1.0, gt=0, le=2)
    """Seconds before the first retry of an event a URL did not acknowledge; each retry waits
    twice as long as the one before, up to `SBD_WEBHOOK_RETRY_MAX_S`.
    """
    webhook_retry_max_s: float = Field(default=60.0, gt=0, le=60)
    """Most seconds between two attempts of one event."""
    webhook_retry_for_s: float = Field(default=86_400.0, gt=0)
    """Seconds an event is retried before it is given up on (kept for `sbd webhooks
    redeliver`). The contract asks for at least 24 hours; lower only in tests.
    """
    webhook_concurrency: int = Field(default=32, gt=0)
    """Webhook requests in flight at once, per instance."""
    database_path: Path = Path("./sbd.sqlite3")
    """SQLite file of password logins (`sbd users`)."""
    instance_id: str = Field(default_factory=lambda: secrets.token_hex(6))
    """This instance's id in Redis presence; random per process by default."""
    log_level: str = "INFO"
    """Log level of the service (`DEBUG`, `INFO`, `WARNING`, ...)."""
    # "auto": JSON when stderr is not a terminal (a service manager, a container).
    log_format: Literal["auto", "json", "text"] = "auto"
    """Log format; `auto` is JSON when stderr is not a terminal (a service manager, a container),
    text otherwise.
    """

    @field_validator(
        "jwt_algorithms",
        "stun_urls",
        "turn_urls",
        "allowed_origins",
        "redis_sentinels",
        "webhook_urls",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator(
        "redis_url",
        "redis_password",
        "turn_secret",
        "jwt_secret",
        "jwt_public_key",
        "jwt_jwks_url",
        "jwt_issuer",
        "jwt_audience",
        "webhook_secret",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("redis_sentinels")
    @classmethod
    def _host_and_port(cls, value: list[str]) -> list[str]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"a Sentinel is host:port, not {address!r}")
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"a webhook URL is http(s)://host/..., not {url!r}")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, value: str | None) -> str | None:
        if value is not None:
            webhook_key(value)  # raises ValueError with what is wrong
        return value

    @model_validator(mode="after")
    def _webhook_secret_with_urls(self) -> Settings:
        if self.webhook_urls and self.webhook_secret is None:
            raise ValueError(
                "SBD_WEBHOOK_URLS is set but SBD_WEBHOOK_SECRET is not: webhooks are signed; "
                "set SBD_WEBHOOK_SECRET to whsec_<base64 of at least 24 random bytes>"
            )
        return self

    @model_validator(mode="after")
    def _one_redis_password(self) -> Settings:
        url = self.redis_url
        if self.redis_password is not None and url and urlsplit(url).password is not None:
            raise ValueError(
                "SBD_REDIS_PASSWORD is set and SBD_REDIS_URL carries a password: set one"
            )
        return self

    @property
    def uses_redis(self) -> bool:
        """Redis (standalone, Cluster or Sentinel) rather than the embedded broker."""
        if self.redis_sentinels:
            return True
        return self.redis_url is not None and not self.redis_url.startswith("memory://")

    def signing_secret(self) -> str:
        """The HS256 key; a process-local random one when none is configured."""
        if self.jwt_secret is None:
            self.jwt_secret = secrets.token_urlsafe(48)
            logger.warning(
                "SBD_JWT_SECRET is not set: generated a random key for this process. "
                "Tokens will not survive a restart and other instances cannot verify them."
            )
        return self.jwt_secret


WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_SECRET_MIN_BYTES = 24


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret ``whsec_<base64>``."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError("SBD_WEBHOOK_SECRET must look like whsec_<base64>")
    try:
        key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("SBD_WEBHOOK_SECRET: the part after whsec_ is not base64") from None
    if len(key) < WEBHOOK_SECRET_MIN_BYTES:
        raise ValueError(
            f"SBD_WEBHOOK_SECRET decodes to {len(key)} bytes; use at least "
            f"{WEBHOOK_SECRET_MIN_BYTES} random bytes"
        )
    return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
