// @ts-check
/**
 * Browser SDK for the Second Brain Database signaling service: a mesh call
 * over one WebSocket, with one RTCPeerConnection per remote peer.
 *
 * Dependency-free ES module, served by the app at `/static/sbd-signaling.js`
 * (it imports its two siblings relatively, so bundlers take it as is).
 *
 * @example
 *   import { login, SignalingClient } from "/static/sbd-signaling.js";
 *   const { token } = await login("", "alice", "a-long-password");
 *   const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
 *   const call = new SignalingClient({ token, room: "standup", localStream: media });
 *   call.on("track", ({ peerId, stream }) => show(peerId, stream));
 *   await call.join();
 *
 * Conventions on top of the wire contract (docs/sdk.md): the peer that joins
 * offers to everyone already in the room (they answer); later renegotiation
 * (ICE restarts, new tracks) may start on either side and glare is resolved
 * by perfect negotiation, the peer with the smaller peer id being polite.
 * @module sbd-signaling
 */

import { SignalingError } from "./sbd-errors.js";
import { RemotePeer } from "./sbd-peer.js";

export { CLOSE_CODES, SignalingError, closeMeaning } from "./sbd-errors.js";
export { RemotePeer } from "./sbd-peer.js";
export { CallClient } from "./sbd-calls.js";

/** @typedef {import("./sbd-peer.js").PeerInfo} PeerInfo */
/** @typedef {import("./sbd-peer.js").SignalMessage} SignalMessage */

const ROOM_ID = /^[A-Za-z0-9_.-]{1,128}$/;
/** Relayed messages sent while the socket is down wait for the resumed
 * session, up to this many (then the oldest go: ICE will restart anyway). */
const OUTBOX_LIMIT = 512;
/** A fetched ICE configuration is replaced this share of its lifetime
 * (`expiresIn`) before its TURN credentials expire, at most a minute before;
 * a failed fetch is retried after ICE_REFRESH_RETRY_MS. */
const ICE_REFRESH_LEAD = 0.2;
const ICE_REFRESH_MAX_LEAD_MS = 60_000;
const ICE_REFRESH_MIN_DELAY_MS = 1000;
const ICE_REFRESH_RETRY_MS = 5000;

/**
 * @typedef {"idle" | "connecting" | "open" | "reconnecting" | "closed"} ConnectionStatus
 *
 * @typedef {RTCConfiguration & { expiresIn?: number }} ServerRtcConfiguration
 *   what `GET /api/v1/webrtc/config` answers: `expiresIn`, seconds until its
 *   TURN credentials expire (absent without TURN)
 *
 * @typedef {object} ReconnectOptions
 * @property {number} [initialDelayMs] first retry delay (default 500)
 * @property {number} [maxDelayMs] cap of the exponential backoff (default 10000)
 * @property {number} [maxAttempts] consecutive failures before giving up (default Infinity)
 *
 * @typedef {object} SignalingClientOptions
 * @property {string} token access token (see {@link login})
 * @property {string} room room id, `^[A-Za-z0-9_.-]{1,128}$`
 * @property {string} [baseUrl] server origin, e.g. "https://calls.example.com"; default this page's
 * @property {MediaStream | null} [localStream] camera/microphone to send
 * @property {RTCConfiguration} [rtcConfig] skip fetching `/api/v1/webrtc/config`
 *   (and refreshing it: a configuration given here is used as is)
 * @property {() => Promise<string>} [tokenProvider] returns a fresh token; called before expiry
 * @property {ReconnectOptions} [reconnect]
 * @property {number} [pingIntervalMs] keep-alive period (default 20000)
 * @property {string} [ticket] a single-use ticket for the first connection (an
 *   accepted call's, see CallClient.accept); later ones use the token
 * @property {boolean} [telemetry] report each peer connection's setup time and
 *   candidate type to the server (`call-setup`, counted in its metrics; no
 *   ids; default true)
 * @property {boolean} [useTickets] connect with a single-use ticket rather than
 *   the token in the URL (default true; falls back to the token on servers
 *   without the ticket endpoint)
 * @property {number} [pongTimeoutMs] a silent server is declared dead after this (default 10000)
 * @property {string} [dataChannelLabel] label of the per-peer data channel (default "sbd")
 * @property {boolean} [leaveOnUnload] send `leave` when the page goes away (default true)
 *
 * @typedef {object} SignalingEventMap
 * @property {{ peerId: string, userId: string, resumed: boolean, participants: PeerInfo[] }} open
 *   a session began (`resumed`: the same session continued after a reconnect)
 * @property {{ status: ConnectionStatus }} status the signaling connection changed
 * @property {{ peer: RemotePeer }} peer-joined
 * @property {{ peerId: string, userId: string }} peer-left
 * @property {{ peer: RemotePeer, peerId: string, track: MediaStreamTrack, stream: MediaStream }} track
 * @property {{ peer: RemotePeer, peerId: string, data: unknown }} data a data channel message
 * @property {{ peer: RemotePeer, peerId: string, state: "open" | "closed" }} channel
 * @property {{ peerId: string, userId: string, payload: unknown }} app an `app` message
 * @property {{ peer: RemotePeer, peerId: string, media: Record<string, unknown> }} media-state
 * @property {{ peer: RemotePeer, peerId: string, state: RTCPeerConnectionState }} connection-state
 * @property {{ peer: RemotePeer, peerId: string, message: string }} negotiation-error
 * @property {{ message: string, level: "info" | "warning" }} notice a message from the operators
 * @property {{ error: SignalingError }} error see `error.fatal`
 * @property {{ error: SignalingError | null }} closed the client stopped for good
 */

