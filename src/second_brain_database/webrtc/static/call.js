// @ts-check
/**
 * The demo call page: sign in, join a room, video grid, chat over the data
 * channel, mute/camera toggles announced with `media-state`. Everything it
 * does goes through the public SDK, so it doubles as the SDK's example.
 */

import { CallClient, SignalingClient, login, tokenExpiry } from "./sbd-signaling.js";

/** @typedef {import("./sbd-peer.js").RemotePeer} RemotePeer */

const TOKEN_KEY = "sbd.token";
const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const input = (/** @type {string} */ id) => /** @type {HTMLInputElement} */ ($(id));

/** @type {SignalingClient | null} */
let client = null;
/** @type {MediaStream | null} */
let localStream = null;
/** @type {CallClient | null} this page's user socket, once online */
let calls = null;
/** @type {string | null} the call ringing this page, shown in #incoming */
let ringingHere = null;
let myName = "me";

// --- lobby -------------------------------------------------------------------

function setupLobby() {
  const params = new URLSearchParams(location.search);
  if (params.get("room")) input("room").value = /** @type {string} */ (params.get("room"));
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved && (tokenExpiry(saved) ?? 0) > Date.now()) {
    input("token").value = saved;
    selectTab("token");
  }
  $("tab-login").addEventListener("click", () => selectTab("login"));
  $("tab-token").addEventListener("click", () => selectTab("token"));
  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    void join(input("room").value.trim());
  });
  $("online-btn").addEventListener("click", () => void goOnline().catch(callsError));
  $("call-btn").addEventListener("click", () => void callUser().catch(callsError));
  $("accept-call").addEventListener("click", () => void answer(true).catch(callsError));
  $("decline-call").addEventListener("click", () => void answer(false).catch(callsError));
}

/** @param {"login" | "token"} tab */
function selectTab(tab) {
  $("tab-login").setAttribute("aria-selected", String(tab === "login"));
  $("tab-token").setAttribute("aria-selected", String(tab === "token"));
  $("login-fields").hidden = tab !== "login";
  $("token-fields").hidden = tab !== "token";
}

/** @param {string} message */
function showJoinError(message) {
  const box = $("join-error");
  box.textContent = message;
  box.hidden = !message;
}

/**
 * @param {string} room
 * @param {string} [ticket] an accepted call's single-use ticket for ``room``
 */
async function join(room, ticket) {
  const button = /** @type {HTMLButtonElement} */ ($("join-btn"));
  button.disabled = true;
  showJoinError("");
  try {
    const token = await obtainToken();
    sessionStorage.setItem(TOKEN_KEY, token);
    myName = nameFromToken(token);
    localStream = input("with-media").checked ? await openMedia() : null;
    // A person is waiting on this page: retry at least every 4 s, not 10.
    const reconnect = { maxDelayMs: 4000 };
    client = new SignalingClient({ token, room, ticket, localStream, reconnect });
    Object.assign(window, { sbd: { client, localStream } }); // for tests and the devtools console
    wireClient(client);
    enterCall(room);
    // Say what we send before joining: the SDK announces it on every new session.
    client.setMediaState({
      audio: Boolean(localStream?.getAudioTracks().length),
      video: Boolean(localStream?.getVideoTracks().length),
    });
    await client.join();
  } catch (error) {
    leaveCall();
    showJoinError(error instanceof Error ? error.message : String(error));
  } finally {
    button.disabled = false;
  }
}

/** @returns {Promise<string>} */
async function obtainToken() {
  if (!$("token-fields").hidden) {
    const token = input("token").value.trim();
    if (!token) throw new Error("Paste an access token (sbd token USER) first.");
    return token;
  }
  const username = input("username").value.trim();
  if (!username) throw new Error("Enter your username and password.");
  return (await login("", username, input("password").value)).token;
}

/** Camera and microphone; a call without them still works (receive only). */
async function openMedia() {
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: { ideal: 640 }, height: { ideal: 360 } },
    });
  } catch (error) {
    notice(`No camera/microphone (${error instanceof Error ? error.name : error}); joining to watch.`);
    return null;
  }
}

/** @param {string} token */
function nameFromToken(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
    return String(claims.name ?? claims.sub ?? "me");
  } catch {
    return "me";
  }
}

// --- ringing a user (CallClient) ----------------------------------------------

/** @param {string} text */
function callsStatus(text) {
  $("calls-status").textContent = text;
}

/** @param {unknown} error */
function callsError(error) {
  callsStatus(error instanceof Error ? error.message : String(error));
}

