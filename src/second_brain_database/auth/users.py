"""Logins in an embedded SQLite file, passwords hashed with argon2id."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    display_name TEXT,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
)
"""
USERNAME_MAX = 64


class UserStore:
    """Blocking by nature (SQLite, argon2): call it from a worker thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._hasher = PasswordHasher()
        # Verified against when the user is unknown, so both paths cost one hash.
        self._dummy_hash = self._hasher.hash("not a password")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path)
        conn.execute(_SCHEMA)
        return conn

    def add(self, username: str, password: str, display_name: str | None = None) -> None:
        if not username or len(username) > USERNAME_MAX or ":" in username:
            raise ValueError(f"username must be 1-{USERNAME_MAX} characters without ':'")
        if len(password) < 8:
            raise ValueError("password must be at least 8 characters")
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO users (username, password_hash, display_name) VALUES (?, ?, ?) "
                "ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash, "
                "display_name = excluded.display_name",
                (username, self._hasher.hash(password), display_name),
            )

    def authenticate(self, username: str, password: str) -> tuple[str, str] | None:
        """(user id, display name) when the password matches, else None."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT password_hash, display_name FROM users WHERE username = ?", (username,)
            ).fetchone()
        try:
            self._hasher.verify(row[0] if row else self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        return username, row[1] or username


def username_too_long(username: str) -> bool:
    """No stored login is longer than USERNAME_MAX: such an attempt is refused
    before it costs a throttle bucket, a key or a password hash."""
    return len(username) > USERNAME_MAX
