// Declarations of sbd-signaling.js, the package's entry point (hand-written;
// the repository's tests/test_sdk_package.py checks the implementation
// against them).

import type { SignalingError } from "./sbd-errors.js";
import type { PeerInfo, RemotePeer } from "./sbd-peer.js";

export { CLOSE_CODES, SignalingError, closeMeaning } from "./sbd-errors.js";
export type { CloseMeaning, SignalingErrorCode } from "./sbd-errors.js";
export { RemotePeer } from "./sbd-peer.js";
export { CallClient } from "./sbd-calls.js";
export type {
  CallClientOptions,
  CallClientStatus,
  CallEventMap,
  CallState,
  IncomingCall,
} from "./sbd-calls.js";
export type {
  CandidateInit,
  Description,
  NegotiationStats,
  PeerHooks,
  PeerInfo,
  SignalMessage,
} from "./sbd-peer.js";
export type {
  AnswerFrame,
  CallSetupFrame,
  CallSetupPayload,
  AppFrame,
  ClientFrame,
  ErrorFrame,
  IceCandidateFrame,
  IceCandidatePayload,
  KickFrame,
  LeaveFrame,
  MediaStateFrame,
  MediaStatePayload,
  NoticeFrame,
  OfferFrame,
  Participant,
  PingFrame,
  PongFrame,
  RefreshFrame,
  RelayedAnswerFrame,
  RelayedAppFrame,
  RelayedFrame,
  RelayedIceCandidateFrame,
  RelayedMediaStateFrame,
  RelayedOfferFrame,
  ServerErrorCode,
  ServerFrame,
  UserJoinedFrame,
  UserLeftFrame,
  WelcomeFrame,
} from "./sbd-protocol.js";

/**
 * What `GET /api/v1/webrtc/config` answers: an RTCConfiguration (pass it to
 * `new RTCPeerConnection`) plus `expiresIn`, the seconds its TURN credentials
 * last (absent without TURN). `iceTransportPolicy` is "relay" for a token with
 * the claim `"ice": "relay"`.
 */
export interface ServerRtcConfiguration extends RTCConfiguration {
  expiresIn?: number;
}

export type ConnectionStatus = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface ReconnectOptions {
  /** First retry delay (default 500). */
  initialDelayMs?: number;
  /** Cap of the exponential backoff (default 10000). */
  maxDelayMs?: number;
  /** Consecutive failures before giving up (default Infinity). */
  maxAttempts?: number;
}

export interface SignalingClientOptions {
  /** Access token (see {@link login}). */
  token: string;
  /** Room id, `^[A-Za-z0-9_.-]{1,128}$`. */
  room: string;
  /** Server origin, e.g. "https://calls.example.com"; default this page's. */
  baseUrl?: string;
  /** Camera/microphone to send; without one the client only receives. */
  localStream?: MediaStream | null;
  /**
   * Skip fetching `/api/v1/webrtc/config` (and refreshing it before its TURN
   * credentials expire): this configuration is used as is.
   */
  rtcConfig?: RTCConfiguration;
  /** Returns a fresh token; called before the current one expires. */
  tokenProvider?: () => Promise<string>;
  reconnect?: ReconnectOptions;
  /** Keep-alive period (default 20000). */
  pingIntervalMs?: number;
  /** A silent server is declared dead after this (default 10000). */
  pongTimeoutMs?: number;
  /** A single-use ticket for the first connection (an accepted call's); later ones use the token. */
  ticket?: string;
  /** Report each peer connection's setup time and candidate type (`call-setup`; default true). */
  telemetry?: boolean;
  /** Connect with single-use tickets rather than the token in the URL (default true). */
  useTickets?: boolean;
  /** Label of the per-peer data channel (default "sbd"). */
  dataChannelLabel?: string;
  /** Send `leave` when the page goes away (default true). */
  leaveOnUnload?: boolean;
}