/**
 * Log in with a username and password (`POST /api/v1/auth/token`).
 * @param {string} baseUrl server origin; "" for this page's
 * @param {string} username
 * @param {string} password
 * @returns {Promise<{ token: string, expiresIn: number }>}
 */
export async function login(baseUrl, username, password) {
  const body = new URLSearchParams({ username, password });
  const response = await fetch(`${baseUrl}/api/v1/auth/token`, { method: "POST", body });
  if (response.status === 401) {
    throw new SignalingError("login_failed", "Wrong username or password.");
  }
  if (!response.ok) {
    throw new SignalingError("http_error", `Login failed: HTTP ${response.status}.`);
  }
  const answer = await response.json();
  return { token: answer.access_token, expiresIn: answer.expires_in };
}

/**
 * The RTCConfiguration (STUN/TURN servers) the server hands out.
 * @param {string} baseUrl server origin; "" for this page's
 * @param {string} token
 * @returns {Promise<ServerRtcConfiguration>}
 */
export async function fetchRtcConfig(baseUrl, token) {
  const response = await fetch(`${baseUrl}/api/v1/webrtc/config`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  if (response.status === 401) {
    throw new SignalingError("unauthorized", "The token was refused by the server.");
  }
  if (!response.ok) {
    throw new SignalingError("http_error", `Fetching the ICE configuration failed: HTTP ${response.status}.`);
  }
  return response.json();
}

/**
 * A single-use, 30-second ticket for one room's WebSocket, so that the token
 * never appears in a URL (proxies log URLs). Null when the server has no
 * ticket endpoint: connect with the token then.
 * @param {string} baseUrl server origin; "" for this page's
 * @param {string} token
 * @param {string} room
 * @returns {Promise<string | null>}
 */
export async function fetchTicket(baseUrl, token, room) {
  const response = await fetch(`${baseUrl}/api/v1/webrtc/ticket`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ room_id: room }),
  });
  if (response.status === 404) return null;
  if (response.status === 401 || response.status === 403) {
    throw new SignalingError("unauthorized", "The token was refused by the server.");
  }
  if (!response.ok) {
    throw new SignalingError("http_error", `Requesting a ticket failed: HTTP ${response.status}.`);
  }
  return (await response.json()).ticket;
}

