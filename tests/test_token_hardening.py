"""RFC 8725 checks of access tokens, one rejection per test, each proven by the
check that refused it (``InvalidToken.detail``), not merely by a refusal.

Keys are real (RSA, EC); the JWKS comes from a real local HTTP server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pydantic import ValidationError

from second_brain_database.auth.jwks import parse_jwks
from second_brain_database.auth.tokens import (
    InvalidToken,
    TokenService,
    UnknownSigningKey,
)
from second_brain_database.config import Settings
from tests.conftest import SbdFactory
from tests.keys import JwksServer, KeyPair, claims, ec_key, jwks_server, rsa_key
from tests.peers import Peer
from tests.servers import TEST_SECRET

RSA = rsa_key("rsa-1")
EC = ec_key("ec-1")
ATTACKER = rsa_key("attacker")


def service(**settings: Any) -> TokenService:
    return TokenService(Settings(**{"jwt_secret": TEST_SECRET, **settings}))


def refused(tokens: TokenService, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        tokens.verify(token)
    return caught.value


def hs256(body: dict[str, Any], key: bytes, **header: Any) -> str:
    """An HS256 JWT built by hand: PyJWT itself refuses to HMAC with a PEM key."""

    def part(data: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")

    signing_input = part({"alg": "HS256", "typ": "JWT", **header}) + b"." + part(body)
    signature = base64.urlsafe_b64encode(hmac.new(key, signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature.rstrip(b"=")).decode()


# --- configuration refused at startup -----------------------------------------


@pytest.mark.parametrize("algorithms", [["none"], ["HS256", "none"], ["HS257"], []])
def test_unsigned_or_unknown_algorithms_cannot_be_configured(algorithms: list[str]) -> None:
    with pytest.raises(ValueError, match="SBD_JWT_ALGORITHMS"):
        service(jwt_algorithms=algorithms)


def test_public_key_algorithms_need_a_key() -> None:
    with pytest.raises(ValueError, match="SBD_JWT_PUBLIC_KEY or SBD_JWT_JWKS_URL"):
        service(jwt_algorithms=["RS256"])


def test_a_public_key_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ValueError, match="fits none"):
        service(jwt_algorithms=["RS256"], jwt_public_key=EC.public_pem)


def test_leeway_is_kept_small() -> None:
    with pytest.raises(ValidationError):
        Settings(jwt_leeway_s=3600)


def test_no_shared_secret_is_needed_or_issued_with_public_keys_only() -> None:
    tokens = TokenService(Settings(jwt_algorithms=["RS256"], jwt_public_key=RSA.public_pem))
    assert not tokens.can_issue
    with pytest.raises(ValueError, match="cannot issue"):
        tokens.issue("alice")


def test_pem_with_escaped_newlines_or_as_a_file(tmp_path: Path) -> None:
    escaped = RSA.public_pem.replace("\n", "\\n")
    path = tmp_path / "issuer.pem"
    path.write_text(RSA.public_pem)
    for value in (escaped, str(path)):
        tokens = service(jwt_algorithms=["RS256"], jwt_public_key=value)
        assert tokens.verify(RSA.sign("RS256", claims())).user_id == "alice"


# --- algorithm and key confusion ---------------------------------------------


def test_alg_none_token_is_refused_by_the_allowlist() -> None:
    token = jwt.encode(claims(), "", algorithm="none")
    assert refused(service(), token).detail == "algorithm not allowed"


def test_algorithm_outside_the_allowlist_is_refused() -> None:
    token = jwt.encode(claims(), TEST_SECRET * 2, algorithm="HS512")
    assert refused(service(), token).detail == "algorithm not allowed"


def test_hmac_signed_with_the_public_key_is_refused_when_only_rs256_is_allowed() -> None:
    tokens = service(jwt_algorithms=["RS256"], jwt_public_key=RSA.public_pem)
    forged = hs256(claims(), RSA.public_pem.encode())
    assert refused(tokens, forged).detail == "algorithm not allowed"


def test_hmac_signed_with_the_public_key_fails_even_with_hs256_allowed() -> None:
    # Both families allowed: HS256 is checked with the shared secret only,
    # never with the RSA public key the attacker knows.
    tokens = service(jwt_algorithms=["HS256", "RS256"], jwt_public_key=RSA.public_pem)
    forged = hs256(claims(), RSA.public_pem.encode())
    assert refused(tokens, forged).detail == "bad signature"
    assert tokens.verify(RSA.sign("RS256", claims())).user_id == "alice"
    assert tokens.verify(tokens.issue("bob")).user_id == "bob"


def test_rs256_and_es256_with_configured_public_keys() -> None:
    rs = service(jwt_algorithms=["RS256"], jwt_public_key=RSA.public_pem)
    assert rs.verify(RSA.sign("RS256", claims(name="Alice"))).name == "Alice"
    assert refused(rs, ATTACKER.sign("RS256", claims())).detail == "bad signature"
    es = service(jwt_algorithms=["ES256"], jwt_public_key=EC.public_pem)
    assert es.verify(EC.sign("ES256", claims())).user_id == "alice"


def test_an_overlong_token_is_refused_before_parsing() -> None:
    assert refused(service(), "a" * 9000).detail == "token too long"


# --- claims -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (lambda: {"sub": "a"}, "missing exp"),
        (lambda: {"exp": int(time.time()) + 60}, "missing sub"),
        (lambda: claims(ttl=-30), "token expired"),
        (lambda: claims(nbf=int(time.time()) + 60), "not yet valid"),
        (lambda: claims(iat=int(time.time()) + 60), "not yet valid"),
        (lambda: claims(aud="another-service"), "wrong audience"),  # no audience configured
    ],
)
def test_claim_rejections(body: Callable[[], dict[str, Any]], detail: str) -> None:
    # Claims are made when the test runs, not when it is collected.
    token = jwt.encode(body(), TEST_SECRET, algorithm="HS256")
    assert refused(service(), token).detail == detail


def test_expiry_within_the_leeway_is_tolerated() -> None:
    token = jwt.encode(claims(ttl=-5), TEST_SECRET, algorithm="HS256")
    assert service(jwt_leeway_s=10).verify(token).user_id == "alice"
    assert refused(service(jwt_leeway_s=0), token).detail == "token expired"


@pytest.mark.parametrize(
    ("extra", "detail"),
    [
        ({}, "missing iss"),
        ({"iss": "https://evil.example"}, "wrong issuer"),
        ({"iss": "https://idp.example", "aud": "other"}, "wrong audience"),
        ({"iss": "https://idp.example"}, "missing aud"),
    ],
)
def test_issuer_and_audience_when_configured(extra: dict[str, Any], detail: str) -> None:
    tokens = service(jwt_issuer="https://idp.example", jwt_audience="sbd")
    token = jwt.encode(claims(**extra), TEST_SECRET, algorithm="HS256")
    assert refused(tokens, token).detail == detail
    good = jwt.encode(claims(iss="https://idp.example", aud="sbd"), TEST_SECRET, algorithm="HS256")
    assert tokens.verify(good).user_id == "alice"


@pytest.mark.parametrize(
    ("header", "body"),
    [
        ({"typ": "refresh+jwt"}, {}),
        ({"typ": "id_token"}, {}),
        ({}, {"token_use": "id"}),
        ({}, {"token_use": "refresh"}),
        ({}, {"typ": "Refresh"}),
        ({}, {"typ": "ID"}),
    ],
)
def test_only_access_tokens_are_accepted(header: dict[str, Any], body: dict[str, Any]) -> None:
    token = jwt.encode(claims(**body), TEST_SECRET, algorithm="HS256", headers=header)
    assert refused(service(), token).detail == "not an access token"


@pytest.mark.parametrize(
    ("header", "body"),
    [({"typ": "at+jwt"}, {}), ({"typ": "JWT"}, {"typ": "Bearer"}), ({}, {"token_use": "access"})],
)
def test_access_token_markers_are_accepted(header: dict[str, Any], body: dict[str, Any]) -> None:
    token = jwt.encode(claims(**body), TEST_SECRET, algorithm="HS256", headers=header)
    assert service().verify(token).user_id == "alice"


# --- JWKS ---------------------------------------------------------------------


def jwks_service(server: JwksServer, **settings: Any) -> TokenService:
    return service(
        jwt_algorithms=["RS256", "ES256"],
        jwt_jwks_url=server.url,
        jwt_jwks_min_refresh_s=settings.pop("min_refresh", 60),
        **settings,
    )


async def test_jwks_keys_are_fetched_for_an_unknown_kid_and_then_cached() -> None:
    with jwks_server() as server:
        server.publish(RSA, EC)
        tokens = jwks_service(server, min_refresh=0)
        token = RSA.sign("RS256", claims())
        with pytest.raises(UnknownSigningKey):
            tokens.verify(token)  # the sync path never fetches
        assert (await tokens.verify_async(token)).user_id == "alice"
        assert (await tokens.verify_async(EC.sign("ES256", claims()))).user_id == "alice"
        assert tokens.verify(token).user_id == "alice"
        assert server.requests == 1
        await tokens.aclose()


async def test_jwks_key_rotation_is_picked_up() -> None:
    with jwks_server() as server:
        server.publish(RSA)
        tokens = jwks_service(server, min_refresh=0)
        await tokens.start()
        rotated = rsa_key("rsa-2")
        server.publish(rotated)
        assert (await tokens.verify_async(rotated.sign("RS256", claims()))).user_id == "alice"
        assert server.requests == 2
        await tokens.aclose()


async def test_forged_kids_cannot_make_the_server_hammer_the_issuer() -> None:
    with jwks_server() as server:
        server.publish(RSA)
        tokens = jwks_service(server, min_refresh=60)
        await tokens.start()
        for _ in range(20):
            forged = ATTACKER.sign("RS256", claims(), kid=secrets.token_hex(8))
            with pytest.raises(InvalidToken) as caught:
                await tokens.verify_async(forged)
            assert caught.value.detail == "unknown signing key"
        assert server.requests == 1  # the start-up fetch only
        await tokens.aclose()


async def test_jwks_fetch_does_not_block_the_event_loop() -> None:
    with jwks_server() as server:
        server.publish(RSA)
        server.delay_s = 0.6
        tokens = jwks_service(server)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        ticker = asyncio.create_task(tick())
        assert (await tokens.verify_async(RSA.sign("RS256", claims()))).user_id == "alice"
        ticker.cancel()
        assert ticks >= 6, f"the loop stalled during the fetch ({ticks} ticks)"
        await tokens.aclose()


async def test_a_jwk_of_another_key_type_is_not_used_for_the_algorithm() -> None:
    with jwks_server() as server:
        # An EC key published under the kid the attacker's RS256 token names.
        server.publish(KeyPair(EC.private, "shared-kid"))
        tokens = jwks_service(server)
        await tokens.start()
        token = rsa_key("shared-kid").sign("RS256", claims())
        with pytest.raises(InvalidToken) as caught:
            await tokens.verify_async(token)
        assert caught.value.detail == "key does not fit algorithm"
        await tokens.aclose()


async def test_symmetric_keys_in_a_jwks_are_ignored() -> None:
    secret = secrets.token_bytes(32)
    with jwks_server() as server:
        k = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
        server.document = {"keys": [{"kty": "oct", "k": k, "kid": "sym", "alg": "HS256"}]}
        tokens = service(jwt_algorithms=["HS256", "RS256"], jwt_jwks_url=server.url)
        await tokens.start()
        forged = hs256(claims(), secret, kid="sym")
        with pytest.raises(InvalidToken) as caught:
            await tokens.verify_async(forged)
        assert caught.value.detail == "bad signature"  # checked with SBD_JWT_SECRET only
        await tokens.aclose()


async def test_an_unreachable_or_oversized_jwks_keeps_the_known_keys() -> None:
    with jwks_server() as server:
        server.publish(RSA)
        tokens = jwks_service(server, min_refresh=0)
        await tokens.start()
        server.document = {"keys": [{"kty": "RSA", "kid": "pad", "n": "A" * 300_000}]}
        with pytest.raises(InvalidToken):
            await tokens.verify_async(ATTACKER.sign("RS256", claims()))
        assert server.requests == 2
        assert (await tokens.verify_async(RSA.sign("RS256", claims()))).user_id == "alice"
        await tokens.aclose()
    unreachable = jwks_service(server)  # the server is gone now
    await unreachable.start()  # logs, does not raise
    with pytest.raises(InvalidToken):
        await unreachable.verify_async(RSA.sign("RS256", claims()))
    await unreachable.aclose()


def test_jwks_parsing_keeps_only_asymmetric_signature_keys() -> None:
    document = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            {**RSA.jwk(), "use": "enc", "kid": "for-encryption"},
            RSA.jwk(),
            "junk",
        ]
    }
    assert set(parse_jwks(json.dumps(document).encode())) == {"rsa-1"}
    with pytest.raises(ValueError):
        parse_jwks(b'{"no": "keys"}')


# --- end to end: `sbd serve` trusting an external issuer ------------------------


async def test_a_server_verifying_an_external_issuer(sbd_factory: SbdFactory) -> None:
    """RS256 through a JWKS and ES256 through a PEM key, on the WebSocket and
    REST paths; no shared secret accepted, no password login offered."""
    with jwks_server() as jwks:
        jwks.publish(RSA)
        server = sbd_factory(
            {
                "SBD_JWT_ALGORITHMS": "RS256,ES256",
                "SBD_JWT_JWKS_URL": jwks.url,
                "SBD_JWT_PUBLIC_KEY": EC.public_pem.replace("\n", "\\n"),
                "SBD_JWT_ISSUER": "https://idp.example",
                "SBD_JWT_JWKS_MIN_REFRESH_S": "0",  # the rotation below is immediate
            }
        )
        assert jwks.requests == 1  # fetched at startup
        good = claims("erin", iss="https://idp.example")
        peer = await Peer.join(server.ws_url, "idp-room", RSA.sign("RS256", good))
        assert peer.welcome["payload"]["user_id"] == "erin"
        await Peer.join(server.ws_url, "idp-room", EC.sign("ES256", good))
        rotated = rsa_key("rsa-rotated")
        jwks.publish(RSA, rotated)
        await Peer.join(server.ws_url, "idp-room", rotated.sign("RS256", good))
        for bad in (
            jwt.encode(good, TEST_SECRET, algorithm="HS256"),  # the suite's shared secret
            hs256(good, RSA.public_pem.encode()),  # key confusion
            RSA.sign("RS256", claims("erin")),  # no iss
        ):
            refused = await Peer.connect(server.ws_url, "idp-room", bad)
            assert (await refused.expect_close())[0] == 4003
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            auth = {"Authorization": f"Bearer {rotated.sign('RS256', good)}"}
            assert (await http.get("/api/v1/webrtc/config", headers=auth)).status_code == 200
            login = await http.post("/api/v1/auth/token", data={"username": "a", "password": "b"})
            assert login.status_code == 404
