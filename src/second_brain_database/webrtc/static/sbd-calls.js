// @ts-check
/**
 * Calls that ring a user (docs/protocol.md, "Calls: ringing a user"): one
 * device of a user on a user socket (`/ws/user`). It rings other users, is
 * rung, answers and cancels; a dropped socket reconnects by itself and gets
 * the calls still ringing its user again after the new `ready`.
 *
 * @example
 *   import { CallClient, SignalingClient } from "@second-brain-database/signaling";
 *   const phone = new CallClient({ token });
 *   phone.on("incoming-call", async ({ callId, fromUser }) => {
 *     const { roomId, ticket } = await phone.accept(callId);
 *     await new SignalingClient({ token, room: roomId, ticket }).join();
 *   });
 *   await phone.connect();
 * @module sbd-calls
 */

import { SignalingError } from "./sbd-errors.js";

/**
 * @typedef {"idle" | "connecting" | "open" | "reconnecting" | "closed"} CallClientStatus
 *
 * @typedef {object} CallClientOptions
 * @property {string} token access token
 * @property {string} [baseUrl] server origin; default this page's
 * @property {number} [pingIntervalMs] keep-alive period (default 20000)
 * @property {number} [maxDelayMs] cap of the reconnect backoff (default 10000)
 *
 * @typedef {object} IncomingCall
 * @property {string} callId
 * @property {string} fromUser
 * @property {string} name the caller's display name
 * @property {string} roomId the room the call takes place in
 * @property {unknown} data what the caller attached, unchanged
 *
 * @typedef {object} CallState
 * @property {string} callId
 * @property {"ringing" | "accepted" | "declined" | "cancelled" | "missed" | "answered-elsewhere"} state
 * @property {number} [devices] with `ringing`: the callee's user sockets rung
 * @property {string} [roomId] with `accepted`, to the device that accepted
 * @property {string} [ticket] with `accepted`, to the device that accepted: opens `roomId` once
 *
 * @typedef {object} CallEventMap
 * @property {{ userId: string, connectionId: string, server: { version: string, features: string[] } }} ready
 * @property {IncomingCall} incoming-call
 * @property {CallState} call-state every change of a call this device takes part in
 * @property {{ status: CallClientStatus }} status
 * @property {{ error: SignalingError }} error
 */

let nextRef = 0;

/** One device of a user, reachable for calls. */
export class CallClient extends EventTarget {
  /** @param {CallClientOptions} options */
  constructor(options) {
    super();
    if (!options?.token) throw new TypeError("CallClient needs a token");
    this.token = options.token;
    this.baseUrl = (options.baseUrl ?? globalThis.location?.origin ?? "").replace(/\/$/, "");
    /** @type {CallClientStatus} */
    this.status = "idle";
    this._pingIntervalMs = options.pingIntervalMs ?? 20_000;
    this._maxDelayMs = options.maxDelayMs ?? 10_000;
    /** @type {WebSocket | null} */
    this._ws = null;
    this._attempts = 0;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this._ping = undefined;
    /** @type {Map<string, { resolve: (state: CallState) => void, reject: (error: SignalingError) => void, done: (state: CallState) => boolean }>} */
    this._waiting = new Map();
    /** @type {((ready: CallEventMap["ready"]) => void) | null} */
    this._onReady = null;
    /** @type {((error: SignalingError) => void) | undefined} rejects connect() */
    this._failFirst = undefined;
  }