/** A call in one room: signaling connection plus a mesh of peer connections. */
export class SignalingClient extends EventTarget {
  /** @param {SignalingClientOptions} options */
  constructor(options) {
    super();
    if (!options?.token) throw new TypeError("SignalingClient needs a token");
    /** @type {string} */
    this.room = options.room;
    /** @type {string} */
    this.token = options.token;
    this.baseUrl = (options.baseUrl ?? globalThis.location?.origin ?? "").replace(/\/$/, "");
    /** @type {MediaStream | null} */
    this.localStream = options.localStream ?? null;
    /** @type {ServerRtcConfiguration | null} */
    this.rtcConfig = options.rtcConfig ?? null;
    /** @type {ConnectionStatus} */
    this.status = "idle";
    /** @type {string | null} this connection's id, set by `welcome` */
    this.peerId = null;
    /** @type {string | null} */
    this.userId = null;
    /** @type {Map<string, RemotePeer>} every other peer in the room */
    this.peers = new Map();
    /** @type {Record<string, boolean>} what this side last announced in `media-state` */
    this.mediaState = {};

    this._options = {
      initialDelayMs: options.reconnect?.initialDelayMs ?? 500,
      maxDelayMs: options.reconnect?.maxDelayMs ?? 10_000,
      maxAttempts: options.reconnect?.maxAttempts ?? Infinity,
      pingIntervalMs: options.pingIntervalMs ?? 20_000,
      pongTimeoutMs: options.pongTimeoutMs ?? 10_000,
      dataChannelLabel: options.dataChannelLabel ?? "sbd",
      leaveOnUnload: options.leaveOnUnload ?? true,
      useTickets: options.useTickets ?? true,
      telemetry: options.telemetry ?? true,
    };
    this._tokenProvider = options.tokenProvider ?? null;
    /** @type {string | null} */
    this._ticket = options.ticket ?? null;
    /** @type {WebSocket | null} */
    this._ws = null;
    /** @type {string | null} */
    this._resumeToken = null;
    this._attempts = 0;
    /** @type {object[]} */
    this._outbox = [];
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._retryTimer = undefined;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this._pingTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._pongTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._refreshTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._iceRefreshTimer = undefined;
    /** @type {{ resolve: (v: SignalingEventMap["open"]) => void, reject: (e: SignalingError) => void } | null} */
    this._joining = null;
    this._onPageHide = () => void this.leave();
  }