/** Open this page's user socket: from now on calls to its user ring it. */
async function goOnline() {
  if (calls) return calls;
  const token = await obtainToken();
  sessionStorage.setItem(TOKEN_KEY, token);
  const client = new CallClient({ token });
  calls = client;
  Object.assign(window, { sbdCalls: client }); // for tests and the devtools console
  client.on("incoming-call", ({ callId, name }) => {
    ringingHere = callId;
    $("incoming-from").textContent = name;
    $("incoming").hidden = false;
  });
  client.on("call-state", ({ callId, state }) => {
    if (callId === ringingHere && state !== "ringing") {
      ringingHere = null;
      $("incoming").hidden = true; // answered here or elsewhere, cancelled, missed
      if (state !== "accepted") callsStatus(`The call was ${state.replace("-", " ")}.`);
    }
  });
  client.on("error", ({ error }) => callsStatus(error.message));
  const ready = await client.connect();
  callsStatus(`Online as ${ready.userId}: calls to you ring here.`);
  return client;
}

/** Ring the user in #callee; join the call's room once they accept. */
async function callUser() {
  const callee = input("callee").value.trim();
  if (!callee) throw new Error("Enter the user id to call.");
  const client = await goOnline();
  const room = `call-${crypto.randomUUID().slice(0, 8)}`;
  const ringing = await client.call(callee, room, { video: true });
  callsStatus(`Ringing ${callee} (${ringing.devices} device(s))...`);
  const off = client.on("call-state", ({ callId, state }) => {
    if (callId !== ringing.callId || state === "ringing") return;
    off();
    if (state === "accepted") void join(room);
    else callsStatus(`${callee}: ${state}.`);
  });
}

/** @param {boolean} accept */
async function answer(accept) {
  const callId = ringingHere;
  if (!calls || !callId) return;
  $("incoming").hidden = true;
  ringingHere = null;
  if (!accept) {
    await calls.decline(callId);
    callsStatus("Declined.");
    return;
  }
  const accepted = await calls.accept(callId);
  await join(/** @type {string} */ (accepted.roomId), accepted.ticket);
}

// --- call --------------------------------------------------------------------

/** @param {string} room */
function enterCall(room) {
  $("lobby").hidden = true;
  $("call").hidden = false;
  $("room-name").textContent = room;
  history.replaceState(null, "", `?room=${encodeURIComponent(room)}`);
  const tile = addTile("local", `${myName} (you)`);
  tile.classList.add("local");
  const video = /** @type {HTMLVideoElement} */ (tile.querySelector("video"));
  video.muted = true; // never play one's own microphone back
  video.srcObject = localStream;
  tile.classList.toggle("video-off", !localStream?.getVideoTracks().length);
  // Without a microphone or camera there is nothing to toggle.
  const hasAudio = Boolean(localStream?.getAudioTracks().length);
  const hasVideo = Boolean(localStream?.getVideoTracks().length);
  setPressed("mic-btn", hasAudio);
  setPressed("cam-btn", hasVideo);
  /** @type {HTMLButtonElement} */ ($("mic-btn")).disabled = !hasAudio;
  /** @type {HTMLButtonElement} */ ($("cam-btn")).disabled = !hasVideo;
}

function leaveCall() {
  void client?.leave();
  client = null;
  for (const track of localStream?.getTracks() ?? []) track.stop();
  localStream = null;
  $("grid").replaceChildren();
  $("chat-log").replaceChildren();
  $("call").hidden = true;
  $("lobby").hidden = false;
}

/** @param {SignalingClient} call */
function wireClient(call) {
  call.on("status", ({ status }) => {
    const pill = $("status");
    pill.dataset.status = status;
    pill.textContent = status;
  });
  let sessions = 0;
  call.on("open", ({ resumed }) => {
    sessions += 1;
    if (sessions > 1) notice(resumed ? "Reconnected." : "Reconnected (as a new session).");
  });
  call.on("peer-joined", ({ peer }) => {
    addTile(peer.peerId, peer.name);
    applyMedia(peer.peerId, peer.media);
    systemLine(`${peer.name} joined`);
  });
  call.on("peer-left", ({ peerId }) => {
    const tile = tileOf(peerId);
    if (tile) systemLine(`${tile.querySelector(".name")?.textContent} left`);
    tile?.remove();
  });
  call.on("track", ({ peerId, stream }) => {
    const video = tileOf(peerId)?.querySelector("video");
    if (video && video.srcObject !== stream) video.srcObject = stream;
  });
  call.on("connection-state", ({ peerId, state }) => {
    const tile = tileOf(peerId);
    if (!tile) return;
    tile.dataset.state = state;
    /** @type {HTMLElement} */ (tile.querySelector(".conn-text")).textContent = state;
  });
  call.on("media-state", ({ peerId, media }) => applyMedia(peerId, media));
  call.on("notice", ({ message }) => notice(message));
  call.on("data", ({ peer, data }) => {
    try {
      const message = JSON.parse(String(data));
      if (message.kind === "chat") chatLine(peer.name, String(message.text), false);
    } catch {
      // not a chat message of this page: ignore
    }
  });
  call.on("error", ({ error }) => {
    notice(error.message);
    if (error.fatal && error.code !== "left") {
      leaveCall();
      showJoinError(error.message);
    }
  });
}