  /**
   * @template {keyof CallEventMap} K
   * @param {K} type
   * @param {(detail: CallEventMap[K]) => void} handler
   * @returns {() => void} removes the handler
   */
  on(type, handler) {
    /** @param {Event} event */
    const listener = (event) => handler(/** @type {CustomEvent} */ (event).detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /** Open the user socket; resolves with `ready` (calls ringing now follow it). */
  connect() {
    return new Promise((resolve, reject) => {
      this._onReady = resolve;
      this._failFirst = reject;
      this._setStatus("connecting");
      this._open();
    });
  }

  /** Say goodbye (`leave`) and stop reconnecting; calls this device started are cancelled. */
  close() {
    this._setStatus("closed");
    clearInterval(this._ping);
    const ws = this._ws;
    this._ws = null;
    if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "leave" }));
    ws?.close(1000);
    for (const waiter of this._waiting.values()) {
      waiter.reject(new SignalingError("left", "The call client was closed."));
    }
    this._waiting.clear();
  }

  /**
   * Ring every device of `toUser`; resolves with the `ringing` state (its
   * `callId` and how many `devices` rang). The answer comes as `call-state`.
   * @param {string} toUser
   * @param {string} roomId the room the call takes place in (the token must allow it)
   * @param {unknown} [data] any JSON of at most 1024 bytes, carried to the callee
   * @returns {Promise<CallState>}
   */
  call(toUser, roomId, data = null) {
    const ref = `call-${++nextRef}`;
    return this._request(ref, { type: "call", id: ref, payload: { to_user: toUser, room_id: roomId, data } }, (s) => s.state === "ringing");
  }

  /**
   * Pick the call up; resolves with `accepted` and the ticket for its room,
   * or rejects (`unknown_call`) when another device or the caller was first.
   * @param {string} callId
   * @returns {Promise<CallState>}
   */
  accept(callId) {
    return this._answer(callId, true);
  }

  /** @param {string} callId @returns {Promise<CallState>} */
  decline(callId) {
    return this._answer(callId, false);
  }

  /** Stop ringing a call this device started. @param {string} callId @returns {Promise<CallState>} */
  cancel(callId) {
    const ref = `cancel-${++nextRef}`;
    return this._request(ref, { type: "call-cancel", id: ref, payload: { call_id: callId } }, (s) => s.callId === callId);
  }

  /** @param {string} callId @param {boolean} accept */
  _answer(callId, accept) {
    const ref = `answer-${++nextRef}`;
    const message = { type: "call-answer", id: ref, payload: { call_id: callId, accept } };
    return this._request(ref, message, (s) => s.callId === callId);
  }

  /**
   * Send `message` and settle on the `call-state` it brings (matched by
   * `done`) or the `error` that answers its `ref`.
   * @param {string} ref
   * @param {object} message
   * @param {(state: CallState) => boolean} done
   * @returns {Promise<CallState>}
   */
  _request(ref, message, done) {
    return new Promise((resolve, reject) => {
      if (this._ws?.readyState !== WebSocket.OPEN) {
        reject(new SignalingError("connection_lost", "The user socket is not open."));
        return;
      }
      this._waiting.set(ref, { resolve, reject, done });
      this._ws.send(JSON.stringify(message));
    });
  }

  _open() {
    const base = this.baseUrl.replace(/^http/, "ws");
    const ws = new WebSocket(`${base}/ws/user?${new URLSearchParams({ token: this.token })}`);
    this._ws = ws;
    ws.onmessage = (event) => {
      /** @type {any} */
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this._onMessage(message);
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._onClose(event.code, event.reason);
    };
  }

  /** @param {any} message */
  _onMessage(message) {
    const payload = message.payload ?? {};
    if (message.type === "ready") {
      this._attempts = 0;
      this._setStatus("open");
      clearInterval(this._ping);
      this._ping = setInterval(() => this._ws?.send('{"type":"ping"}'), this._pingIntervalMs);
      const ready = { userId: payload.user_id, connectionId: payload.connection_id, server: payload.server };
      this._onReady?.(ready);
      this._onReady = null;
      this._failFirst = undefined;
      this._emit("ready", ready);
    } else if (message.type === "incoming-call") {
      this._emit("incoming-call", {
        callId: payload.call_id,
        fromUser: message.from_user,
        name: payload.name,
        roomId: payload.room_id,
        data: payload.data,
      });
    } else if (message.type === "call-state") {
      /** @type {CallState} */
      const state = {
        callId: payload.call_id,
        state: payload.state,
        ...(payload.devices !== undefined && { devices: payload.devices }),
        ...(payload.room_id !== undefined && { roomId: payload.room_id }),
        ...(payload.ticket !== undefined && { ticket: payload.ticket }),
      };
      const waiter = message.ref ? this._waiting.get(message.ref) : undefined;
      for (const [ref, candidate] of this._waiting) {
        if (candidate === waiter || (!message.ref && candidate.done(state))) {
          this._waiting.delete(ref);
          candidate.resolve(state);
          break;
        }
      }
      this._emit("call-state", state);
    } else if (message.type === "error") {
      const error = new SignalingError(payload.code, payload.message ?? payload.code);
      const waiter = message.ref ? this._waiting.get(message.ref) : undefined;
      if (waiter) {
        this._waiting.delete(message.ref);
        waiter.reject(error);
      } else {
        this._emit("error", { error });
      }
    }
  }

  /** @param {number} code @param {string} reason */
  _onClose(code, reason) {
    this._ws = null;
    clearInterval(this._ping);
    if (this.status === "closed") return;
    const error = SignalingError.fromClose(code, reason);
    for (const waiter of this._waiting.values()) waiter.reject(error);
    this._waiting.clear();
    if (error.fatal) {
      this._setStatus("closed");
      this._failFirst?.(error);
      this._emit("error", { error });
      return;
    }
    this._emit("error", { error });
    this._attempts += 1;
    this._setStatus("reconnecting");
    const ceiling = Math.min(this._maxDelayMs, 500 * 2 ** (this._attempts - 1));
    setTimeout(() => {
      if (this.status !== "closed") this._open();
    }, ceiling / 2 + Math.random() * (ceiling / 2));
  }

  /** @param {CallClientStatus} status */
  _setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this._emit("status", { status });
  }

  /** @param {string} type @param {unknown} detail */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
