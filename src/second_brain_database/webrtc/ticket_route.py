"""``POST /api/v1/webrtc/ticket``: an access token in, a one-time ticket out.

Clients open the room WebSocket with ``?ticket=`` instead of ``?token=``, so
the long-lived token never appears in a URL
(see :mod:`second_brain_database.auth.tickets`). Included by the webrtc router.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, Field

from second_brain_database.auth.tickets import TicketUnavailable, TooManyTickets
from second_brain_database.auth.tokens import InvalidToken
from second_brain_database.webrtc.dependencies import CurrentUser, Service
from second_brain_database.webrtc.schemas import ROOM_ID_PATTERN

router = APIRouter(tags=["webrtc"])


class TicketRequest(BaseModel):
    room_id: str = Field(pattern=ROOM_ID_PATTERN)


class TicketResponse(BaseModel):
    ticket: str
    expires_in: int


@router.post("/api/v1/webrtc/ticket", response_model=TicketResponse)
async def issue_ticket(
    body: TicketRequest, user: CurrentUser, service: Service, response: Response
) -> TicketResponse:
    """A single-use credential for ``/ws/webrtc/{room_id}?ticket=``, valid 30 s."""
    if not user.may_join(body.room_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "token not valid for this room")
    try:
        ticket, ttl = await service.auth.tickets.issue(user, body.room_id)
    except TooManyTickets:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, "too many tickets, retry shortly"
        ) from None
    except TicketUnavailable:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "ticket store unavailable"
        ) from None
    except InvalidToken as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, exc.reason) from None
    response.headers["Cache-Control"] = "no-store"
    return TicketResponse(ticket=ticket, expires_in=ttl)
