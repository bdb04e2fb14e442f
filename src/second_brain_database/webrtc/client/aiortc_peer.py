"""Wire a :class:`SignalingClient` to aiortc peer connections (a mesh).

Follows the same conventions as the browser SDK, so aiortc peers and
browsers call each other: the peer that joins offers to everyone already in
the room; everyone has one data channel per peer, negotiated out of band
(label ``sbd``, id 0); the peer with the smaller peer id is polite.

aiortc differs from browsers in two ways this module works around: it puts
all of its ICE candidates in the SDP (so it only sends end-of-candidates),
and it cannot roll back a local offer, so a polite peer that meets glare
replaces its peer connection (nothing flowed on it yet) and answers.

Needs the ``aiortc`` package (``pip install 'second-brain-database[test]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from second_brain_database.webrtc.client.signaling import ServerEvent, SignalingClient
from second_brain_database.webrtc.schemas import (
    RelayedFrame,
    UserLeftMessage,
    WelcomeMessage,
)

logger = logging.getLogger(__name__)

NEGOTIATION_TYPES = frozenset({"offer", "answer", "ice-candidate"})
DATA_CHANNEL_LABEL = "sbd"
DATA_CHANNEL_ID = 0

TrackFactory = Callable[[], Sequence[MediaStreamTrack]]


@dataclass
class AiortcPeer:
    """One remote peer: its peer connection and data channel."""

    peer_id: str
    user_id: str
    polite: bool
    pc: RTCPeerConnection
    channel: RTCDataChannel
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    channel_open: asyncio.Event = field(default_factory=asyncio.Event)
    tracks: list[MediaStreamTrack] = field(default_factory=list)
    ignored_offers: int = 0
    replaced_on_glare: int = 0
    setup_started: float | None = None
    """``time.monotonic()`` of the first offer out or in (call-setup telemetry)."""
    setup_reported: bool = False

    def send(self, data: str | bytes) -> bool:
        if self.channel.readyState != "open":
            return False
        self.channel.send(data)
        return True


class AiortcMesh:
    """Every peer of the room, each on its own aiortc RTCPeerConnection.

    ``tracks`` makes the media to send to one peer (called once per peer
    connection: an aiortc track feeds one sender). Data-channel messages
    arrive on :attr:`messages` as ``(peer_id, data)``; remote tracks on
    :attr:`remote_tracks` as ``(peer_id, track)``; every server frame but
    offers, answers and candidates (``app``, ``media-state``, joins, leaves,
    welcomes, errors) on :attr:`events`, after the mesh acted on it.
    """

    def __init__(
        self,
        client: SignalingClient,
        *,
        configuration: RTCConfiguration | None = None,
        tracks: TrackFactory | None = None,
        telemetry: bool = True,
    ) -> None:
        self.client = client
        # Report each peer connection's setup (call-setup), as the browser SDK does.
        self.telemetry = telemetry
        self.configuration = configuration or RTCConfiguration(iceServers=[])
        self._tracks = tracks or (lambda: ())
        self.peers: dict[str, AiortcPeer] = {}
        self.messages: asyncio.Queue[tuple[str, str | bytes]] = asyncio.Queue()
        self.remote_tracks: asyncio.Queue[tuple[str, MediaStreamTrack]] = asyncio.Queue()
        self.events: asyncio.Queue[ServerEvent] = asyncio.Queue()
        self._dispatcher: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._peer_id = ""

    async def start(self) -> None:
        """Join (if the client has not yet) and offer to everyone present."""
        if self.client.welcome is None:
            await self.client.connect()
        self._peer_id = self.client.peer_id
        for participant in self.client.participants:
            await self._offer(self._add_peer(participant.peer_id, participant.user_id))
        self._dispatcher = asyncio.create_task(self._dispatch(), name="aiortc mesh")

    async def close(self, *, leave: bool = True) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        for peer in list(self.peers.values()):
            await peer.pc.close()
        self.peers.clear()
        await (self.client.leave() if leave else self.client.close())

    def send(self, data: str | bytes, to: str | None = None) -> int:
        """Send over the data channels (to one peer, or all); returns how many."""
        return sum(
            peer.send(data) for peer in self.peers.values() if to is None or peer.peer_id == to
        )

    async def wait_connected(self, count: int = 1, timeout: float = 15.0) -> list[AiortcPeer]:
        """Wait until ``count`` peers are connected with open data channels."""
        await self._wait(lambda: len(self._ready()) >= count, timeout)
        return self._ready()

    async def wait_peer(self, peer_id: str, timeout: float = 15.0) -> AiortcPeer:
        """Wait until the peer ``peer_id`` is connected with an open data channel."""
        await self._wait(lambda: any(p.peer_id == peer_id for p in self._ready()), timeout)
        return self.peers[peer_id]

    def _ready(self) -> list[AiortcPeer]:
        return [p for p in self.peers.values() if p.connected.is_set() and p.channel_open.is_set()]

    async def _wait(self, condition: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    # --- signaling -------------------------------------------------------------

    async def _dispatch(self) -> None:
        async for event in self.client:
            try:
                await self._handle(event)
            except Exception:
                # One bad message must not end the mesh; the peer can retry.
                logger.exception("handling %s failed", event.type)
            if event.type not in NEGOTIATION_TYPES:
                self.events.put_nowait(event)

    async def _handle(self, event: object) -> None:
        if isinstance(event, WelcomeMessage):
            await self._on_welcome(event)
        elif isinstance(event, UserLeftMessage):
            peer = self.peers.pop(event.payload.peer_id, None)
            if peer is not None:
                await peer.pc.close()
        elif isinstance(event, RelayedFrame):
            if event.type == "offer":
                await self._on_offer(event)
            elif event.type == "answer":
                await self._on_answer(event)
            elif event.type == "ice-candidate":
                await self._on_candidate(event)

    async def _on_welcome(self, welcome: WelcomeMessage) -> None:
        """A welcome after the first. Resumed (same peer id): keep the peer
        connections; peers that joined meanwhile offer to us (their offers
        were kept for us). A new session: start over as a newcomer."""
        new_session = welcome.payload.peer_id != self._peer_id
        self._peer_id = welcome.payload.peer_id
        present = {p.peer_id for p in welcome.payload.participants}
        for peer_id in [p for p in self.peers if new_session or p not in present]:
            await self.peers.pop(peer_id).pc.close()
        if new_session:
            for participant in welcome.payload.participants:
                await self._offer(self._add_peer(participant.peer_id, participant.user_id))

    async def _on_offer(self, frame: RelayedFrame) -> None:
        peer = self.peers.get(frame.from_)
        if peer is None:
            peer = self._add_peer(frame.from_, frame.from_user)
        elif peer.pc.signalingState == "have-local-offer":
            if not peer.polite:
                peer.ignored_offers += 1
                return
            # Polite, but aiortc cannot roll back: start this peer over.
            replaced = peer.replaced_on_glare + 1
            await peer.pc.close()
            peer = self._add_peer(frame.from_, frame.from_user, replace=True)
            peer.replaced_on_glare = replaced
        peer.setup_started = peer.setup_started or time.monotonic()
        await peer.pc.setRemoteDescription(RTCSessionDescription(**frame.payload))
        await peer.pc.setLocalDescription(await peer.pc.createAnswer())
        await self.client.answer(peer.peer_id, peer.pc.localDescription.sdp)
        await self._end_of_candidates(peer)

    async def _on_answer(self, frame: RelayedFrame) -> None:
        peer = self.peers.get(frame.from_)
        if peer is None or peer.pc.signalingState != "have-local-offer":
            return  # an answer to an offer we no longer have
        await peer.pc.setRemoteDescription(RTCSessionDescription(**frame.payload))

    async def _on_candidate(self, frame: RelayedFrame) -> None:
        peer = self.peers.get(frame.from_)
        if peer is None or peer.pc.remoteDescription is None:
            return  # belongs to an offer this side ignored
        init = frame.payload
        line = str(init.get("candidate") or "")
        if not line:
            await peer.pc.addIceCandidate(None)  # end-of-candidates
            return
        candidate = candidate_from_sdp(line.removeprefix("candidate:"))
        candidate.sdpMid = init.get("sdpMid")
        candidate.sdpMLineIndex = init.get("sdpMLineIndex")
        await peer.pc.addIceCandidate(candidate)

    async def _offer(self, peer: AiortcPeer) -> None:
        peer.setup_started = peer.setup_started or time.monotonic()
        await peer.pc.setLocalDescription(await peer.pc.createOffer())
        await self.client.offer(peer.peer_id, peer.pc.localDescription.sdp)
        await self._end_of_candidates(peer)

    async def _end_of_candidates(self, peer: AiortcPeer) -> None:
        # aiortc gathered everything into the SDP already; say there is no more.
        await self.client.ice_candidate(peer.peer_id, "", None, None)

    # --- peers -------------------------------------------------------------------

    def _add_peer(self, peer_id: str, user_id: str, *, replace: bool = False) -> AiortcPeer:
        if peer_id in self.peers and not replace:
            return self.peers[peer_id]
        pc = RTCPeerConnection(self.configuration)
        for track in self._tracks():
            pc.addTrack(track)
        channel = pc.createDataChannel(DATA_CHANNEL_LABEL, negotiated=True, id=DATA_CHANNEL_ID)
        peer = AiortcPeer(
            peer_id=peer_id,
            user_id=user_id,
            polite=self._peer_id < peer_id,
            pc=pc,
            channel=channel,
        )
        self.peers[peer_id] = peer
        self._watch(peer)
        return peer

    def _watch(self, peer: AiortcPeer) -> None:
        pc, channel = peer.pc, peer.channel

        def on_state() -> None:
            if self.peers.get(peer.peer_id) is not peer:
                return  # replaced or gone
            if pc.connectionState == "connected":
                peer.connected.set()
            else:
                peer.connected.clear()
            if pc.connectionState in ("connected", "failed") and self.telemetry:
                self._report_setup(peer, pc.connectionState)
            self._notify()

        def on_open() -> None:
            peer.channel_open.set()
            self._notify()

        def on_message(data: str | bytes) -> None:
            self.messages.put_nowait((peer.peer_id, data))

        def on_track(track: MediaStreamTrack) -> None:
            peer.tracks.append(track)
            self.remote_tracks.put_nowait((peer.peer_id, track))

        pc.add_listener("connectionstatechange", on_state)
        pc.add_listener("track", on_track)
        channel.add_listener("open", on_open)
        channel.add_listener("message", on_message)

    def _report_setup(self, peer: AiortcPeer, outcome: str) -> None:
        """Once per peer connection (not for ICE restarts), as the browser SDK does."""
        if peer.setup_reported or peer.setup_started is None:
            return
        peer.setup_reported = True
        setup_ms = round((time.monotonic() - peer.setup_started) * 1000)
        candidate = _selected_candidate_type(peer.pc) if outcome == "connected" else None
        task = asyncio.ensure_future(self.client.call_setup(outcome, setup_ms, candidate))
        task.add_done_callback(_ignore_closed)

    def _notify(self) -> None:
        self._changed.set()


def _selected_candidate_type(pc: RTCPeerConnection) -> str | None:
    """The local type of the candidate pair ICE nominated. aiortc's getStats()
    does not say, so this reads aioice's nominated pairs (tested with aiortc
    1.16 / aioice 0.13): the one place this module leans on internals, and
    it answers None rather than fail when they move."""
    try:
        dtls = pc.sctp.transport if pc.sctp is not None else None
        for transceiver in pc.getTransceivers():
            dtls = dtls or transceiver.receiver.transport
        if dtls is None:
            return None
        nominated = dtls.transport.iceGatherer._connection._nominated
        kinds = [str(pair.local_candidate.type) for pair in nominated.values()]
    except AttributeError:
        return None
    return next((k for k in kinds if k in ("host", "srflx", "prflx", "relay")), None)


def _ignore_closed(task: asyncio.Future[None]) -> None:
    # Telemetry is best effort: a report the closing connection cannot send is dropped.
    if not task.cancelled():
        task.exception()
