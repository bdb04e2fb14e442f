// @ts-check
/**
 * One remote peer of the mesh: its RTCPeerConnection, negotiated with the
 * "perfect negotiation" pattern of the WebRTC spec, so that both sides may
 * (re)negotiate whenever they like and simultaneous offers never deadlock.
 * @module sbd-peer
 */

/**
 * @typedef {object} PeerInfo
 * @property {string} peerId the id of this connection (one user may join twice)
 * @property {string} userId the authenticated user id (`sub` of the token)
 * @property {string} name display name
 * @property {Record<string, unknown>} media the peer's last `media-state`
 */

/**
 * @typedef {{ type: "offer" | "answer" | "pranswer" | "rollback", sdp?: string }} Description
 * @typedef {{ candidate: string, sdpMid?: string | null, sdpMLineIndex?: number | null,
 *   usernameFragment?: string | null }} CandidateInit
 * @typedef {{ type: "offer" | "answer", payload: Description }
 *   | { type: "ice-candidate", payload: CandidateInit }} SignalMessage
 */

/**
 * What the peer needs from its client: a way to send a signaling message to
 * the remote peer, and a way to tell the application something happened.
 * @typedef {object} PeerHooks
 * @property {string} localPeerId
 * @property {RTCConfiguration} rtcConfig
 * @property {MediaStream | null} localStream
 * @property {string} dataChannelLabel
 * @property {(message: SignalMessage) => void} signal
 * @property {(type: string, detail: object) => void} emit
 * @property {(payload: CallSetupReport) => void} report call-setup telemetry
 *
 * @typedef {object} CallSetupReport
 * @property {"connected" | "failed"} outcome
 * @property {number} setup_ms
 * @property {string | null} candidate_type
 */

/** Seconds-long "disconnected" is often a blip; after this, restart ICE. */
const DISCONNECTED_GRACE_MS = 2500;

/** The data channel is negotiated out of band (same id on both sides), so
 * neither side has to wait for the other's `datachannel` event, and glare
 * can never create two channels. */
const DATA_CHANNEL_ID = 0;

export class RemotePeer {
  /**
   * @param {PeerInfo} info
   * @param {PeerHooks} hooks
   */
  constructor(info, hooks) {
    /** @type {string} */
    this.peerId = info.peerId;
    /** @type {string} */
    this.userId = info.userId;
    /** @type {string} */
    this.name = info.name;
    /** @type {Record<string, unknown>} */
    this.media = info.media ?? {};
    /** The polite peer yields on glare (rolls back its own offer); the ids
     * decide, so both sides agree without talking. Python client: same rule. */
    this.polite = hooks.localPeerId < info.peerId;
    /** @type {MediaStream} every remote track of this peer */
    this.stream = new MediaStream();
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
    /** @type {RTCDataChannel | null} */
    this.channel = null;
    /** @type {RTCPeerConnectionState} */
    this.connectionState = "new";
    /** Counters an app (or a test) can read to see negotiation at work. */
    this.stats = { offersSent: 0, collisions: 0, ignoredOffers: 0, rollbacks: 0, iceRestarts: 0 };
    this._hooks = hooks;
    this._makingOffer = false;
    this._ignoreOffer = false;
    this._settingRemoteAnswerPending = false;
    /** @type {Promise<void>} signaling messages are applied one at a time */
    this._queue = Promise.resolve();
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._disconnectTimer = undefined;
    this._closed = false;
    /** @type {number | null} when the first offer went out or came in (performance.now()) */
    this._setupStart = null;
    this._setupReported = false;
  }

  /** @returns {PeerInfo} */
  get info() {
    return { peerId: this.peerId, userId: this.userId, name: this.name, media: this.media };
  }

