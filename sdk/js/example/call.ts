// A small call in TypeScript against the published package: tsc --noEmit
// over this file (tests/test_sdk_package.py) proves the declarations give an
// application what it needs, names and types alike.
import {
  CLOSE_CODES,
  type ConnectionStatus,
  type RemotePeer,
  SignalingClient,
  SignalingError,
  type SignalingEventMap,
  type ServerFrame,
  type ServerRtcConfiguration,
  closeMeaning,
  fetchRtcConfig,
  login,
  tokenExpiry,
} from "@second-brain-database/signaling";

const videos = new Map<string, HTMLVideoElement>();

function show(peer: RemotePeer, stream: MediaStream): void {
  const video = videos.get(peer.peerId) ?? document.createElement("video");
  video.srcObject = stream;
  videos.set(peer.peerId, video);
}

export async function startCall(room: string): Promise<SignalingClient> {
  const { token, expiresIn } = await login("", "alice", "a-long-password");
  const expires: number | null = tokenExpiry(token);
  console.log(`token valid ${expiresIn} s, until ${expires ?? "?"}`);
  const rtcConfig: ServerRtcConfiguration = await fetchRtcConfig("", token);
  console.log(`TURN credentials for ${rtcConfig.expiresIn ?? "ever"} s`);
  const camera = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  const call = new SignalingClient({
    token,
    room,
    localStream: camera,
    reconnect: { maxDelayMs: 4000 },
    tokenProvider: async () => (await login("", "alice", "a-long-password")).token,
  });

  call.on("track", ({ peer, stream }) => show(peer, stream));
  call.on("peer-left", ({ peerId }) => videos.get(peerId)?.remove());
  call.on("data", ({ peer, data }) => console.log(`${peer.name}: ${String(data)}`));
  call.on("connection-state", ({ peerId, state }) => {
    const s: RTCPeerConnectionState = state;
    console.log(peerId, s);
  });
  call.on("status", ({ status }) => {
    const now: ConnectionStatus = status;
    console.log(now);
  });
  const stop = call.on("error", ({ error }) => {
    if (error.fatal) console.error(error.code, error.closeCode, error.reason, error.message);
  });
  call.on("closed", (detail: SignalingEventMap["closed"]) => {
    if (detail.error instanceof SignalingError) stop();
  });

  const opened = await call.join();
  for (const info of opened.participants) console.log(info.peerId, info.userId, info.name);
  call.setMediaState({ audio: true, video: true });
  call.sendApp({ kind: "hello" });
  const reached: number = call.sendData("hello, everyone");
  console.log(reached, call.peers.get(opened.peerId)?.stats.iceRestarts);
  call.restartIce();
  await call.setLocalStream(null);
  return call;
}

export function describeClose(code: number): string {
  const meaning = CLOSE_CODES[code] ?? closeMeaning(code);
  return `${meaning.code}${meaning.fatal ? " (fatal)" : ""}: ${meaning.message}`;
}

/** The frame types describe what goes over the WebSocket. */
export function frameSummary(frame: ServerFrame): string {
  switch (frame.type) {
    case "welcome":
      return `joined ${frame.payload.room_id} as ${frame.payload.peer_id}`;
    case "offer":
    case "answer":
      return `${frame.type} from ${frame.from}: ${frame.payload.sdp.length} bytes of SDP`;
    case "error":
      return `error ${frame.payload.code}`;
    default:
      return frame.type;
  }
}
