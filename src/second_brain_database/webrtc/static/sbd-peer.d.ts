// Declarations of sbd-peer.js (hand-written; the repository's
// tests/test_sdk_package.py checks the implementation against them).

import type { CallSetupPayload, IceCandidatePayload } from "./sbd-protocol.js";

/** A participant of the room, as the SDK names its fields. */
export interface PeerInfo {
  /** The id of this connection (one user may join twice). */
  peerId: string;
  /** The authenticated user id (`sub` of the token). */
  userId: string;
  /** Display name. */
  name: string;
  /** The peer's last `media-state`. */
  media: Record<string, unknown>;
}

export interface Description {
  type: "offer" | "answer" | "pranswer" | "rollback";
  sdp?: string;
}

export type CandidateInit = IceCandidatePayload;

/** An offer, answer or ICE candidate between two peers. */
export type SignalMessage =
  | { type: "offer" | "answer"; payload: Description }
  | { type: "ice-candidate"; payload: CandidateInit };

/** What a RemotePeer needs from its client (SignalingClient passes these). */
export interface PeerHooks {
  localPeerId: string;
  rtcConfig: RTCConfiguration;
  localStream: MediaStream | null;
  dataChannelLabel: string;
  /** Send a signaling message to the remote peer. */
  signal: (message: SignalMessage) => void;
  /** Tell the application something happened (a SignalingClient event). */
  emit: (type: string, detail: object) => void;
  /** Call-setup telemetry of this peer connection (sent as `call-setup`). */
  report: (payload: CallSetupPayload) => void;
}

/** Counters an app (or a test) can read to see negotiation at work. */
export interface NegotiationStats {
  offersSent: number;
  collisions: number;
  ignoredOffers: number;
  rollbacks: number;
  iceRestarts: number;
}

/**
 * One remote peer of the mesh: its RTCPeerConnection, negotiated with
 * "perfect negotiation". Made by SignalingClient; read from `client.peers`
 * and from event details.
 */
export declare class RemotePeer {
  constructor(info: PeerInfo, hooks: PeerHooks);
  readonly peerId: string;
  readonly userId: string;
  name: string;
  media: Record<string, unknown>;
  /** The polite peer (smaller peer id) rolls back its own offer on glare. */
  readonly polite: boolean;
  /** Every remote track of this peer. */
  readonly stream: MediaStream;
  /** Null until the first offer goes out or comes in. */
  pc: RTCPeerConnection | null;
  /** The negotiated data channel (label `sbd`, id 0). */
  channel: RTCDataChannel | null;
  connectionState: RTCPeerConnectionState;
  readonly stats: NegotiationStats;
  readonly info: PeerInfo;
  /** Create the RTCPeerConnection (once); `initiator`: this side offers first. */
  start(initiator?: boolean): RTCPeerConnection;
  /** Apply an offer, answer or ICE candidate from the remote peer. */
  handleSignal(message: SignalMessage): Promise<void>;
  /** Send over the data channel; false when it is not open. */
  send(data: string | ArrayBuffer | Blob | ArrayBufferView): boolean;
  /** Gather fresh ICE candidates (new ufrag) and renegotiate. */
  restartIce(): void;
  /** Use these ICE servers (fresh TURN credentials) from the next ICE restart on. */
  setConfiguration(config: RTCConfiguration): void;
  /** Send this stream's tracks instead (replaceTrack where possible). */
  setLocalStream(stream: MediaStream | null): Promise<void>;
  close(): void;
}
