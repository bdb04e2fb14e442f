"""Access tokens: JWTs signed with the configured key, verified against a fixed
algorithm allowlist (never the token's own header) with ``exp`` required."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from second_brain_database.config import Settings

MIN_HS_KEY_BYTES = 32
ACCESS_TOKEN_USE = "access"


class InvalidToken(Exception):
    """The token cannot be used; ``reason`` is short and safe to show a client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    user_id: str
    name: str
    expires_at: float
    rooms: tuple[str, ...] | None = None
    role: str | None = None

    def may_join(self, room_id: str) -> bool:
        return self.rooms is None or "*" in self.rooms or room_id in self.rooms

    @property
    def is_host(self) -> bool:
        return self.role in ("host", "admin")


class TokenService:
    def __init__(self, settings: Settings) -> None:
        self._algorithms = list(settings.jwt_algorithms)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_s
        self._default_ttl = settings.access_token_ttl
        self._secret = settings.signing_secret()
        if any(alg.startswith("HS") for alg in self._algorithms) and (
            len(self._secret.encode()) < MIN_HS_KEY_BYTES
        ):
            raise ValueError(
                f"SBD_JWT_SECRET must be at least {MIN_HS_KEY_BYTES} bytes for HS algorithms"
            )
        self._verify_key: Any = settings.jwt_public_key or self._secret

    def issue(
        self,
        user_id: str,
        *,
        name: str | None = None,
        ttl: int | None = None,
        rooms: list[str] | None = None,
        role: str | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": user_id,
            "iat": now,
            "exp": now + (ttl or self._default_ttl),
            "token_use": ACCESS_TOKEN_USE,
        }
        if name is not None:
            claims["name"] = name
        if rooms is not None:
            claims["rooms"] = rooms
        if role is not None:
            claims["role"] = role
        if self._issuer:
            claims["iss"] = self._issuer
        if self._audience:
            claims["aud"] = self._audience
        return jwt.encode(claims, self._secret, algorithm="HS256")

    @property
    def default_ttl(self) -> int:
        return self._default_ttl

    def verify(self, token: str | None) -> Principal:
        if not token:
            raise InvalidToken("missing token")
        try:
            claims = jwt.decode(
                token,
                self._verify_key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.PyJWTError:
            raise InvalidToken("invalid token") from None
        if claims.get("token_use", ACCESS_TOKEN_USE) != ACCESS_TOKEN_USE:
            raise InvalidToken("not an access token")
        return _principal(claims)


def _principal(claims: dict[str, Any]) -> Principal:
    user_id = claims["sub"]
    if not isinstance(user_id, str) or not user_id:
        raise InvalidToken("invalid subject")
    name = claims.get("name")
    rooms = claims.get("rooms")
    if rooms is not None and not (
        isinstance(rooms, list) and all(isinstance(r, str) for r in rooms)
    ):
        raise InvalidToken("invalid rooms claim")
    role = claims.get("role")
    return Principal(
        user_id=user_id,
        name=name if isinstance(name, str) and name else user_id,
        expires_at=float(claims["exp"]),
        rooms=tuple(rooms) if rooms is not None else None,
        role=role if isinstance(role, str) else None,
    )