  /**
   * Subscribe to an event; the handler gets the event's detail.
   * @template {keyof SignalingEventMap} K
   * @param {K} type
   * @param {(detail: SignalingEventMap[K]) => void} handler
   * @returns {() => void} unsubscribe
   */
  on(type, handler) {
    /** @param {Event} event */
    const listener = (event) => handler(/** @type {CustomEvent} */ (event).detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /**
   * Fetch the ICE configuration (unless given), connect and enter the room.
   * Resolves on the first `welcome`; rejects on a fatal error (bad token,
   * room full, ...). Connection drops are retried, not rejected.
   * @returns {Promise<SignalingEventMap["open"]>}
   */
  async join() {
    if (this.status !== "idle") throw new Error("join() may be called once");
    if (!ROOM_ID.test(this.room)) {
      throw new SignalingError("invalid_room", "The room id is not valid.", { closeCode: 4400 });
    }
    this._setStatus("connecting");
    const fetchesConfig = this.rtcConfig === null;
    try {
      if (fetchesConfig) this.rtcConfig = await fetchRtcConfig(this.baseUrl, this.token);
    } catch (error) {
      const failure =
        error instanceof SignalingError
          ? error
          : new SignalingError("http_error", `Cannot reach the server: ${error}`);
      this._stop(failure);
      throw failure;
    }
    // leave() may have been called while the configuration was loading.
    if (/** @type {ConnectionStatus} */ (this.status) === "closed") {
      throw new SignalingError("left", "Left before the session began.");
    }
    /** @type {Promise<SignalingEventMap["open"]>} */
    const opened = new Promise((resolve, reject) => {
      this._joining = { resolve, reject };
    });
    if (this._options.leaveOnUnload) globalThis.addEventListener?.("pagehide", this._onPageHide);
    this._scheduleRefresh();
    if (fetchesConfig) this._scheduleIceRefresh();
    this._connect();
    return opened;
  }

  /**
   * Leave on purpose: the others see `peer-left` at once; no reconnect.
   * @returns {Promise<void>} settles when the server has closed the socket
   *   (so the `leave` surely arrived), or after 2 s
   */
  leave() {
    if (this.status === "closed") return Promise.resolve();
    const ws = this._ws;
    this._send({ type: "leave" });
    this._stop(null);
    return new Promise((resolve) => {
      if (!ws || ws.readyState === WebSocket.CLOSED) return resolve();
      ws.addEventListener("close", () => resolve(), { once: true });
      setTimeout(resolve, 2000);
    });
  }

  /**
   * Tell the others what this side sends (mute/camera state); it is kept by
   * the server and shown to peers that join later.
   * @param {{ audio?: boolean, video?: boolean, screen?: boolean }} state
   */
  setMediaState(state) {
    this.mediaState = { ...this.mediaState, ...state };
    this._send({ type: "media-state", payload: this.mediaState });
  }

  /**
   * Send application data through the signaling server (`app` message).
   * @param {unknown} payload any JSON
   * @param {string | null} [to] one peer id; everyone else when absent
   */
  sendApp(payload, to = null) {
    this._send({ type: "app", to, payload });
  }

  /**
   * Send over the peer-to-peer data channels.
   * @param {string | ArrayBuffer | Blob | ArrayBufferView} data
   * @param {string | null} [to] one peer id; every peer when absent
   * @returns {number} how many peers it went to (channels not yet open are skipped)
   */
  sendData(data, to = null) {
    let sent = 0;
    for (const peer of this.peers.values()) {
      if ((to === null || peer.peerId === to) && peer.send(data)) sent += 1;
    }
    return sent;
  }

  /**
   * Switch camera/microphone (or stop sending with `null`).
   * @param {MediaStream | null} stream
   */
  async setLocalStream(stream) {
    this.localStream = stream;
    await Promise.all([...this.peers.values()].map((peer) => peer.setLocalStream(stream)));
  }

  /**
   * Renegotiate with fresh ICE candidates, with one peer or all of them.
   * Happens by itself when a connection fails.
   * @param {string} [peerId]
   */
  restartIce(peerId) {
    for (const peer of this.peers.values()) {
      if (peerId === undefined || peer.peerId === peerId) peer.restartIce();
    }
  }

  // --- the WebSocket -------------------------------------------------------

  async _connect() {
    const base = this.baseUrl.replace(/^http/, "ws");
    /** @type {string | null} */
    let ticket = this._ticket;
    this._ticket = null; // single use
    if (!ticket && this._options.useTickets) {
      try {
        ticket = await fetchTicket(this.baseUrl, this.token, this.room);
      } catch (error) {
        if (this.status === "closed") return;
        // A refused token ends the session as a 4003 close would; anything
        // else (network, 5xx) is a failed attempt worth retrying.
        const refused = error instanceof SignalingError && error.code === "unauthorized";
        this._onClose(refused ? 4003 : 1006, error instanceof Error ? error.message : String(error), false);
        return;
      }
      if (this.status === "closed") return;
    }
    const params = new URLSearchParams(ticket ? { ticket } : { token: this.token });
    if (this._resumeToken) params.set("resume", this._resumeToken);
    const ws = new WebSocket(`${base}/ws/webrtc/${encodeURIComponent(this.room)}?${params}`);
    const resuming = this._resumeToken !== null;
    let welcomed = false;
    this._ws = ws;
    ws.onmessage = (event) => {
      this._heard();
      /** @type {any} */
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return; // the server only sends JSON; nothing sensible to do otherwise
      }
      if (message.type === "welcome") welcomed = true;
      this._onMessage(message);
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._onClose(event.code, event.reason, resuming && !welcomed);
    };
  }

  /**
   * @param {number} code
   * @param {string} reason
   * @param {boolean} resumeRefused the close answered a resume attempt
   */
  _onClose(code, reason, resumeRefused) {
    this._ws = null;
    this._stopPing();
    if (this.status === "closed") return;
    const error = SignalingError.fromClose(code, reason);
    if (code === 4003 && resumeRefused) {
      // The session is gone (expired, or the server lost it): start a new
      // one. Should the token itself be bad, that attempt ends it for good.
      this._resumeToken = null;
      this._retry(0);
      return;
    }
    if (error.fatal) {
      this._stop(error);
      return;
    }
    this._emit("error", { error });
    this._attempts += 1;
    if (this._attempts > this._options.maxAttempts) {
      this._stop(new SignalingError(error.code, `Gave up after ${this._attempts - 1} attempts: ${error.message}`));
      return;
    }
    // A server going away on purpose wants us elsewhere now; otherwise back off.
    const restart = code === 1001 || code === 1012;
    this._retry(restart && this._attempts === 1 ? 0 : this._backoff());
  }

  /** @returns {number} milliseconds, exponential with jitter */
  _backoff() {
    const { initialDelayMs, maxDelayMs } = this._options;
    const ceiling = Math.min(maxDelayMs, initialDelayMs * 2 ** (this._attempts - 1));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /** @param {number} delayMs */
  _retry(delayMs) {
    this._setStatus("reconnecting");
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._connect(), delayMs);
  }

  /** @param {object} message */
  _send(message) {
    const ws = this._ws;
    if (ws?.readyState === WebSocket.OPEN && this.status === "open") {
      ws.send(JSON.stringify(message));
      return;
    }
    const type = /** @type {{ type: string }} */ (message).type;
    if (type === "ping" || type === "leave" || type === "refresh") {
      if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
      return;
    }
    // Down for now: kept for the resumed session (dropped if it is a new one).
    this._outbox.push(message);
    if (this._outbox.length > OUTBOX_LIMIT) this._outbox.shift();
  }

  _startPing() {
    this._stopPing();
    this._pingTimer = setInterval(() => {
      this._send({ type: "ping" });
      this._pongTimer ??= setTimeout(() => this._declareDead(), this._options.pongTimeoutMs);
    }, this._options.pingIntervalMs);
  }

  /** Any frame proves the server is alive. */
  _heard() {
    clearTimeout(this._pongTimer);
    this._pongTimer = undefined;
  }

  _stopPing() {
    clearInterval(this._pingTimer);
    this._heard();
  }

  /** The server went silent: do not wait for a close handshake that a dead
   * network never completes; reconnect now. */
  _declareDead() {
    const ws = this._ws;
    if (!ws) return;
    this._ws = null;
    ws.close(4000, "ping timeout");
    this._onClose(1006, "no answer to ping", false);
  }

  // --- messages --------------------------------------------------------------

  /** @param {any} message */
  _onMessage(message) {
    const payload = message.payload ?? {};
    switch (message.type) {
      case "welcome":
        this._onWelcome(payload);
        break;
      case "user-joined":
        this._addPeer({ peerId: payload.peer_id, userId: payload.user_id, name: payload.name, media: {} });
        break;
      case "user-left":
        this._removePeer(payload.peer_id, payload.user_id);
        break;
      case "offer":
      case "answer":
      case "ice-candidate":
        this._peerFor(message).handleSignal({ type: message.type, payload });
        break;
      case "media-state": {
        const peer = this._peerFor(message);
        peer.media = payload;
        this._emit("media-state", { peer, peerId: peer.peerId, media: payload });
        break;
      }
      case "app":
        this._emit("app", { peerId: message.from, userId: message.from_user, payload });
        break;
      case "notice":
        this._emit("notice", { message: payload.message, level: payload.level ?? "info" });
        break;
      case "error":
        this._emit("error", {
          error: new SignalingError(payload.code, payload.message ?? "error", { fatal: false }),
        });
        break;
      default:
        break; // pong, and types of a newer server
    }
  }

  /** @param {any} welcome */
  _onWelcome(welcome) {
    const resumed = this.peerId !== null && welcome.peer_id === this.peerId;
    /** @type {PeerInfo[]} */
    const participants = welcome.participants.map(
      (/** @type {any} */ p) => ({ peerId: p.peer_id, userId: p.user_id, name: p.name, media: p.media ?? {} }),
    );
    if (!resumed) {
      // A new session (first join, or the old one could not be resumed):
      // the old peer connections belong to a peer id nobody knows any more.
      for (const peerId of [...this.peers.keys()]) this._removePeer(peerId, "");
      this._outbox = [];
    }
    this.peerId = welcome.peer_id;
    this.userId = welcome.user_id;
    this._resumeToken = welcome.resume_token;
    this._attempts = 0;
    this._setStatus("open");
    this._startPing();

    if (resumed) {
      const present = new Set(participants.map((p) => p.peerId));
      for (const peerId of [...this.peers.keys()]) {
        if (!present.has(peerId)) this._removePeer(peerId, "");
      }
      for (const info of participants) {
        if (!this.peers.has(info.peerId)) this._addPeer(info);
      }
      const backlog = this._outbox;
      this._outbox = [];
      for (const message of backlog) this._send(message);
    } else {
      // The newcomer offers to everyone already here (they only answer).
      for (const info of participants) this._addPeer(info).start(true);
      if (Object.keys(this.mediaState).length) this.setMediaState({});
    }
    const detail = { peerId: welcome.peer_id, userId: welcome.user_id, resumed, participants };
    this._emit("open", detail);
    this._joining?.resolve(detail);
    this._joining = null;
  }

  /**
   * The peer a relayed message comes from; one not announced yet (it cannot
   * normally happen: `user-joined` comes first) is added on the spot.
   * @param {any} message
   * @returns {RemotePeer}
   */
  _peerFor(message) {
    return (
      this.peers.get(message.from) ??
      this._addPeer({ peerId: message.from, userId: message.from_user, name: message.from_user, media: {} })
    );
  }

  /**
   * @param {PeerInfo} info
   * @returns {RemotePeer}
   */
  _addPeer(info) {
    const known = this.peers.get(info.peerId);
    if (known) return known;
    const peer = new RemotePeer(info, {
      localPeerId: /** @type {string} */ (this.peerId),
      rtcConfig: /** @type {RTCConfiguration} */ (this.rtcConfig),
      localStream: this.localStream,
      dataChannelLabel: this._options.dataChannelLabel,
      signal: (message) => this._send({ ...message, to: info.peerId }),
      report: (payload) => {
        if (this._options.telemetry) this._send({ type: "call-setup", payload });
      },
      emit: (type, detail) => this._emit(type, detail),
    });
    this.peers.set(info.peerId, peer);
    this._emit("peer-joined", { peer });
    return peer;
  }

  /**
   * @param {string} peerId
   * @param {string} userId
   */
  _removePeer(peerId, userId) {
    const peer = this.peers.get(peerId);
    if (!peer) return;
    this.peers.delete(peerId);
    peer.close();
    this._emit("peer-left", { peerId, userId: userId || peer.userId });
  }

  // --- lifecycle ---------------------------------------------------------

  /** Keep the session alive past the token's expiry (server closes 4003 then). */
  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    const provider = this._tokenProvider;
    const expiresAt = tokenExpiry(this.token);
    if (!provider || expiresAt === null) return;
    const lead = Math.min(60_000, (expiresAt - Date.now()) / 10);
    this._refreshTimer = setTimeout(async () => {
      try {
        this.token = await provider();
        this._send({ type: "refresh", payload: { token: this.token } });
        this._scheduleRefresh();
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        this._emit("error", {
          error: new SignalingError("unauthorized", `Could not refresh the token: ${message}`, { fatal: false }),
        });
      }
    }, Math.max(0, expiresAt - Date.now() - lead));
  }

