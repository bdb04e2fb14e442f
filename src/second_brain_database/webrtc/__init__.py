"""WebRTC signaling: rooms, relay of offers/answers/ICE, TURN configuration.

Mount into any FastAPI app::

    from fastapi import FastAPI
    from second_brain_database.webrtc import router as webrtc_router
    from second_brain_database.webrtc.service import signaling_lifespan

    app = FastAPI(lifespan=signaling_lifespan)
    app.include_router(webrtc_router.router)
"""
