// WebRTC for the rooms: the ICE servers, and `Peer`, our side of the link with one remote peer
// (signaling/PROTOCOL.md). Modelled on lib-jitsi-meet's TraceablePeerConnection: a Peer owns
// its RTCPeerConnection — negotiation, candidates, the `assist` data channel, ICE restarts and,
// when a restart cannot help, a fresh connection — and the page only calls its methods and
// listens to its events.
import { config, Emitter } from "./common.js";
import { withOpusFecDtx } from "./media.js";

// TURN credentials expire (TURN_TTL_SECONDS, 1 h by default): refresh them well before.
const ICE_REFRESH_MS = 10 * 60 * 1000;
// Brief drops (Wi-Fi to 4G) often heal by themselves: wait this long before an ICE restart.
const ICE_GRACE_MS = 2000;
// Fresh connections tried in a row after answers this side could not take.
const MAX_ATTEMPTS = 3;
// A photo-chunk with a full chunk is about 22 k characters (PROTOCOL.md); refuse anything bigger.
const MAX_MESSAGE_CHARS = 32768;

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

// Gives `use` the ICE servers: at once those the page came with (config.ice, no round trip),
// else once fetched; then fresh ones every 10 minutes.
export function watchIceServers(use) {
  const given = config.ice?.iceServers;
  if (Array.isArray(given)) use(given);
  else fetchIceServers().then(use);
  setInterval(async () => {
    use(await fetchIceServers());
  }, ICE_REFRESH_MS);
}

// The offerer's first connection, made before anyone is there to offer it to: its local offer is
// set and its candidates gathered while the person reads the consent text (Peer.warmUp). The
// first Peer that opens a connection with the same ICE servers takes it; else it is dropped.
let warm = null; // {pc, conn, servers}

