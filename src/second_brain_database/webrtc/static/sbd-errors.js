// @ts-check
/**
 * What each WebSocket close code of the signaling contract means to a client,
 * and the error the SDK surfaces for it (docs/protocol.md, "Close codes").
 * @module sbd-errors
 */

/**
 * The last four are the `error` messages of the server (non-fatal).
 * @typedef {"unauthorized" | "room_full" | "invalid_room" | "origin_forbidden"
 *   | "message_too_big" | "rate_limited" | "server_restart" | "try_again_later"
 *   | "idle" | "replaced" | "connection_lost" | "left" | "login_failed" | "http_error"
 *   | "invalid_message" | "unknown_peer" | "forbidden" | "unavailable"} SignalingErrorCode
 */

/**
 * How the SDK reacts to a close: `fatal` stops reconnecting and rejects
 * `join()`; the others reconnect (with `resume=` so the session survives).
 * @typedef {{ code: SignalingErrorCode, fatal: boolean, message: string }} CloseMeaning
 */

/** @type {Readonly<Record<number, CloseMeaning>>} */
export const CLOSE_CODES = Object.freeze({
  1000: { code: "left", fatal: true, message: "The session ended (left the room)." },
  1001: { code: "server_restart", fatal: false, message: "The server is going away; reconnecting." },
  1008: {
    code: "origin_forbidden",
    fatal: true,
    message: "This page's origin is not allowed to connect (SBD_ALLOWED_ORIGINS).",
  },
  1009: {
    code: "message_too_big",
    fatal: false,
    message: "A message was larger than the server accepts; reconnecting.",
  },
  1012: { code: "server_restart", fatal: false, message: "The server is restarting; reconnecting." },
  4003: {
    code: "unauthorized",
    fatal: true,
    message: "The token is missing, invalid, expired or not valid for this room.",
  },
  4008: { code: "room_full", fatal: true, message: "The room is full." },
  4029: {
    code: "rate_limited",
    fatal: false,
    message: "Too many messages were sent; reconnecting after a pause.",
  },
  4400: { code: "invalid_room", fatal: true, message: "The room id is not valid." },
  4408: {
    code: "idle",
    fatal: true,
    message: "The connection sent nothing for too long and was closed.",
  },
  4409: {
    code: "replaced",
    fatal: true,
    message: "This session continued on a newer connection.",
  },
  1013: {
    code: "try_again_later",
    fatal: false,
    message: "The server is busy or the connection fell behind; reconnecting.",
  },
});

/**
 * The meaning of a close code; anything not in the contract (1006 above all:
 * the network dropped) is a lost connection worth reconnecting.
 * @param {number} closeCode
 * @returns {CloseMeaning}
 */
export function closeMeaning(closeCode) {
  return (
    CLOSE_CODES[closeCode] ?? {
      code: "connection_lost",
      fatal: false,
      message: "The connection to the signaling server was lost; reconnecting.",
    }
  );
}

/** An error the SDK reports to the application (`error` event, rejected promises). */
export class SignalingError extends Error {
  /**
   * @param {SignalingErrorCode} code machine-readable reason
   * @param {string} message human-readable explanation, safe to show a user
   * @param {{ closeCode?: number, reason?: string, fatal?: boolean }} [details]
   */
  constructor(code, message, details = {}) {
    super(details.reason ? `${message} (${details.reason})` : message);
    this.name = "SignalingError";
    /** @type {SignalingErrorCode} */
    this.code = code;
    /** @type {number | undefined} the WebSocket close code, when there was one */
    this.closeCode = details.closeCode;
    /** @type {string} the server's close reason, when it gave one */
    this.reason = details.reason ?? "";
    /** @type {boolean} true when the SDK stopped and will not reconnect */
    this.fatal = details.fatal ?? true;
  }

  /**
   * @param {number} closeCode
   * @param {string} reason
   * @returns {SignalingError}
   */
  static fromClose(closeCode, reason) {
    const meaning = closeMeaning(closeCode);
    return new SignalingError(meaning.code, meaning.message, {
      closeCode,
      reason,
      fatal: meaning.fatal,
    });
  }
}
