"""The driver of user sockets (``/ws/user``): one connection's life, from
``ready`` to its close, through the same connection I/O
(:class:`~second_brain_database.webrtc.connection.Connection`) and the same
action runner as room sessions."""

from __future__ import annotations

import asyncio
import contextlib
import time

from second_brain_database.auth.tokens import Principal
from second_brain_database.config import Settings
from second_brain_database.logging_setup import bind_session
from second_brain_database.webrtc import metrics
from second_brain_database.webrtc.action_runner import ActionRunner
from second_brain_database.webrtc.broker.model import BrokerUnavailable
from second_brain_database.webrtc.calls import frames
from second_brain_database.webrtc.calls.service import CallService
from second_brain_database.webrtc.calls.user_session import UserSession
from second_brain_database.webrtc.connection import Connection
from second_brain_database.webrtc.connection_manager import (
    HANDOVER_TIMEOUT_S,
    close_label,
    log_end,
)
from second_brain_database.webrtc.schemas import CloseCode
from second_brain_database.webrtc.server_info import server_info
from second_brain_database.webrtc.session import SessionEnded
from second_brain_database.webrtc.transport import SignalingSocket


class UserSockets:
    def __init__(self, calls: CallService, runner: ActionRunner, settings: Settings) -> None:
        self._calls = calls
        self._runner = runner
        self._settings = settings

    async def run(self, socket: SignalingSocket, principal: Principal) -> None:
        """Serve one accepted, authenticated user socket until it ends."""
        session = UserSession(principal, self._settings, time.monotonic())
        connection: Connection[UserSession] = Connection(socket, session)
        bind_session(peer_id=session.connection_id, user_id=principal.user_id)
        attached = False
        try:
            ringing = await self._calls.attach(connection)
            attached = True
            ready = frames.ready(principal.user_id, session.connection_id, server_info())
            connection.start(ready, ringing, distinct=True)
            await self._runner.read_forever(connection)
        except BrokerUnavailable:
            metrics.BROKER_ERRORS.inc()
            session.finish(CloseCode.TRY_AGAIN_LATER, "signaling backend unavailable, retry")
        except SessionEnded as ended:
            session.finish(ended.code, ended.reason)
        except asyncio.CancelledError:
            if session.end is None:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        finally:
            end = session.finish(CloseCode.GOING_AWAY, "")
            await connection.stop_writing()
            await socket.close(end.code, end.reason)
            if attached:
                await self._calls.detach(connection)
            metrics.CONNECTIONS_CLOSED.labels(code=close_label(end.code)).inc()
            connection.finished.set()
            log_end(connection)

    async def close_all(self, code: int, reason: str) -> None:
        """Close every user socket of this process (shutdown)."""
        connections = self._calls.connections()
        for connection in connections:
            connection.abort(code, reason)
        for connection in connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.finished.wait(), HANDOVER_TIMEOUT_S)
