"""The webhook part of the admin API (``sbd webhooks``): what waits, what
failed and why, and redelivery of failed events. Admin tokens only, like
the rest of /api/v1/admin (webrtc/admin.py)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from second_brain_database.webhooks.delivery import WebhookDelivery
from second_brain_database.webhooks.outbox import WebhookStatus
from second_brain_database.webrtc import metrics
from second_brain_database.webrtc.admin import Admin
from second_brain_database.webrtc.dependencies import Service
from second_brain_database.webrtc.service import SignalingService

audit = logging.getLogger("second_brain_database.audit")

router = APIRouter(
    prefix="/api/v1/admin/webhooks",
    tags=["admin"],
    responses={
        401: {"description": "missing, invalid or expired token"},
        403: {"description": "the token has no admin role"},
        404: {"description": "webhooks are not configured (SBD_WEBHOOK_URLS)"},
    },
)


class RedeliverRequest(BaseModel):
    event_id: str | None = Field(
        default=None, max_length=64, description="one failed event (its webhook-id); null: all"
    )


class Redelivered(BaseModel):
    redelivered: int


def _delivery(service: SignalingService) -> WebhookDelivery:
    if service.webhooks is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "webhooks are not configured")
    return service.webhooks


@router.get("", response_model=WebhookStatus)
async def webhook_status(service: Service, admin: Admin) -> WebhookStatus:
    """Per URL, the events not yet acknowledged and those given up on; the
    latest failed attempts (across instances with Redis)."""
    delivery = _delivery(service)
    return await delivery.outbox.status(delivery.endpoints)


@router.post("/redeliver", response_model=Redelivered)
async def redeliver(body: RedeliverRequest, service: Service, admin: Admin) -> Redelivered:
    """Queue failed events again, each for the URL that failed it, under
    its own ``webhook-id``."""
    count = await _delivery(service).outbox.redeliver(body.event_id)
    metrics.ADMIN_ACTIONS.labels(action="webhooks-redeliver").inc()
    audit.info(
        "admin %s: redelivered %d webhook events",
        admin.user_id,
        count,
        extra={
            "audit": True,
            "actor": admin.user_id,
            "action": "webhooks-redeliver",
            "event_id": body.event_id,
            "count": count,
        },
    )
    return Redelivered(redelivered=count)