  /**
   * Create the RTCPeerConnection (once). Adding tracks and the data channel
   * fires `negotiationneeded`, so calling this *is* sending an offer, unless
   * a remote offer is applied first (then this side answers).
   * @param {boolean} [initiator] this side offers first
   * @returns {RTCPeerConnection}
   */
  start(initiator = false) {
    if (this.pc) return this.pc;
    const pc = new RTCPeerConnection(this._hooks.rtcConfig);
    this.pc = pc;
    const local = this._hooks.localStream;
    for (const track of local?.getTracks() ?? []) pc.addTrack(track, /** @type {MediaStream} */ (local));
    // The offer asks to receive what this side does not send, so the answer
    // can carry the other side's media without a second round trip. (An
    // answerer must not: an offer never fills transceivers made this way.)
    for (const kind of initiator ? ["audio", "video"] : []) {
      if (!local?.getTracks().some((t) => t.kind === kind)) {
        pc.addTransceiver(kind, { direction: "recvonly" });
      }
    }
    this._attachChannel(
      pc.createDataChannel(this._hooks.dataChannelLabel, { negotiated: true, id: DATA_CHANNEL_ID }),
    );

    pc.onnegotiationneeded = () => this._offer();
    pc.onicecandidate = ({ candidate }) => {
      // A null candidate is end-of-candidates: the contract's empty string.
      this._hooks.signal({
        type: "ice-candidate",
        payload: candidate ? { ...candidate.toJSON(), candidate: candidate.candidate } : { candidate: "" },
      });
    };
    pc.ontrack = ({ track }) => {
      this.stream.addTrack(track);
      track.addEventListener("ended", () => this.stream.removeTrack(track));
      this._hooks.emit("track", { peer: this, peerId: this.peerId, track, stream: this.stream });
    };
    pc.onconnectionstatechange = () => this._onConnectionState(pc.connectionState);
    return pc;
  }

  /**
   * Apply an offer, answer or ICE candidate from the remote peer.
   * @param {SignalMessage} message
   * @returns {Promise<void>}
   */
  handleSignal(message) {
    this._queue = this._queue
      .then(() => this._apply(message))
      .catch((error) => this._fail(error));
    return this._queue;
  }

  /**
   * Send over the data channel.
   * @param {string | ArrayBuffer | Blob | ArrayBufferView} data
   * @returns {boolean} whether the channel was open
   */
  send(data) {
    if (this.channel?.readyState !== "open") return false;
    this.channel.send(/** @type {string} */ (data));
    return true;
  }

  /** Gather fresh ICE candidates (new ufrag) and renegotiate. */
  restartIce() {
    if (!this.pc || this._closed) return;
    this.stats.iceRestarts += 1;
    this.pc.restartIce();
  }

  /**
   * Use these ICE servers (fresh TURN credentials) from now on: for the
   * connection not made yet, and for the next ICE restart of this one.
   * @param {RTCConfiguration} config
   */
  setConfiguration(config) {
    this._hooks.rtcConfig = config;
    if (!this.pc || this._closed) return;
    try {
      this.pc.setConfiguration(config);
    } catch (error) {
      this._fail(error);
    }
  }

  /**
   * Send this stream's tracks instead of the current ones: replaceTrack where
   * a sender of that kind exists (no renegotiation), else addTrack.
   * @param {MediaStream | null} stream
   */
  async setLocalStream(stream) {
    this._hooks.localStream = stream;
    const pc = this.pc;
    if (!pc) return;
    for (const kind of ["audio", "video"]) {
      const track = stream?.getTracks().find((t) => t.kind === kind) ?? null;
      const transceiver = pc
        .getTransceivers()
        .find((t) => t.receiver.track.kind === kind && t.currentDirection !== "stopped");
      if (transceiver) {
        await transceiver.sender.replaceTrack(track);
        if (track && transceiver.direction === "recvonly") transceiver.direction = "sendrecv";
        if (stream && track) transceiver.sender.setStreams?.(stream);
      } else if (track && stream) {
        pc.addTrack(track, stream);
      }
    }
  }

  close() {
    this._closed = true;
    clearTimeout(this._disconnectTimer);
    this.channel?.close();
    this.pc?.close();
    for (const track of this.stream.getTracks()) track.stop();
    this._setState("closed");
  }

  // --- perfect negotiation ----------------------------------------------

  async _offer() {
    const pc = this.pc;
    if (!pc || this._closed) return;
    try {
      this._makingOffer = true;
      await pc.setLocalDescription();
      const description = /** @type {RTCSessionDescription} */ (pc.localDescription);
      // Only an offer goes out here; if a remote offer won meanwhile, the
      // implicit description is an answer, sent by _apply.
      if (description.type !== "offer") return;
      this.stats.offersSent += 1;
      this._setupStart ??= performance.now();
      this._hooks.signal({ type: "offer", payload: { type: "offer", sdp: description.sdp } });
    } catch (error) {
      this._fail(error);
    } finally {
      this._makingOffer = false;
    }
  }

