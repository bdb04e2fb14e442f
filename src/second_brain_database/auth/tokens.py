"""Access tokens: JWTs verified the RFC 8725 way.

- The accepted algorithms are fixed by ``SBD_JWT_ALGORITHMS``, never taken
  from the token: ``none`` cannot be configured, and a token whose header
  names an algorithm outside the list is refused before any key is touched.
- Each algorithm family has its own key: HS* only ever verifies with the
  shared secret, RS*/PS*/ES*/EdDSA only with the configured public key or a
  JWKS key of the matching type. So an RS256 public key can never be used
  as an HMAC secret (the classic HS/RS confusion), even with both allowed.
- ``exp`` and ``sub`` are required, with a small leeway; ``iss`` and ``aud``
  are enforced when configured (a token carrying an ``aud`` is refused when
  none is configured).
- Only access tokens open a session: a ``typ`` header, ``token_use`` or
  ``typ`` claim that names anything else (ID, refresh tokens) is refused.
- Claims are checked as values, not only as JSON: every string in them must
  be valid Unicode text (JSON decoders accept a lone escaped surrogate such
  as ``"\ud83d"``, which nothing downstream can encode); ``exp``, ``nbf``
  and ``iat`` must be numbers (PyJWT takes the string ``"9999999999"``);
  ``sub`` is 1-255 characters without control or line-separator characters,
  since it is logged, keyed on and shown to other peers (docs/security.md).
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.exceptions import PyJWKError

from second_brain_database.auth.jwks import JwksCache
from second_brain_database.config import Settings

MIN_HS_KEY_BYTES = 32
ACCESS_TOKEN_USE = "access"
# Longer than any sane access token; refused before parsing.
MAX_TOKEN_CHARS = 8192

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
PUBLIC_KEY_ALGORITHMS = _RSA_ALGORITHMS | frozenset(_EC_CURVES) | {"EdDSA"}
SUPPORTED_ALGORITHMS = HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS
# JWK key type each public-key algorithm needs.
_KTY = {**dict.fromkeys(_RSA_ALGORITHMS, "RSA"), **dict.fromkeys(_EC_CURVES, "EC"), "EdDSA": "OKP"}
# OpenID Connect's bound for ``sub``; user ids longer than that are a mistake or an attack.
MAX_SUBJECT_CHARS = 255
# Unicode categories a ``sub`` may not hold: controls (C0, DEL, C1: newlines,
# ANSI escapes), surrogates, and the line and paragraph separators.
_FORBIDDEN_SUBJECT_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
# RFC 7519 NumericDate claims.
_NUMERIC_DATE_CLAIMS = ("exp", "nbf", "iat")
# Header ``typ`` values of access tokens (RFC 9068 uses at+jwt).
ACCESS_TYP_HEADERS = frozenset({"jwt", "at+jwt", "application/at+jwt"})
# ``typ`` claim values of access tokens (Keycloak says "Bearer").
ACCESS_TYP_CLAIMS = frozenset({"bearer", "access", "at+jwt"})
# The ``ice`` claim: "relay" keeps the user's IP addresses from peers (their
# browsers gather TURN relay candidates only); "all" (or no claim) does not.
IcePolicy = Literal["all", "relay"]


class InvalidToken(Exception):
    """The token cannot be used.

    ``reason`` is short and safe to show a client (it goes into the close
    frame); ``detail`` says which check refused it, for metrics and tests,
    and never contains the token."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail or reason


