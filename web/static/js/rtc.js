// WebRTC plumbing both ends share: ICE servers, candidates, the `assist` data channel and the
// order of signalling steps (see signaling/PROTOCOL.md).
import { config } from "./common.js";

// TURN credentials expire (TURN_TTL_SECONDS, 1 h by default): refresh them well before.
const ICE_REFRESH_MS = 10 * 60 * 1000;

// ICE servers come from our own API (STUN/TURN of the association, never a public default).
async function fetchIceServers() {
  try {
    const response = await fetch(config.ice_servers_url, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    return Array.isArray(data.iceServers) ? data.iceServers : [];
  } catch (err) {
    console.warn("ICE servers unavailable, trying direct connection only", err);
    return [];
  }
}

// Gives `use` the ICE servers once fetched, then again every 10 minutes.
export async function watchIceServers(use) {
  use(await fetchIceServers());
  setInterval(async () => {
    use(await fetchIceServers());
  }, ICE_REFRESH_MS);
}

function candidatePayload(to, candidate) {
  return {
    to,
    candidate: candidate?.candidate ?? "",
    sdpMid: candidate?.sdpMid ?? null,
    sdpMLineIndex: candidate?.sdpMLineIndex ?? null,
  };
}

function addCandidate(pc, msg) {
  if (typeof msg.candidate !== "string") return;
  pc.addIceCandidate({ candidate: msg.candidate, sdpMid: msg.sdpMid ?? null, sdpMLineIndex: msg.sdpMLineIndex ?? null })
    .catch((err) => console.debug("ICE candidate ignored", err));
}

// A connection with one remote peer. Our candidates are addressed to `peer.id` as it is when
// each is found: the volunteer's side re-addresses a connection kept across a reconnection.
export function createPeer(id, iceServers, signaling) {
  const pc = new RTCPeerConnection({ iceServers });
  const peer = { id, pc, channel: null, pending: [] };
  pc.onicecandidate = ({ candidate }) => signaling.emit("candidate", candidatePayload(peer.id, candidate));
  return peer;
}

export function closeConnection(peer) {
  peer.channel?.close();
  peer.pc.close();
}

// A candidate can arrive before the description it belongs to: keep it until that is set.
export function receiveCandidate(peer, msg) {
  if (peer.pc.remoteDescription) addCandidate(peer.pc, msg);
  else peer.pending.push(msg);
}

// Call once the remote description is set.
export function flushCandidates(peer) {
  for (const candidate of peer.pending.splice(0)) addCandidate(peer.pc, candidate);
}

function parseMessage(data) {
  if (typeof data !== "string" || data.length > 32768) return null;
  try {
    const msg = JSON.parse(data);
    return msg && typeof msg === "object" && typeof msg.t === "string" ? msg : null;
  } catch {
    return null;
  }
}

// Makes `channel` the peer's data channel; each well-formed message ({t: ..., ...}) goes to
// `handle`, anything else is dropped.
export function useChannel(peer, channel, handle) {
  peer.channel = channel;
  channel.onmessage = (event) => {
    const msg = parseMessage(event.data);
    if (msg) handle(msg);
  };
}

// Runs async handlers one after another: offers, answers and candidates must be applied in
// the order they arrived, and each handler awaits several WebRTC steps.
export function serial() {
  let tail = Promise.resolve();
  return (task) => {
    tail = tail.then(task).catch((err) => console.warn("visio-permanence:", err));
    return tail;
  };
}
