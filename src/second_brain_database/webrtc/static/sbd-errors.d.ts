// Declarations of sbd-errors.js (hand-written; the repository's
// tests/test_sdk_package.py checks the implementation against them).

/**
 * Why the SDK stopped or complained. The last four are the codes of the
 * server's `error` frames (non-fatal).
 */
export type SignalingErrorCode =
  | "unauthorized"
  | "room_full"
  | "invalid_room"
  | "origin_forbidden"
  | "message_too_big"
  | "rate_limited"
  | "server_restart"
  | "try_again_later"
  | "idle"
  | "replaced"
  | "connection_lost"
  | "left"
  | "login_failed"
  | "http_error"
  | "invalid_message"
  | "unknown_peer"
  | "forbidden"
  | "unavailable";

/** How the SDK reacts to a WebSocket close code. */
export interface CloseMeaning {
  code: SignalingErrorCode;
  /** true: stop reconnecting and reject `join()`; false: reconnect with `resume=`. */
  fatal: boolean;
  /** Human-readable, safe to show a user. */
  message: string;
}

/** Every close code of the signaling contract (docs/protocol.md, "Close codes"). */
export declare const CLOSE_CODES: Readonly<Record<number, CloseMeaning>>;

/**
 * The meaning of a close code; a code outside the contract (1006 above all:
 * the network dropped) is `connection_lost`, worth reconnecting.
 */
export declare function closeMeaning(closeCode: number): CloseMeaning;

/** An error the SDK reports to the application (`error` event, rejected promises). */
export declare class SignalingError extends Error {
  constructor(
    code: SignalingErrorCode,
    message: string,
    details?: { closeCode?: number; reason?: string; fatal?: boolean },
  );
  /** Machine-readable reason. */
  code: SignalingErrorCode;
  /** The WebSocket close code, when there was one. */
  closeCode: number | undefined;
  /** The server's close reason, when it gave one ("" otherwise). */
  reason: string;
  /** true when the SDK stopped and will not reconnect. */
  fatal: boolean;
  static fromClose(closeCode: number, reason: string): SignalingError;
}