class UnknownSigningKey(InvalidToken):
    """The token names a ``kid`` the JWKS cache does not hold (yet)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    user_id: str
    name: str
    expires_at: float
    rooms: tuple[str, ...] | None = None
    role: str | None = None
    ice_policy: IcePolicy = "all"
    calls: tuple[str, ...] | None = None
    """The ``calls`` claim: the users this token may ring (None: anyone)."""

    def may_join(self, room_id: str) -> bool:
        return self.rooms is None or "*" in self.rooms or room_id in self.rooms

    def may_call(self, user_id: str) -> bool:
        return self.calls is None or "*" in self.calls or user_id in self.calls

    @property
    def is_host(self) -> bool:
        return self.role in ("host", "admin")


class TokenService:
    def __init__(self, settings: Settings) -> None:
        self._algorithms = _checked_algorithms(settings.jwt_algorithms)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_s
        self._default_ttl = settings.access_token_ttl
        self._hmac_algorithm = next((a for a in self._algorithms if a in HMAC_ALGORITHMS), None)
        self._secret: str | None = None
        if self._hmac_algorithm is not None:
            self._secret = settings.signing_secret()
            if len(self._secret.encode()) < MIN_HS_KEY_BYTES:
                raise ValueError(
                    f"SBD_JWT_SECRET must be at least {MIN_HS_KEY_BYTES} bytes for HS algorithms"
                )
        self._public_key = (
            _load_public_key(settings.jwt_public_key) if settings.jwt_public_key else None
        )
        self.jwks = (
            JwksCache(
                settings.jwt_jwks_url,
                max_age_s=settings.jwt_jwks_cache_s,
                min_refresh_s=settings.jwt_jwks_min_refresh_s,
            )
            if settings.jwt_jwks_url
            else None
        )
        public_algorithms = [a for a in self._algorithms if a in PUBLIC_KEY_ALGORITHMS]
        if public_algorithms and self._public_key is None and self.jwks is None:
            raise ValueError(
                f"SBD_JWT_ALGORITHMS has {', '.join(public_algorithms)}: "
                "set SBD_JWT_PUBLIC_KEY or SBD_JWT_JWKS_URL"
            )
        if self._public_key is not None and not any(
            _key_fits(self._public_key, alg) for alg in public_algorithms
        ):
            raise ValueError("SBD_JWT_PUBLIC_KEY fits none of the SBD_JWT_ALGORITHMS")

    # --- lifecycle (JWKS) ------------------------------------------------------

    async def start(self) -> None:
        """Fetch the JWKS once up front, so the first joins do not wait for it."""
        if self.jwks is not None:
            await self.jwks.refetch_for_unknown_kid()

    async def aclose(self) -> None:
        if self.jwks is not None:
            await self.jwks.aclose()

    # --- issuing -------------------------------------------------------------

    @property
    def can_issue(self) -> bool:
        """False when this server only verifies tokens of an external issuer."""
        return self._secret is not None

    def issue(
        self,
        user_id: str,
        *,
        name: str | None = None,
        ttl: int | None = None,
        rooms: list[str] | None = None,
        role: str | None = None,
        ice_policy: IcePolicy | None = None,
    ) -> str:
        if self._secret is None or self._hmac_algorithm is None:
            raise ValueError("no HS algorithm in SBD_JWT_ALGORITHMS: this server cannot issue")
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
        if ice_policy is not None:
            claims["ice"] = ice_policy
        if self._issuer:
            claims["iss"] = self._issuer
        if self._audience:
            claims["aud"] = self._audience
        return jwt.encode(claims, self._secret, algorithm=self._hmac_algorithm)

    @property
    def default_ttl(self) -> int:
        return self._default_ttl

    # --- verifying -----------------------------------------------------------

    async def verify_async(self, token: str | None) -> Principal:
        """:meth:`verify`, fetching the issuer's JWKS first when the token's
        ``kid`` is new (rotation). Use this wherever an event loop runs."""
        if self.jwks is not None:
            self.jwks.refresh_in_background()
        try:
            return self.verify(token)
        except UnknownSigningKey:
            assert self.jwks is not None
            await self.jwks.refetch_for_unknown_kid()
        return self.verify(token)

    def verify(self, token: str | None) -> Principal:
        """Verify with the keys at hand; never does I/O."""
        if not token:
            raise InvalidToken("missing token")
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("invalid token", "token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("invalid token", "malformed") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise InvalidToken("invalid token", "algorithm not allowed")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCESS_TYP_HEADERS):
            raise InvalidToken("not an access token")
        key = self._key_for(algorithm, header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken("invalid token", f"missing {exc.claim}") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("invalid token", "wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("invalid token", "wrong audience") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("invalid token", "not yet valid") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("invalid token", "bad signature") from None
        except jwt.PyJWTError:
            raise InvalidToken("invalid token") from None
        _check_claim_values(claims)
        _check_token_use(claims)
        return _principal(claims)

    def _key_for(self, algorithm: str, kid: object) -> Any:
        """The one key this algorithm may be verified with (see module doc)."""
        if algorithm in HMAC_ALGORITHMS:
            return self._secret
        if self.jwks is not None and (kid is None or isinstance(kid, str)):
            jwk = self.jwks.key(kid)
            if jwk is not None:
                return _jwk_key(jwk, algorithm)
        if self._public_key is not None and _key_fits(self._public_key, algorithm):
            return self._public_key
        if self.jwks is not None:
            raise UnknownSigningKey("invalid token", "unknown signing key")
        raise InvalidToken("invalid token", "no key for algorithm")


def _checked_algorithms(configured: list[str]) -> list[str]:
    algorithms = [a.strip() for a in configured if a.strip()]
    if not algorithms:
        raise ValueError("SBD_JWT_ALGORITHMS is empty")
    unsupported = [a for a in algorithms if a not in SUPPORTED_ALGORITHMS]
    if unsupported:
        # "none" lands here: unsigned tokens are never acceptable.
        raise ValueError(f"SBD_JWT_ALGORITHMS: unsupported {', '.join(unsupported)}")
    return algorithms


def _load_public_key(value: str) -> Any:
    """A PEM public key given inline (``\\n`` escapes allowed) or as a file path."""
    text = value.strip()
    if not text.startswith("-----BEGIN"):
        text = Path(text).read_text()
    text = text.replace("\\n", "\n")
    try:
        return load_pem_public_key(text.encode())
    except ValueError:
        raise ValueError("SBD_JWT_PUBLIC_KEY is not a PEM public key") from None


def _key_fits(key: Any, algorithm: str) -> bool:
    if algorithm in _RSA_ALGORITHMS:
        return isinstance(key, rsa.RSAPublicKey)
    if algorithm in _EC_CURVES:
        return (
            isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _EC_CURVES[algorithm]
        )
    if algorithm == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def _jwk_key(jwk: dict[str, Any], algorithm: str) -> Any:
    """The JWK as a key for ``algorithm``, refused when the JWK says otherwise."""
    if jwk.get("kty") != _KTY[algorithm] or jwk.get("alg", algorithm) != algorithm:
        raise InvalidToken("invalid token", "key does not fit algorithm")
    try:
        return jwt.PyJWK(jwk, algorithm=algorithm).key
    except (PyJWKError, ValueError, TypeError):
        raise InvalidToken("invalid token", "unusable JWK") from None


def _check_claim_values(claims: dict[str, Any]) -> None:
    """The one place that holds claim values to what the rest of the service
    can carry (module doc); every token, on every path, passes here."""
    if not _is_text(claims):
        raise InvalidToken("invalid token", "claim is not valid text")
    for name in _NUMERIC_DATE_CLAIMS:
        value = claims.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidToken("invalid token", f"{name} is not a number")
    subject = claims["sub"]
    if not (isinstance(subject, str) and 0 < len(subject) <= MAX_SUBJECT_CHARS) or any(
        unicodedata.category(char) in _FORBIDDEN_SUBJECT_CATEGORIES for char in subject
    ):
        raise InvalidToken("invalid subject")


def _is_text(value: object) -> bool:
    """False when a string anywhere in ``value`` (keys included) holds a lone
    surrogate, i.e. is not encodable as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_is_text(key) and _is_text(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_is_text(item) for item in value)
    return True


