"""Access tokens and the login store."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from second_brain_database.auth.tokens import InvalidToken, TokenService
from second_brain_database.auth.users import UserStore
from second_brain_database.config import Settings
from tests.servers import TEST_SECRET


@pytest.fixture
def tokens() -> TokenService:
    return TokenService(Settings(jwt_secret=TEST_SECRET))


def test_issue_and_verify_round_trip(tokens: TokenService) -> None:
    principal = tokens.verify(tokens.issue("alice", name="Alice", rooms=["r1"], role="host"))
    assert (principal.user_id, principal.name, principal.rooms) == ("alice", "Alice", ("r1",))
    assert principal.is_host
    assert principal.may_join("r1") and not principal.may_join("r2")


def test_name_defaults_to_subject_and_no_rooms_claim_means_any(tokens: TokenService) -> None:
    principal = tokens.verify(tokens.issue("bob"))
    assert principal.name == "bob"
    assert principal.may_join("anything")


@pytest.mark.parametrize(
    ("claims", "algorithm", "reason"),
    [
        ({"sub": "a"}, "HS256", "invalid token"),  # no exp
        ({"exp": 4102444800}, "HS256", "invalid token"),  # no sub
        ({"sub": "a", "exp": 1}, "HS256", "token expired"),
        ({"sub": "a", "exp": 4102444800}, "HS512", "invalid token"),  # not in the allowlist
        ({"sub": "a", "exp": 4102444800, "token_use": "refresh"}, "HS256", "not an access token"),
        ({"sub": "a", "exp": 4102444800, "rooms": "r1"}, "HS256", "invalid rooms claim"),
    ],
)
def test_rejections(
    tokens: TokenService, claims: dict[str, object], algorithm: str, reason: str
) -> None:
    token = jwt.encode(claims, TEST_SECRET, algorithm=algorithm)
    with pytest.raises(InvalidToken) as caught:
        tokens.verify(token)
    assert caught.value.reason == reason


def test_alg_none_is_rejected(tokens: TokenService) -> None:
    token = jwt.encode({"sub": "a", "exp": time.time() + 60}, None, algorithm="none")
    with pytest.raises(InvalidToken):
        tokens.verify(token)


def test_short_hs256_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenService(Settings(jwt_secret="short"))


def test_issuer_and_audience_are_enforced_when_configured() -> None:
    strict = TokenService(Settings(jwt_secret=TEST_SECRET, jwt_issuer="sbd", jwt_audience="calls"))
    assert strict.verify(strict.issue("alice")).user_id == "alice"
    lax = TokenService(Settings(jwt_secret=TEST_SECRET))
    with pytest.raises(InvalidToken):
        strict.verify(lax.issue("alice"))


def test_user_store_hashes_with_argon2(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.sqlite3")
    store.add("alice", "correct horse", "Alice")
    assert store.authenticate("alice", "correct horse") == ("alice", "Alice")
    assert store.authenticate("alice", "wrong password") is None
    assert store.authenticate("nobody", "correct horse") is None
    raw = (tmp_path / "users.sqlite3").read_bytes()
    assert b"correct horse" not in raw and b"$argon2id$" in raw


@pytest.mark.parametrize(
    ("name", "password"), [("", "longenough"), ("a:b", "longenough"), ("alice", "short")]
)
def test_user_store_refuses_bad_logins(tmp_path: Path, name: str, password: str) -> None:
    with pytest.raises(ValueError):
        UserStore(tmp_path / "users.sqlite3").add(name, password)
