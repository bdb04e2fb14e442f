// The frames of the room WebSocket (`/ws/webrtc/{room_id}`), as the SDK sends
// and receives them: docs/protocol.md is the full contract. Types only (there
// is no sbd-protocol.js); the main entry re-exports them.

/** An RTCIceCandidateInit; an empty `candidate` is end-of-candidates. */
export interface IceCandidatePayload {
  candidate: string;
  sdpMid?: string | null;
  sdpMLineIndex?: number | null;
  usernameFragment?: string | null;
}

/** What a peer sends (mute/camera/screen); every field optional. */
export interface MediaStatePayload {
  audio?: boolean;
  video?: boolean;
  screen?: boolean;
}

/** Fields every client frame may carry: `id` comes back as `ref` in an error it causes. */
interface ClientFrameBase {
  id?: string;
}

// --- client to server --------------------------------------------------------

export interface OfferFrame extends ClientFrameBase {
  type: "offer";
  /** A peer id; absent or null: every other peer of the room. */
  to?: string | null;
  payload: { type: "offer"; sdp: string };
}

export interface AnswerFrame extends ClientFrameBase {
  type: "answer";
  to?: string | null;
  payload: { type: "answer" | "pranswer"; sdp: string };
}

export interface IceCandidateFrame extends ClientFrameBase {
  type: "ice-candidate";
  to?: string | null;
  payload: IceCandidatePayload;
}

/** Always for the whole room; the server keeps it as the peer's `media`. */
export interface MediaStateFrame extends ClientFrameBase {
  type: "media-state";
  payload: MediaStatePayload;
}

/** Application data (chat, reactions, ...), relayed unchanged. */
export interface AppFrame extends ClientFrameBase {
  type: "app";
  to?: string | null;
  payload: unknown;
}

export interface PingFrame extends ClientFrameBase {
  type: "ping";
}

/** Ends the session at once (no resume); the server closes with 1000. */
export interface LeaveFrame extends ClientFrameBase {
  type: "leave";
}

/** A fresh token of the same user, before the current one expires. */
export interface RefreshFrame extends ClientFrameBase {
  type: "refresh";
  payload: { token: string };
}

/** Hosts and admins only (`role` claim): closes that peer with 4003. */
export interface KickFrame extends ClientFrameBase {
  type: "kick";
  payload: { peer_id: string };
}

/** Call-setup telemetry of one peer connection: counted by the server, never relayed. */
export interface CallSetupPayload {
  outcome: "connected" | "failed";
  /** From the first offer (sent or received) to `outcome`, milliseconds. */
  setup_ms: number;
  /** The selected candidate pair's local type; null when it failed or is unknown. */
  candidate_type: "host" | "srflx" | "prflx" | "relay" | null;
}

export interface CallSetupFrame extends ClientFrameBase {
  type: "call-setup";
  payload: CallSetupPayload;
}

export type ClientFrame =
  | OfferFrame
  | AnswerFrame
  | IceCandidateFrame
  | MediaStateFrame
  | AppFrame
  | PingFrame
  | LeaveFrame
  | RefreshFrame
  | KickFrame
  | CallSetupFrame;

// --- server to client --------------------------------------------------------

export interface Participant {
  peer_id: string;
  user_id: string;
  name: string;
  /** The peer's last `media-state` payload (`{}` before it sent one). */
  media: MediaStatePayload;
}

/** The first frame of every accepted connection (and of every resume). */
export interface WelcomeFrame {
  type: "welcome";
  payload: {
    peer_id: string;
    user_id: string;
    room_id: string;
    /** For `?resume=` after a drop; a new one comes with each welcome. */
    resume_token: string;
    /** The other peers already in the room. */
    participants: Participant[];
  };
}

export interface UserJoinedFrame {
  type: "user-joined";
  payload: { peer_id: string; user_id: string; name: string };
}

export interface UserLeftFrame {
  type: "user-left";
  payload: { peer_id: string; user_id: string };
}

/** What the client frames that carry `to` become at their receivers. */
interface RelayedFields {
  /** The sender's peer id, set by the server (`"server"` for the server API's `app`). */
  from: string;
  /** The sender's user id, set by the server from its token. */
  from_user: string | null;
  to: string | null;
}

export interface RelayedOfferFrame extends RelayedFields {
  type: "offer";
  payload: { type: "offer"; sdp: string };
}

export interface RelayedAnswerFrame extends RelayedFields {
  type: "answer";
  payload: { type: "answer" | "pranswer"; sdp: string };
}

export interface RelayedIceCandidateFrame extends RelayedFields {
  type: "ice-candidate";
  payload: IceCandidatePayload;
}

export interface RelayedMediaStateFrame extends RelayedFields {
  type: "media-state";
  payload: MediaStatePayload;
}

export interface RelayedAppFrame extends RelayedFields {
  type: "app";
  payload: unknown;
}

export type RelayedFrame =
  | RelayedOfferFrame
  | RelayedAnswerFrame
  | RelayedIceCandidateFrame
  | RelayedMediaStateFrame
  | RelayedAppFrame;

export interface PongFrame {
  type: "pong";
}

export type ServerErrorCode =
  | "invalid_message"
  | "unknown_peer"
  | "rate_limited"
  | "forbidden"
  | "unavailable";

/** A refused client frame; the connection stays open. */
export interface ErrorFrame {
  type: "error";
  payload: { code: ServerErrorCode; message: string; ref?: string | null };
}

/** A message from the operators to everyone in the room. */
export interface NoticeFrame {
  type: "notice";
  payload: { message: string; level: "info" | "warning" };
}

export type ServerFrame =
  | WelcomeFrame
  | UserJoinedFrame
  | UserLeftFrame
  | RelayedFrame
  | PongFrame
  | ErrorFrame
  | NoticeFrame;