  /**
   * TURN credentials expire (`expiresIn` of the fetched configuration): fetch
   * fresh ones before then, for every later allocation: peer connections to
   * peers that join later, ICE restarts that allocate anew (expired
   * credentials get no relay).
   * @param {number} [delayMs] default: ahead of the current one's expiry
   */
  _scheduleIceRefresh(delayMs) {
    clearTimeout(this._iceRefreshTimer);
    const lifetimeMs = (this.rtcConfig?.expiresIn ?? 0) * 1000;
    if (!(lifetimeMs > 0)) return;
    const lead = Math.min(ICE_REFRESH_MAX_LEAD_MS, lifetimeMs * ICE_REFRESH_LEAD);
    const delay = delayMs ?? Math.max(ICE_REFRESH_MIN_DELAY_MS, lifetimeMs - lead);
    this._iceRefreshTimer = setTimeout(() => void this._refreshIceConfig(), delay);
  }

  async _refreshIceConfig() {
    try {
      const config = await fetchRtcConfig(this.baseUrl, this.token);
      if (this.status === "closed") return;
      this.rtcConfig = config;
      for (const peer of this.peers.values()) peer.setConfiguration(config);
      this._scheduleIceRefresh();
    } catch (error) {
      if (this.status === "closed") return;
      const message = error instanceof Error ? error.message : String(error);
      const code = error instanceof SignalingError ? error.code : "http_error";
      this._emit("error", {
        error: new SignalingError(code, `Could not refresh the ICE configuration: ${message}`, {
          fatal: false,
        }),
      });
      this._scheduleIceRefresh(ICE_REFRESH_RETRY_MS);
    }
  }

  /** @param {SignalingError | null} error */
  _stop(error) {
    this._setStatus("closed");
    clearTimeout(this._retryTimer);
    clearTimeout(this._refreshTimer);
    clearTimeout(this._iceRefreshTimer);
    this._stopPing();
    globalThis.removeEventListener?.("pagehide", this._onPageHide);
    const ws = this._ws;
    this._ws = null;
    ws?.close(1000, "leave");
    for (const peerId of [...this.peers.keys()]) this._removePeer(peerId, "");
    if (error) {
      this._emit("error", { error });
      this._joining?.reject(error);
    } else {
      this._joining?.reject(new SignalingError("left", "Left before the session began."));
    }
    this._joining = null;
    this._emit("closed", { error });
  }

  /** @param {ConnectionStatus} status */
  _setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this._emit("status", { status });
  }

  /**
   * @param {string} type
   * @param {object} detail
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/**
 * The `exp` of a JWT in milliseconds, read without verifying (the server
 * verifies; this only decides when to ask for a fresh one).
 * @param {string} token
 * @returns {number | null}
 */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
    return typeof claims.exp === "number" ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}
