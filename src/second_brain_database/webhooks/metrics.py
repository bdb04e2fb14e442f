"""Prometheus metrics of webhook delivery. The only label is the URL
(without query or credentials, :attr:`Endpoint.label`): never room ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DELIVERED = Counter(
    "sbd_webhook_delivered_total", "Webhook events acknowledged (2xx), by URL", ["url"]
)
FAILED_ATTEMPTS = Counter(
    "sbd_webhook_failed_attempts_total",
    "Webhook attempts answered with a non-2xx status, or not answered in time, by URL",
    ["url"],
)
GIVEN_UP = Counter(
    "sbd_webhook_given_up_total",
    "Webhook events given up on after SBD_WEBHOOK_RETRY_FOR_S (see sbd webhooks), by URL",
    ["url"],
)
OLDEST_PENDING = Gauge(
    "sbd_webhook_oldest_pending_seconds",
    "Age of the oldest event this instance is delivering to the URL (0: none waiting)",
    ["url"],
    multiprocess_mode="max",
)
