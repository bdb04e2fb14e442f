"""The relay on picows (Cython WebSocket protocol for asyncio), uvloop."""

from __future__ import annotations

import orjson
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from bench.ceiling.common import OPEN, args, peer_id

_peers: dict[str, WSTransport] = {}
_OPEN = OPEN.encode()


class Relay(WSListener):  # type: ignore[misc]
    def __init__(self, me: str) -> None:
        self.me = me

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        _peers[self.me] = transport
        transport.send(WSMsgType.TEXT, _OPEN)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        msg = orjson.loads(frame.get_payload_as_memoryview())
        msg["src"] = self.me
        target = _peers.get(msg.get("dst"))
        if target is not None:
            target.send(WSMsgType.TEXT, orjson.dumps(msg))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if _peers.get(self.me) is transport:
            del _peers[self.me]


def factory(request: WSUpgradeRequest) -> Relay | None:
    me = peer_id(request.path.decode() if isinstance(request.path, bytes) else request.path)
    return Relay(me) if me is not None else None


async def main() -> None:
    a = args()
    server = await ws_create_server(factory, a.host, a.port, max_frame_size=65536)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main())
