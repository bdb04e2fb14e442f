"""Another team's FastAPI app that mounts the signaling router (docs/architecture.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from second_brain_database.webrtc import router as webrtc_router
from second_brain_database.webrtc.service import signaling_lifespan


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.own_resource = "ready"
    async with signaling_lifespan(app):
        yield


app = FastAPI(lifespan=lifespan)
app.include_router(webrtc_router.router)


@app.get("/their/own/route")
async def own_route() -> dict[str, str]:
    return {"state": app.state.own_resource}