/** Each event's name and its detail (`on(name, detail => ...)`). */
export interface SignalingEventMap {
  /** A session began (`resumed`: the same session continued after a reconnect). */
  open: { peerId: string; userId: string; resumed: boolean; participants: PeerInfo[] };
  /** The signaling connection changed. */
  status: { status: ConnectionStatus };
  "peer-joined": { peer: RemotePeer };
  "peer-left": { peerId: string; userId: string };
  /** `stream` holds all of that peer's tracks. */
  track: { peer: RemotePeer; peerId: string; track: MediaStreamTrack; stream: MediaStream };
  /** A data channel message. */
  data: { peer: RemotePeer; peerId: string; data: unknown };
  channel: { peer: RemotePeer; peerId: string; state: "open" | "closed" };
  /** An `app` frame (`peerId` is "server" for the server API's messages). */
  app: { peerId: string; userId: string; payload: unknown };
  "media-state": { peer: RemotePeer; peerId: string; media: Record<string, unknown> };
  "connection-state": { peer: RemotePeer; peerId: string; state: RTCPeerConnectionState };
  /** A description or candidate failed to apply. */
  "negotiation-error": { peer: RemotePeer; peerId: string; message: string };
  /** A message from the operators. */
  notice: { message: string; level: "info" | "warning" };
  /** See `error.fatal`. */
  error: { error: SignalingError };
  /** The client stopped for good (`error` is null after `leave()`). */
  closed: { error: SignalingError | null };
}

export type SignalingEventType = keyof SignalingEventMap;

/** Log in with a username and password (`POST /api/v1/auth/token`); `baseUrl` "" is this page's origin. */
export declare function login(
  baseUrl: string,
  username: string,
  password: string,
): Promise<{ token: string; expiresIn: number }>;

/** The RTCConfiguration (STUN/TURN servers) the server hands out. */
export declare function fetchRtcConfig(
  baseUrl: string,
  token: string,
): Promise<ServerRtcConfiguration>;

/** A single-use ticket for one room's WebSocket; null when the server has no ticket endpoint. */
export declare function fetchTicket(
  baseUrl: string,
  token: string,
  room: string,
): Promise<string | null>;

/** The `exp` of a JWT in milliseconds (not verified), or null. */
export declare function tokenExpiry(token: string): number | null;

/** A call in one room: signaling connection plus a mesh of peer connections. */
export declare class SignalingClient extends EventTarget {
  constructor(options: SignalingClientOptions);
  readonly room: string;
  /** The current token (replaced by `tokenProvider`'s). */
  token: string;
  readonly baseUrl: string;
  localStream: MediaStream | null;
  /**
   * Null until `join()` fetched it (or the one given). A fetched one is
   * replaced before its TURN credentials expire; peers use the fresh one for
   * their next ICE restart.
   */
  rtcConfig: ServerRtcConfiguration | null;
  status: ConnectionStatus;
  /** This connection's id, set by `welcome`. */
  peerId: string | null;
  userId: string | null;
  /** Every other peer in the room, by peer id. */
  readonly peers: Map<string, RemotePeer>;
  /** What this side last announced in `media-state`. */
  mediaState: Record<string, boolean>;

  /**
   * Subscribe; the handler gets the event's detail. Returns an unsubscribe
   * function. (The events are also `CustomEvent`s of this `EventTarget`.)
   */
  on<K extends SignalingEventType>(
    type: K,
    handler: (detail: SignalingEventMap[K]) => void,
  ): () => void;

  /**
   * Fetch the ICE configuration (unless given), connect and enter the room.
   * Resolves on the first `welcome`; rejects with a fatal SignalingError.
   */
  join(): Promise<SignalingEventMap["open"]>;
  /** Leave on purpose: no reconnect; settles once the server closed the socket (or after 2 s). */
  leave(): Promise<void>;
  /** Announce mute/camera state; kept by the server for late joiners. */
  setMediaState(state: { audio?: boolean; video?: boolean; screen?: boolean }): void;
  /** Send JSON through the server (`app` frame) to one peer or everyone. */
  sendApp(payload: unknown, to?: string | null): void;
  /** Send over the data channels; returns how many peers it went to. */
  sendData(data: string | ArrayBuffer | Blob | ArrayBufferView, to?: string | null): number;
  /** Switch camera/microphone (or stop sending with null). */
  setLocalStream(stream: MediaStream | null): Promise<void>;
  /** Renegotiate with fresh ICE candidates, with one peer or all. */
  restartIce(peerId?: string): void;
}
