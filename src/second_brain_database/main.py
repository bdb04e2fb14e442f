"""The ASGI application: ``uvicorn second_brain_database.main:app``."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from second_brain_database import health
from second_brain_database.auth import router as auth_router
from second_brain_database.observability import ObservabilityMiddleware
from second_brain_database.webhooks import admin_route as webhooks_admin
from second_brain_database.webrtc import admin, asyncapi
from second_brain_database.webrtc import router as webrtc_router
from second_brain_database.webrtc.service import signaling_lifespan

STATIC_DIR = Path(__file__).parent / "webrtc" / "static"


# Young-generation collections every 50,000 allocations instead of 700: with
# thousands of sessions, frequent collections cascade into full ones that
# stop the event loop for 100-500 ms (measured as the join storm's p99).
GC_THRESHOLDS = (50_000, 20, 100)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """This process's policy, then the signaling service. (A host app that
    mounts the webrtc router keeps its own garbage-collection settings.)"""
    async with signaling_lifespan(app):
        # Everything built at startup stays out of every later collection.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        yield


def create_app() -> FastAPI:
    app = FastAPI(title="Second Brain Database signaling", version="0.1.0", lifespan=lifespan)
    app.include_router(webrtc_router.router)
    app.include_router(auth_router.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(webhooks_admin.router)
    app.include_router(asyncapi.router)
    app.add_middleware(ObservabilityMiddleware)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def call_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    return app


app = create_app()
