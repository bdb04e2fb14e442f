"""Standard Webhooks signatures (standardwebhooks.com): ``v1,`` and the
base64 HMAC-SHA256 of ``"<id>.<timestamp>.<body>"`` under the decoded
``whsec_`` secret."""

from __future__ import annotations

import base64
import hashlib
import hmac


def signature(key: bytes, event_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{event_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(key: bytes, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt; ``timestamp`` is the attempt's, in unix seconds."""
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, event_id, timestamp, body),
        "content-type": "application/json",
    }
