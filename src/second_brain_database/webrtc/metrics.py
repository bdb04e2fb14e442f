"""Prometheus metrics of the signaling service (no room or user ids as labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("sbd_websocket_connections", "Open signaling WebSocket connections")
CONNECTIONS_OPENED = Counter(
    "sbd_websocket_connections_opened_total", "Signaling WebSocket connections accepted"
)
CONNECTIONS_CLOSED = Counter(
    "sbd_websocket_connections_closed_total",
    "Signaling WebSocket connections closed, by close code",
    ["code"],
)
LOCAL_ROOMS = Gauge("sbd_rooms_local", "Rooms with at least one peer on this instance")
MESSAGES_RECEIVED = Counter(
    "sbd_messages_received_total", "Client frames accepted, by message type", ["type"]
)
MESSAGES_DELIVERED = Counter("sbd_messages_delivered_total", "Frames queued to local clients")
ERRORS_SENT = Counter("sbd_errors_sent_total", "error frames sent to clients, by code", ["code"])
SLOW_CONSUMERS = Counter(
    "sbd_slow_consumer_disconnects_total", "Clients closed because their send queue overflowed"
)
AUTH_FAILURES = Counter("sbd_auth_failures_total", "Rejected credentials, by reason", ["reason"])
BROKER_ERRORS = Counter("sbd_broker_errors_total", "Broker operations that failed")
ROOM_SIZE = Histogram(
    "sbd_room_peers",
    "Peers in the room a peer joined, observed at each join",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
)