function sameServers(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

// Runs async tasks one after another: offers, answers and candidates must be applied in the
// order they arrived, and each awaits several WebRTC steps.
function serial() {
  let tail = Promise.resolve();
  return (task) => {
    tail = tail.then(task).catch((err) => console.warn("visio-permanence:", err));
    return tail;
  };
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

function parseMessage(data) {
  if (typeof data !== "string" || data.length > MAX_MESSAGE_CHARS) return null;
  try {
    const msg = JSON.parse(data);
    return msg && typeof msg === "object" && typeof msg.t === "string" ? msg : null;
  } catch {
    return null;
  }
}

// A new RTCPeerConnection and its bookkeeping. The offerer's has fixed transceivers, so that
// sharing, pausing and the microphone never renegotiate, and the `assist` data channel.
function newConnection(iceServers, offerer, tuning) {
  const pc = new RTCPeerConnection({ iceServers });
  const conn = {
    pc, channel: null, pending: [], video: null, audio: null, timer: 0, restarts: 0, restartWanted: false, offered: false,
  };
  if (offerer) {
    conn.video = pc.addTransceiver("video", { direction: "sendonly" });
    conn.audio = pc.addTransceiver("audio", { direction: "sendrecv" });
    tuning?.transceivers(conn.video, conn.audio);
    conn.channel = pc.createDataChannel("assist", { ordered: true });
  }
  return conn;
}

// Our side of the link with one remote peer. The beneficiary's side is the offerer (one Peer
// per volunteer or observer): it offers, restarts ICE on failure or after its socket
// reconnected, and builds a fresh connection when a restart cannot help. The volunteer's side
// answers whatever the beneficiary offers.
//
// Options: `signaling` (the /assist connection), `iceServers()` (the current ICE servers),
// `offerer`, `video`/`audio` (tracks to send from the start), `sendAudio` (false: answer
// receive-only, for an observer), `tuning` (offerer, optional: `transceivers(video, audio)`
// when they are created, before the offer; `senders(videoSender, audioSender)` whenever the
// video changes and once a connection is negotiated: media.js settings, no renegotiation).
//
// Events: "track" (a remote MediaStreamTrack), "message" (a well-formed {t, ...} from the data
// channel), "open" (the data channel opened: say again what the other side must know), "offer" (answerer: a remote offer is being applied, the remote peer is there),
// "renewed" (a fresh connection replaced the previous one: its media and half-received data are
// gone), "change" (the connection's state changed or a negotiation finished: update the page),
// "connection" / "closing" (an RTCPeerConnection was made / is about to be closed: usage.js).
export class Peer extends Emitter {
  constructor(id, { signaling, iceServers, offerer = false, video = null, audio = null, sendAudio = true, tuning = null }) {
    super();
    this.id = id; // the remote peer_id; the answerer takes it from each offer
    this.offerer = offerer;
    this._signaling = signaling;
    this._iceServers = iceServers;
    this._video = video;
    this._audio = audio;
    this._sendAudio = sendAudio;
    this._tuning = tuning;
    this._conn = null; // {pc, channel, pending, video, audio, timer, restarts, restartWanted}
    this._attempt = 0;
    this._closed = false;
    this._run = serial();
  }

  // --- For the page ---------------------------------------------------------------------------

  // Offerer: a new connection to the remote peer.
  start() {
    this._renew();
  }

  // Offerer: restart ICE on a new offer. `afterReconnect`: our socket reconnected, so our peer
  // id changed and an answer in flight will never arrive.
  restart(afterReconnect = false) {
    const conn = this._conn;
    this._run(() => this._restart(conn, afterReconnect));
  }

  // Offerer: the remote peer's answer.
  acceptAnswer(msg) {
    this._run(() => this._acceptAnswer(msg));
  }

  // Answerer: the remote peer's offer.
  acceptOffer(msg) {
    this._run(() => this._acceptOffer(msg));
  }

  addCandidate(msg) {
    // The offerer's candidates belong to the connection current when they arrive (only this
    // side renews it); the answerer's to the one current when applied (an offer queued just
    // before may renew it).
    const arrived = this._conn;
    this._run(async () => {
      const conn = this.offerer ? arrived : this._conn;
      if (this._closed || !conn || (!this.offerer && msg.from !== this.id)) return;
      // A candidate can arrive before the description it belongs to: keep it until that is set.
      if (conn.pc.remoteDescription) addCandidate(conn.pc, msg);
      else conn.pending.push(msg);
    });
  }

  // Offerer: the video to send (null: nothing leaves the device), without renegotiating.
  setVideoTrack(track) {
    this._video = track;
    const conn = this._conn;
    conn?.video?.sender.replaceTrack(track).then(() => this._tune(conn)).catch((err) => console.debug(err));
  }

  // Offerer: apply the tuning's sender settings again (what it returns has changed).
  retune() {
    if (this._conn) this._tune(this._conn);
  }

  // The microphone to send, without renegotiating; the promise says whether it was put on.
  setAudioTrack(track) {
    this._audio = track;
    const audio = this._conn && this._audioTransceiver(this._conn);
    return audio && track ? audio.sender.replaceTrack(track) : Promise.resolve();
  }

  // Sends a message on the data channel; false when it is not open.
  send(message) {
    const channel = this.channel;
    if (!channel) return false;
    channel.send(JSON.stringify(message));
    return true;
  }

  // For the page's last word; a closed Peer ignores everything still queued.
  close() {
    this._closed = true;
    this._dispose();
  }

  // The open data channel, or null.
  get channel() {
    const channel = this._conn?.channel;
    return channel?.readyState === "open" ? channel : null;
  }

  get connectionState() {
    return this._conn?.pc.connectionState;
  }

  // Whether a connection exists (the answerer has none before the first offer).
  get active() {
    return this._conn !== null;
  }

  get closed() {
    return !this._conn || this._conn.pc.signalingState === "closed";
  }

  // --- Connections ----------------------------------------------------------------------------

  // Offerer, before the first Peer exists: make the warm connection (see `warm`).
  static warmUp(iceServers, tuning = null) {
    if (warm || typeof RTCPeerConnection === "undefined") return;
    const servers = iceServers();
    const conn = newConnection(servers, true, tuning);
    warm = { conn, servers };
    conn.pc.createOffer()
      .then((offer) => conn.pc.setLocalDescription(withOpusFecDtx(offer)))
      .then(() => {
        conn.offered = true;
      })
      .catch((err) => {
        console.debug("no warm connection", err);
        if (warm?.conn === conn) warm = null;
        conn.pc.close();
      });
  }

  _open() {
    const previous = this._conn;
    this._dispose();
    const servers = this._iceServers();
    let conn = null;
    if (this.offerer && warm?.conn.offered && !previous && sameServers(warm.servers, servers)) {
      conn = warm.conn; // its candidates so far are in its local description
    } else {
      conn = newConnection(servers, this.offerer, this._tuning);
      if (warm && this.offerer) warm.conn.pc.close();
    }
    if (this.offerer) warm = null;
    const { pc } = conn;
    this._conn = conn;
    this.fire("connection", pc); // issue 14: usage.js counts the bytes of every connection
    // Addressed to `this.id` as it is when each is found: the answerer keeps a connection
    // across the offerer's reconnection, under its new peer id.
    pc.onicecandidate = ({ candidate }) => this._signaling.emit("candidate", candidatePayload(this.id, candidate));
    pc.ontrack = ({ track }) => this.fire("track", track);
    pc.oniceconnectionstatechange = () => this._onIceState(conn);
    pc.onconnectionstatechange = () => this._onConnectionState(conn);
    if (this.offerer) {
      if (this._video) conn.video.sender.replaceTrack(this._video).catch(console.warn);
      if (this._audio) conn.audio.sender.replaceTrack(this._audio).catch(console.warn);
      this._useChannel(conn, conn.channel);
    } else {
      pc.ondatachannel = ({ channel }) => {
        if (channel.label === "assist") this._useChannel(conn, channel);
      };
    }
    if (previous) this.fire("renewed");
    return conn;
  }

  _dispose() {
    const conn = this._conn;
    if (!conn) return;
    this._conn = null;
    clearTimeout(conn.timer);
    this.fire("closing", conn.pc); // its stats can still be read (usage.js)
    conn.channel?.close();
    conn.pc.close();
  }

  _useChannel(conn, channel) {
    conn.channel = channel;
    const opened = () => {
      if (this._conn === conn) this.fire("open");
    };
    // A channel the remote side created may already be open when it is announced.
    if (channel.readyState === "open") queueMicrotask(opened);
    else channel.onopen = opened;
    channel.onmessage = (event) => {
      const msg = parseMessage(event.data);
      if (msg) this.fire("message", msg);
    };
  }

  _audioTransceiver(conn) {
    return conn.audio ?? conn.pc.getTransceivers().find((tr) => tr.receiver.track.kind === "audio");
  }

  _tune(conn) {
    if (!this._tuning || this._conn !== conn || !conn.video) return;
    this._tuning.senders(conn.video.sender, conn.audio.sender);
  }

  _flush(conn) {
    for (const candidate of conn.pending.splice(0)) addCandidate(conn.pc, candidate);
  }

  // Offerer: a fresh connection, offered from scratch.
  _renew() {
    if (this._closed) return;
    const conn = this._open();
    this._run(() => this._sendOffer(conn, false));
  }

  async _sendOffer(conn, restart) {
    const { pc } = conn;
    if (this._conn !== conn || pc.signalingState === "closed") return;
    if (restart) pc.restartIce();
    // A warm connection's first offer is already set (and its candidates gathered).
    const warmed = conn.offered && !restart;
    if (!warmed) await pc.setLocalDescription(withOpusFecDtx(await pc.createOffer()));
    conn.offered = false;
    this._signaling.emit("offer", { to: this.id, sdp: pc.localDescription.sdp, restart });
    // Its gathering may have ended before anyone listened: say so, as trickling would have.
    if (warmed && pc.iceGatheringState === "complete") this._signaling.emit("candidate", candidatePayload(this.id, null));
  }

  async _restart(conn, afterReconnect) {
    if (this._conn !== conn || !conn || !this._signaling.connected) return;
    if (conn.pc.signalingState === "have-local-offer") {
      // An answer is on its way: restart once it has arrived. After a reconnection it never
      // will (it was addressed to our old peer id), so take the offer back instead.
      if (!afterReconnect) {
        conn.restartWanted = true;
        return;
      }
      await conn.pc.setLocalDescription({ type: "rollback" });
    }
    conn.restarts += 1;
    try {
      conn.pc.setConfiguration({ ...conn.pc.getConfiguration(), iceServers: this._iceServers() });
    } catch (err) {
      console.debug("ICE servers unchanged", err);
    }
    await this._sendOffer(conn, true);
  }

  async _acceptAnswer(msg) {
    const conn = this._conn;
    if (this._closed || !conn || conn.pc.signalingState !== "have-local-offer" || typeof msg.sdp !== "string") return;
    try {
      await conn.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
    } catch (err) {
      // The other side answered with something this connection cannot take (for instance a
      // fresh connection after its own reload): start over with a new one.
      console.warn("answer refused, new connection", err);
      if (this._attempt < MAX_ATTEMPTS) {
        this._attempt += 1;
        this._renew();
      }
      return;
    }
    this._flush(conn);
    this._tune(conn); // encodings exist for sure once negotiated
    if (conn.restartWanted) {
      conn.restartWanted = false;
      await this._restart(conn, false);
    }
  }

  async _acceptOffer(msg) {
    if (this._closed || typeof msg.sdp !== "string") return;
    // An ICE restart keeps the connection (and its secure transport); anything else is a new
    // connection: the beneficiary's page was reloaded or our socket reconnected.
    let conn = this._conn;
    if (!msg.restart || !conn || conn.pc.signalingState === "closed") conn = this._open();
    this.id = msg.from;
    this.fire("offer");
    const { pc } = conn;
    await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    this._flush(conn);
    const audio = this._audioTransceiver(conn);
    if (audio) {
      // Always answer sendrecv: the microphone can then be switched on later with
      // replaceTrack alone, since only the beneficiary may renegotiate.
      audio.direction = this._sendAudio ? "sendrecv" : "recvonly";
      if (this._audio && this._sendAudio) await audio.sender.replaceTrack(this._audio);
    }
    await pc.setLocalDescription(withOpusFecDtx(await pc.createAnswer()));
    if (this._conn === conn) this._signaling.emit("answer", { to: this.id, sdp: pc.localDescription.sdp });
    this.fire("change");
  }

  // --- Recovery (offerer) ---------------------------------------------------------------------

  _onIceState(conn) {
    if (this.offerer) {
      clearTimeout(conn.timer);
      const state = conn.pc.iceConnectionState;
      if (state === "failed") {
        this._run(() => this._restart(conn, false));
      } else if (state === "disconnected") {
        conn.timer = setTimeout(() => {
          if (["disconnected", "failed"].includes(conn.pc.iceConnectionState)) this._run(() => this._restart(conn, false));
        }, ICE_GRACE_MS);
      }
    }
    this.fire("change");
  }

  // A restart that still fails (the other side had to start from a new connection, so the
  // secure transport cannot resume): build a new connection instead of restarting forever.
  _onConnectionState(conn) {
    if (this.offerer) {
      const state = conn.pc.connectionState;
      if (state === "connected") {
        conn.restarts = 0;
        this._attempt = 0;
      } else if (state === "failed" && conn.restarts > 0 && this._conn === conn) {
        this._attempt += 1;
        this._renew();
      }
    }
    this.fire("change");
  }
}
