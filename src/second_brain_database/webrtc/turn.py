"""ICE server configuration with ephemeral TURN credentials.

Credentials follow the TURN REST API convention that coturn checks with
``use-auth-secret``: ``username = "<unix expiry>:<user_id>"`` and
``credential = base64(HMAC-SHA1(secret, username))``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

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


def rtc_configuration(
    settings: Settings, user_id: str, now: float | None = None
) -> RtcConfiguration:
    servers: list[IceServer] = []
    if settings.stun_urls:
        servers.append(IceServer(urls=list(settings.stun_urls)))
    if settings.turn_urls and settings.turn_secret:
        expiry = int(now if now is not None else time.time()) + settings.turn_ttl
        # ':' separates expiry from user in the REST convention; keep it unambiguous.
        username = f"{expiry}:{user_id.replace(':', '_')}"
        servers.append(
            IceServer(
                urls=list(settings.turn_urls),
                username=username,
                credential=turn_credential(settings.turn_secret, username),
            )
        )
    return RtcConfiguration(iceServers=servers)


def with_lifetime(config: RtcConfiguration, ttl: int) -> RtcConfiguration:
    """``config`` saying when its TURN credentials expire, ``ttl`` seconds
    after it was made (``SBD_TURN_TTL``); unchanged without credentials."""
    if not any(server.credential for server in config.iceServers):
        return config
    return config.model_copy(update={"expiresIn": ttl})
