"""Python clients of the signaling service.

- :class:`SignalingClient`: the protocol over a WebSocket, typed, reconnecting.
- :mod:`.aiortc_peer`: wires a client to aiortc peer connections (needs the
  ``aiortc`` package, which is not a dependency of the server).
"""

from second_brain_database.webrtc.client.signaling import (
    ServerEvent,
    SignalingClient,
    SignalingClosed,
    parse_server_frame,
)

__all__ = ["ServerEvent", "SignalingClient", "SignalingClosed", "parse_server_frame"]
