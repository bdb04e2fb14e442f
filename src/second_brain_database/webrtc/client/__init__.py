"""Python clients of the signaling service.

- :class:`SignalingClient`: the protocol over a WebSocket, typed, reconnecting.
- :class:`CallClient`: a user socket, a device of a user that rings and is rung.
- :mod:`.aiortc_peer`: wires a client to aiortc peer connections (needs the
  ``aiortc`` package, which is not a dependency of the server).
"""

from second_brain_database.webrtc.client.calls import CallClient, CallRefused
from second_brain_database.webrtc.client.signaling import (
    ServerEvent,
    SignalingClient,
    SignalingClosed,
    parse_server_frame,
)

__all__ = [
    "CallClient",
    "CallRefused",
    "ServerEvent",
    "SignalingClient",
    "SignalingClosed",
    "parse_server_frame",
]
