"""The running :class:`~.service.AuthService`, for the auth routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from second_brain_database.auth.service import AuthService


async def get_auth(connection: HTTPConnection) -> AuthService:
    auth: AuthService = connection.app.state.auth
    return auth


Auth = Annotated[AuthService, Depends(get_auth)]
