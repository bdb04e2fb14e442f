"""Prometheus metrics of the signaling service.

Labels are bounded sets only (message types, close codes, reasons, actions):
never room, peer or user ids. Times are in seconds.

With ``sbd serve --workers N`` the workers share PROMETHEUS_MULTIPROC_DIR
(set by the CLI) and ``/metrics`` sums them; gauges say how (``livesum``: the
sum over live workers).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from second_brain_database.auth import metrics as auth_metrics
from second_brain_database.webrtc.schemas import CallSetupOutcome, CallSetupPayload

CONNECTIONS = Gauge(
    "sbd_websocket_connections",
    "Open signaling WebSocket connections",
    multiprocess_mode="livesum",
)
CONNECTIONS_OPENED = Counter(
    "sbd_websocket_connections_opened_total", "Signaling WebSocket connections accepted"
)
CONNECTIONS_CLOSED = Counter(
    "sbd_websocket_connections_closed_total",
    "Signaling WebSocket connections closed, by close code",
    ["code"],
)
LOCAL_ROOMS = Gauge(
    "sbd_rooms_local",
    "Rooms with at least one peer on this instance",
    multiprocess_mode="livesum",
)
MESSAGES_RECEIVED = Counter(
    "sbd_messages_received_total", "Client frames accepted, by message type", ["type"]
)
MESSAGES_DELIVERED = Counter("sbd_messages_delivered_total", "Frames queued to local clients")
MESSAGES_SENT = Counter(
    "sbd_messages_sent_total", "Frames written to client WebSockets, by message type", ["type"]
)
ERRORS_SENT = Counter("sbd_errors_sent_total", "error frames sent to clients, by code", ["code"])
SLOW_CONSUMERS = Counter(
    "sbd_slow_consumer_disconnects_total", "Clients closed because their send queue overflowed"
)
# Defined with the auth code (whose login route counts its refusals too),
# counted here by the session checks as well.
AUTH_FAILURES = auth_metrics.AUTH_FAILURES
ADMISSION_REFUSED = Counter(
    "sbd_admission_refused_total", "WebSockets refused by an abuse limit, by limit", ["limit"]
)
BROKER_ERRORS = Counter("sbd_broker_errors_total", "Broker operations that failed")
REDIS_RECONNECTS = Counter(
    "sbd_redis_reconnects_total", "Times the Redis Pub/Sub connection was lost and re-opened"
)
ROOM_SIZE = Histogram(
    "sbd_room_peers",
    "Peers in the room a peer joined, observed at each join",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
)
RELAY_LATENCY = Histogram(
    "sbd_relay_latency_seconds",
    "Time from a relayed message's ingress on any instance to its delivery to the "
    "local sessions of its room, with Redis (wall clocks: instances need NTP)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CALLS_STARTED = Counter("sbd_calls_started_total", "Calls that started ringing")
CALLS_ENDED = Counter(
    "sbd_calls_ended_total",
    "Calls that ended, by result (accepted, declined, cancelled, missed)",
    ["result"],
)
CALL_RING_TIME = Histogram(
    "sbd_call_ring_seconds",
    "Time a call rang until it ended, whatever the result",
    buckets=(0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60),
)
CALL_SETUPS = Counter(
    "sbd_call_setups_total",
    "Peer connections whose setup the SDKs reported (call-setup), by outcome and by "
    "the selected candidate pair's local type (none when it failed)",
    ["outcome", "candidate_type"],
)
CALL_SETUP_TIME = Histogram(
    "sbd_call_setup_seconds",
    "Time from a peer connection's first offer to connected, as the SDKs measured it",
    ["candidate_type"],
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 30),
)
ADMIN_ACTIONS = Counter(
    "sbd_admin_actions_total", "Admin API actions carried out, by action", ["action"]
)

# Server frame types; anything else is counted as "other" so a malformed
# frame can never mint a label.
FRAME_TYPES = (
    "welcome",
    "user-joined",
    "user-left",
    "offer",
    "answer",
    "ice-candidate",
    "media-state",
    "app",
    "pong",
    "error",
    "notice",
)


class Tally:
    """A hot counter: each increment is an int addition, and the total goes
    to its Prometheus counter on :func:`flush` (every FLUSH_INTERVAL_S, and
    before every scrape). ``Counter.inc`` takes a lock on each call, and a
    relayed message counts three times."""

    __slots__ = ("_counter", "pending")

    def __init__(self, counter: Any) -> None:
        self._counter = counter
        self.pending = 0
        _tallies.append(self)

    def inc(self) -> None:
        self.pending += 1

    def flush(self) -> None:
        if self.pending:
            pending, self.pending = self.pending, 0
            self._counter.inc(pending)


_tallies: list[Tally] = []
FLUSH_INTERVAL_S = 1.0


def flush() -> None:
    """Move every tally's count to Prometheus."""
    for tally in _tallies:
        tally.flush()


async def flush_periodically() -> None:
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_S)
        flush()


DELIVERED = Tally(MESSAGES_DELIVERED)
_sent = {kind: Tally(MESSAGES_SENT.labels(type=kind)) for kind in (*FRAME_TYPES, "other")}
_TYPE_PREFIX = '{"type":"'


_START = len(_TYPE_PREFIX)
_OTHER = _sent["other"]


def count_sent_frame(frame: str) -> None:
    """One frame written to a client, by its ``type``, read from its first
    field without parsing it (every server frame is serialized with ``type``
    first); anything else counts as "other", so no frame can mint a label."""
    tally = (
        _sent.get(frame[_START : frame.find('"', _START)])
        if frame.startswith(_TYPE_PREFIX)
        else None
    )
    (tally or _OTHER).inc()


_received: dict[str, Tally] = {}


def count_received(kind: str) -> None:
    """One accepted client frame (``kind`` is always a client message type)."""
    tally = _received.get(kind)
    if tally is None:  # resolved once per type: labels() takes a lock and a dict walk
        tally = _received[kind] = Tally(MESSAGES_RECEIVED.labels(type=kind))
    tally.inc()


def observe_relay(ingress_time: float) -> None:
    """Record one relayed envelope reaching this instance's sessions;
    ``ingress_time`` is the ``time.time()`` its sender's instance stamped."""
    RELAY_LATENCY.observe(max(time.time() - ingress_time, 0.0))


def observe_call_setup(report: CallSetupPayload) -> None:
    candidate = report.candidate_type.value if report.candidate_type else "none"
    CALL_SETUPS.labels(outcome=report.outcome.value, candidate_type=candidate).inc()
    if report.outcome is CallSetupOutcome.CONNECTED:
        CALL_SETUP_TIME.labels(candidate_type=candidate).observe(report.setup_ms / 1000)
