"""``POST /api/v1/auth/token``: the OAuth2 password flow for stored logins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from second_brain_database.auth.dependencies import Auth
from second_brain_database.auth.metrics import AUTH_FAILURES
from second_brain_database.auth.users import username_too_long

router = APIRouter(tags=["auth"])


class AccessToken(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


@router.post("/api/v1/auth/token", response_model=AccessToken)
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], auth: Auth, request: Request
) -> AccessToken:
    """Exchange a username and password for a short-lived access token."""
    if not auth.tokens.can_issue:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, "password login is off: tokens come from an external issuer"
        )
    if username_too_long(form.username):
        AUTH_FAILURES.labels(reason="username too long").inc()
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "incorrect username or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    client = request.client.host if request.client else None
    if not await auth.login_throttle.allow(client, form.username):
        AUTH_FAILURES.labels(reason="login throttled").inc()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many login attempts; wait a minute",
            headers={"Retry-After": "60"},
        )
    # argon2 and SQLite block: keep them off the event loop that relays signaling.
    identity = await run_in_threadpool(auth.users.authenticate, form.username, form.password)
    if identity is None:
        AUTH_FAILURES.labels(reason="bad credentials").inc()
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "incorrect username or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    user_id, name = identity
    ttl = auth.tokens.default_ttl
    return AccessToken(access_token=auth.tokens.issue(user_id, name=name, ttl=ttl), expires_in=ttl)
