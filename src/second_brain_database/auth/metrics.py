"""Prometheus metrics of authentication (labels: bounded reasons only)."""

from __future__ import annotations

from prometheus_client import Counter

AUTH_FAILURES = Counter("sbd_auth_failures_total", "Rejected credentials, by reason", ["reason"])