def _check_token_use(claims: dict[str, Any]) -> None:
    token_use = claims.get("token_use", ACCESS_TOKEN_USE)
    typ = claims.get("typ")
    if token_use != ACCESS_TOKEN_USE or (
        typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCESS_TYP_CLAIMS)
    ):
        raise InvalidToken("not an access token")


def _principal(claims: dict[str, Any]) -> Principal:
    user_id: str = claims["sub"]  # checked by _check_claim_values
    name = claims.get("name")
    rooms = claims.get("rooms")
    if rooms is not None and not (
        isinstance(rooms, list) and all(isinstance(r, str) for r in rooms)
    ):
        raise InvalidToken("invalid rooms claim")
    calls = claims.get("calls")
    if calls is not None and not (
        isinstance(calls, list) and all(isinstance(u, str) for u in calls)
    ):
        raise InvalidToken("invalid calls claim")
    role = claims.get("role")
    return Principal(
        user_id=user_id,
        name=name if isinstance(name, str) and name else user_id,
        expires_at=float(claims["exp"]),
        rooms=tuple(rooms) if rooms is not None else None,
        role=role if isinstance(role, str) else None,
        ice_policy=_ice_policy(claims),
        calls=tuple(calls) if calls is not None else None,
    )


def _ice_policy(claims: dict[str, Any]) -> IcePolicy:
    """The ``ice`` claim. Any other value refuses the token: a misspelt
    "relay" must not quietly expose the addresses it was meant to hide."""
    value = claims.get("ice", "all")
    if value == "relay":
        return "relay"
    if value == "all":
        return "all"
    raise InvalidToken("invalid token", "invalid ice claim")
