"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import os
import re
from pathlib import Path

from fastapi import APIRouter, Response, status
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from second_brain_database.webrtc import metrics as webrtc_metrics
from second_brain_database.webrtc.dependencies import Service

router = APIRouter(tags=["operations"])

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(service: Service, response: Response) -> dict[str, str]:
    """200 when this instance can serve: not draining, pub/sub and room store reachable."""
    if not await service.ready():
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {"status": "unavailable"}
    return {"status": "ok"}


@router.get("/metrics")
async def metrics() -> Response:
    """Prometheus text format; under ``--workers N``, the sum of every worker."""
    webrtc_metrics.flush()  # this worker's tallies; the others' within a second
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
    _forget_dead_workers(Path(directory))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _forget_dead_workers(directory: Path) -> None:
    """Drop the live gauges of workers that died (uvicorn restarts them), so
    that their last connection counts do not linger in the sums."""
    for path in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match and not _alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), str(directory))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
