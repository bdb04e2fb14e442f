"""Where events wait until every webhook URL has acknowledged them: the
seam between the room stores, which write events in the same step as the
room change that causes them, and :mod:`.delivery`, which sends them.

Events wait room by room, in the order they happened. A room's events are
delivered by one instance at a time (it *claims* the room); for each URL
the outbox keeps how far that URL has acknowledged, so URLs never wait for
each other. :mod:`.memory_outbox` is the embedded one, :mod:`.redis_outbox`
the shared one (a Redis Stream per room, docs/architecture.md).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel

from second_brain_database.webhooks.events import WebhookEvent

MAX_FAILED_KEPT = 10_000
MAX_ERRORS_KEPT = 50


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One of ``SBD_WEBHOOK_URLS``."""

    url: str
    key: str
    """Names the URL's progress in the outbox (a digest: the URL may carry a secret)."""
    label: str
    """The URL without query, fragment or credentials: metrics and the CLI show it."""

    @classmethod
    def of(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        label = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        return cls(url, hashlib.sha256(url.encode()).hexdigest()[:16], label)


@dataclass(frozen=True, slots=True)
class Pending:
    """An event at the head of a room's queue for one URL."""

    ref: str
    """Its place in the outbox (a stream entry id, or a sequence number)."""
    event: WebhookEvent
    only: str = ""
    """An endpoint key when only that URL should get it (a redelivery)."""


class Failure(BaseModel):
    """An event given up on after the retry window, or an attempt that failed."""

    room_id: str
    url: str
    """The endpoint's label."""
    event_id: str
    type: str
    error: str
    at: float


class FailedEvent(Failure):
    endpoint: str
    """The endpoint's key, so that a redelivery goes to that URL only."""
    event_at: float
    body: str


class EndpointStatus(BaseModel):
    url: str
    pending: int
    """Events not yet acknowledged by this URL."""
    failed: int
    """Events given up on, waiting for ``sbd webhooks redeliver``."""


class WebhookStatus(BaseModel):
    endpoints: list[EndpointStatus]
    last_errors: list[Failure]
    """The latest failed attempts, newest first."""


class Outbox(ABC):
    @abstractmethod
    async def claim(self, limit: int) -> list[str]:
        """Up to ``limit`` rooms with events that no instance delivers now;
        this instance delivers them until :meth:`release`."""

    @abstractmethod
    async def keep(self, rooms: list[str]) -> list[str]:
        """Renew this instance's claim on ``rooms``; returns those it lost."""

    @abstractmethod
    async def next(self, room_id: str, endpoint: Endpoint) -> Pending | None:
        """The oldest event of the room that ``endpoint`` has not acknowledged."""

    @abstractmethod
    async def ack(self, room_id: str, endpoint: Endpoint, pending: Pending) -> None: ...

    @abstractmethod
    async def release(self, room_id: str, endpoints: list[Endpoint]) -> None:
        """Drop what every endpoint acknowledged and give the room up (it is
        claimable again at once if events arrived meanwhile)."""

    @abstractmethod
    async def record_error(self, error: Failure) -> None: ...

    @abstractmethod
    async def record_failed(self, failed: FailedEvent) -> None: ...

    @abstractmethod
    async def status(self, endpoints: list[Endpoint]) -> WebhookStatus: ...

    @abstractmethod
    async def redeliver(self, event_id: str | None) -> int:
        """Queue failed events again (all, or the one with ``event_id``),
        each for the URL that failed it; returns how many."""

    @abstractmethod
    async def wait_for_work(self, timeout: float) -> None:
        """Return when there may be rooms to claim, or after ``timeout``."""
