"""ICE server configuration with ephemeral TURN credentials.

Credentials follow the TURN REST API convention that coturn checks with
``use-auth-secret``: ``username = "<unix expiry>:<user_id>"`` and
``credential = base64(HMAC-SHA1(secret, username))``.

- Expiry: the earlier of ``SBD_TURN_TTL`` from now and the access token's
  ``exp``, so a short-lived token never buys a long-lived relay.
- User: percent-encoded (``quote(user_id, safe="")``: ``:`` becomes ``%3A``,
  ``%`` becomes ``%25``), an injective encoding, so two user ids never share
  a TURN username and the ``:`` after the expiry stays the only one. An
  encoding longer than :data:`MAX_TURN_USER_CHARS` (STUN caps USERNAME at
  513 bytes) is replaced by ``*`` and a SHA-256 prefix; ``*`` is never
  produced by the percent-encoding, so the two forms cannot meet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import quote

from pydantic import BaseModel, Field

from second_brain_database.auth.tokens import IcePolicy
from second_brain_database.config import Settings


class IceServer(BaseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class RtcConfiguration(BaseModel):
    """Passed as is to ``new RTCPeerConnection(...)`` (browsers ignore
    ``expiresIn``: seconds until its TURN credentials expire, absent without
    TURN; clients fetch a fresh one before then)."""

    iceServers: list[IceServer] = Field(default_factory=list)
    iceTransportPolicy: IcePolicy = "all"
    expiresIn: int | None = None


def turn_credential(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


# Room for "<expiry>:" within STUN's 513-byte USERNAME.
MAX_TURN_USER_CHARS = 400


def turn_user(user_id: str) -> str:
    """The user part of a TURN username: one per user id (module doc)."""
    encoded = quote(user_id, safe="")
    if len(encoded) <= MAX_TURN_USER_CHARS:
        return encoded
    return "*" + hashlib.sha256(user_id.encode()).hexdigest()[:40]


def rtc_configuration(
    settings: Settings,
    user_id: str,
    now: float | None = None,
    token_expires_at: float | None = None,
) -> RtcConfiguration:
    servers: list[IceServer] = []
    if settings.stun_urls:
        servers.append(IceServer(urls=list(settings.stun_urls)))
    if settings.turn_urls and settings.turn_secret:
        expiry = int(now if now is not None else time.time()) + settings.turn_ttl
        if token_expires_at is not None:
            expiry = min(expiry, int(token_expires_at))
        username = f"{expiry}:{turn_user(user_id)}"
        servers.append(
            IceServer(
                urls=list(settings.turn_urls),
                username=username,
                credential=turn_credential(settings.turn_secret, username),
            )
        )
    return RtcConfiguration(iceServers=servers)


def with_lifetime(config: RtcConfiguration, now: float) -> RtcConfiguration:
    """``config`` saying how many seconds after ``now`` (the moment it was
    made) its TURN credentials expire: the expiry their usernames carry, which
    is the earlier of ``SBD_TURN_TTL`` and the token's ``exp``. Unchanged
    without credentials."""
    expiries = [
        int(server.username.split(":", 1)[0])
        for server in config.iceServers
        if server.credential and server.username
    ]
    if not expiries:
        return config
    return config.model_copy(update={"expiresIn": max(min(expiries) - int(now), 0)})