  /** @param {SignalMessage} message */
  async _apply(message) {
    if (this._closed) return;
    // Candidates only follow a description (messages arrive in order), so
    // without a connection there is nothing they could belong to.
    if (message.type === "ice-candidate" && !this.pc) return;
    const pc = this.pc ?? this.start();
    if (message.type === "ice-candidate") {
      try {
        await pc.addIceCandidate(message.payload);
      } catch (error) {
        // Candidates of an offer this side ignored fail to apply: expected.
        // An end-of-candidates some browsers reject is not worth an error.
        if (!this._ignoreOffer && message.payload.candidate !== "") throw error;
      }
      return;
    }
    const description = message.payload;
    if (description.type === "offer") this._setupStart ??= performance.now();
    const readyForOffer =
      !this._makingOffer && (pc.signalingState === "stable" || this._settingRemoteAnswerPending);
    const collision = description.type === "offer" && !readyForOffer;
    this._ignoreOffer = !this.polite && collision;
    if (collision) this.stats.collisions += 1;
    if (this._ignoreOffer) {
      this.stats.ignoredOffers += 1;
      return;
    }
    if (collision) this.stats.rollbacks += 1; // setRemoteDescription rolls back implicitly
    this._settingRemoteAnswerPending = description.type === "answer";
    try {
      await pc.setRemoteDescription(/** @type {RTCSessionDescriptionInit} */ (description));
    } finally {
      this._settingRemoteAnswerPending = false;
    }
    if (description.type === "offer") {
      await pc.setLocalDescription();
      const answer = /** @type {RTCSessionDescription} */ (pc.localDescription);
      this._hooks.signal({ type: "answer", payload: { type: "answer", sdp: answer.sdp } });
    }
  }

  // --- state ---------------------------------------------------------------

  /** @param {RTCPeerConnectionState} state */
  _onConnectionState(state) {
    clearTimeout(this._disconnectTimer);
    if ((state === "connected" || state === "failed") && !this._setupReported) {
      this._setupReported = true; // the first setup only: not ICE restarts
      void this._reportSetup(state);
    }
    if (state === "failed") {
      this.restartIce();
    } else if (state === "disconnected") {
      // Often recovers by itself (a network blip); restart only if it lasts.
      this._disconnectTimer = setTimeout(() => {
        const now = this.pc?.connectionState;
        if (now === "disconnected" || now === "failed") this.restartIce();
      }, DISCONNECTED_GRACE_MS);
    }
    this._setState(state);
  }

  /** @param {RTCPeerConnectionState} state */
  _setState(state) {
    if (state === this.connectionState) return;
    this.connectionState = state;
    this._hooks.emit("connection-state", { peer: this, peerId: this.peerId, state });
  }

  /**
   * Call-setup telemetry: how long from the first offer to `outcome`, and
   * the selected candidate pair's local type (host, srflx, prflx, relay).
   * @param {"connected" | "failed"} outcome
   */
  async _reportSetup(outcome) {
    if (this._setupStart === null || !this.pc) return;
    const setupMs = Math.round(performance.now() - this._setupStart);
    /** @type {string | null} */
    let candidateType = null;
    if (outcome === "connected") {
      try {
        candidateType = selectedCandidateType(await this.pc.getStats());
      } catch {
        // no stats (the connection closed meanwhile): report without the type
      }
    }
    this._hooks.report({ outcome, setup_ms: setupMs, candidate_type: candidateType });
  }

  /** @param {RTCDataChannel} channel */
  _attachChannel(channel) {
    this.channel = channel;
    channel.onmessage = ({ data }) => {
      this._hooks.emit("data", { peer: this, peerId: this.peerId, data });
    };
    channel.onopen = () => this._hooks.emit("channel", { peer: this, peerId: this.peerId, state: "open" });
    channel.onclose = () =>
      this._hooks.emit("channel", { peer: this, peerId: this.peerId, state: "closed" });
  }

  /** @param {unknown} error */
  _fail(error) {
    if (this._closed) return;
    const message = error instanceof Error ? error.message : String(error);
    this._hooks.emit("negotiation-error", { peer: this, peerId: this.peerId, message });
  }
}

/**
 * The local candidate type of the pair ICE selected, from getStats().
 * @param {RTCStatsReport} report
 * @returns {string | null}
 */
function selectedCandidateType(report) {
  /** @type {any} */
  let pair = null;
  report.forEach((/** @type {any} */ stat) => {
    if (stat.type === "transport" && stat.selectedCandidatePairId) {
      pair = report.get(stat.selectedCandidatePairId) ?? pair;
    }
  });
  if (!pair) {
    report.forEach((/** @type {any} */ stat) => {
      if (stat.type === "candidate-pair" && stat.nominated && stat.state === "succeeded") pair = stat;
    });
  }
  const local = pair ? report.get(pair.localCandidateId) : null;
  const type = local?.candidateType;
  return ["host", "srflx", "prflx", "relay"].includes(type) ? type : null;
}