// --- tiles ---------------------------------------------------------------------

/**
 * @param {string} peerId
 * @param {string} name
 * @returns {HTMLElement}
 */
function addTile(peerId, name) {
  const existing = tileOf(peerId);
  if (existing) return existing;
  const template = /** @type {HTMLTemplateElement} */ ($("tile-template"));
  const tile = /** @type {HTMLElement} */ (
    /** @type {DocumentFragment} */ (template.content.cloneNode(true)).firstElementChild
  );
  tile.dataset.peerId = peerId;
  /** @type {HTMLElement} */ (tile.querySelector(".name")).textContent = name;
  /** @type {HTMLElement} */ (tile.querySelector(".avatar")).textContent = initials(name);
  $("grid").append(tile);
  return tile;
}

/** @param {string} peerId */
function tileOf(peerId) {
  return /** @type {HTMLElement | null} */ (
    $("grid").querySelector(`.tile[data-peer-id="${CSS.escape(peerId)}"]`)
  );
}

/**
 * @param {string} peerId
 * @param {Record<string, unknown>} media
 */
function applyMedia(peerId, media) {
  const tile = tileOf(peerId);
  if (!tile) return;
  /** @type {HTMLElement} */ (tile.querySelector(".muted-mic")).hidden = media.audio !== false;
  tile.classList.toggle("video-off", media.video === false);
}

/** @param {string} name */
function initials(name) {
  return name.split(/[\s._-]+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("");
}

// --- controls ----------------------------------------------------------------

/**
 * @param {string} id
 * @param {boolean} on
 */
function setPressed(id, on) {
  $(id).setAttribute("aria-pressed", String(on));
}

/** @param {"audio" | "video"} kind */
function toggle(kind) {
  const tracks = kind === "audio" ? localStream?.getAudioTracks() : localStream?.getVideoTracks();
  if (!tracks?.length || !client) return;
  // Disabling the track sends silence/black without renegotiating; the
  // others learn why from media-state.
  const on = !tracks[0].enabled;
  for (const track of tracks) track.enabled = on;
  setPressed(kind === "audio" ? "mic-btn" : "cam-btn", on);
  if (kind === "video") tileOf("local")?.classList.toggle("video-off", !on);
  client.setMediaState({ [kind]: on });
}

function setupControls() {
  $("mic-btn").addEventListener("click", () => toggle("audio"));
  $("cam-btn").addEventListener("click", () => toggle("video"));
  $("leave-btn").addEventListener("click", leaveCall);
  $("copy-link").addEventListener("click", async () => {
    await navigator.clipboard?.writeText(location.href).catch(() => undefined);
    notice("Link copied: share it to invite someone.");
  });
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input("chat-input").value.trim();
    if (!text || !client) return;
    const sent = client.sendData(JSON.stringify({ kind: "chat", text }));
    chatLine("you", text, true);
    if (sent < client.peers.size) systemLine(`not delivered to ${client.peers.size - sent} peer(s) yet`);
    input("chat-input").value = "";
  });
}

// --- chat log ------------------------------------------------------------------

/**
 * @param {string} who
 * @param {string} text
 * @param {boolean} mine
 */
function chatLine(who, text, mine) {
  const item = document.createElement("li");
  item.className = mine ? "mine" : "";
  const whoEl = document.createElement("span");
  whoEl.className = "who";
  whoEl.textContent = who;
  const textEl = document.createElement("span");
  textEl.className = "text";
  textEl.textContent = text; // textContent: chat is never parsed as HTML
  item.append(whoEl, textEl);
  appendLog(item);
}

/** @param {string} text */
function systemLine(text) {
  const item = document.createElement("li");
  item.className = "system";
  const textEl = document.createElement("span");
  textEl.className = "text";
  textEl.textContent = text;
  item.append(textEl);
  appendLog(item);
}

/** @param {HTMLElement} item */
function appendLog(item) {
  const log = $("chat-log");
  log.append(item);
  log.scrollTop = log.scrollHeight;
}

/** @param {string} text */
function notice(text) {
  $("notice").textContent = text;
}

setupLobby();
setupControls();
