// Declarations of sbd-calls.js (hand-written; tests/test_sdk_package.py checks
// the implementation against them).

import type { SignalingError } from "./sbd-errors.js";

export type CallClientStatus = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface CallClientOptions {
  /** Access token of the user this device belongs to. */
  token: string;
  /** Server origin, e.g. "https://calls.example.com"; default this page's. */
  baseUrl?: string;
  /** Keep-alive period (default 20000). */
  pingIntervalMs?: number;
  /** Cap of the reconnect backoff (default 10000). */
  maxDelayMs?: number;
}

/** A call ringing this device (`incoming-call`). */
export interface IncomingCall {
  callId: string;
  fromUser: string;
  /** The caller's display name. */
  name: string;
  /** The room the call takes place in. */
  roomId: string;
  /** What the caller attached, unchanged. */
  data: unknown;
}

/** A change of a call this device takes part in (`call-state`). */
export interface CallState {
  callId: string;
  state: "ringing" | "accepted" | "declined" | "cancelled" | "missed" | "answered-elsewhere";
  /** With `ringing`: the callee's user sockets rung (0: nobody is online). */
  devices?: number;
  /** With `accepted`, to the device that accepted. */
  roomId?: string;
  /** With `accepted`, to the device that accepted: opens `roomId` once. */
  ticket?: string;
}

export interface CallEventMap {
  ready: { userId: string; connectionId: string; server: { version: string; features: string[] } };
  "incoming-call": IncomingCall;
  "call-state": CallState;
  status: { status: CallClientStatus };
  error: { error: SignalingError };
}

/** One device of a user on a user socket (`/ws/user`), reachable for calls. */
export declare class CallClient extends EventTarget {
  constructor(options: CallClientOptions);
  readonly token: string;
  readonly baseUrl: string;
  status: CallClientStatus;
  on<K extends keyof CallEventMap>(type: K, handler: (detail: CallEventMap[K]) => void): () => void;
  /** Open the user socket; resolves with `ready` (calls ringing now follow it). */
  connect(): Promise<CallEventMap["ready"]>;
  /** Say `leave` and stop reconnecting; calls this device started are cancelled. */
  close(): void;
  /** Ring every device of `toUser`; resolves with the `ringing` state. */
  call(toUser: string, roomId: string, data?: unknown): Promise<CallState>;
  /** Resolves with `accepted` and the room's ticket; rejects (`unknown_call`) when another was first. */
  accept(callId: string): Promise<CallState>;
  decline(callId: string): Promise<CallState>;
  /** Stop ringing a call this device started. */
  cancel(callId: string): Promise<CallState>;
}
