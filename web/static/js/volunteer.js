// The volunteer's room: answers the beneficiary's offers, shows the shared screen, points,
// talks, chats and receives photos. An invited observer only watches.
import { $, on, show, el, t, config, setStatus, announce, frameRect, toLayer, clamp01 } from "./common.js";
import { connectSignaling } from "./signaling.js";
import {
  watchIceServers, createPeer, closeConnection, receiveCandidate, flushCandidates, useChannel, serial,
} from "./rtc.js";
import { isChat, showChat, setupChatForm } from "./chat.js";
import { createMic } from "./mic.js";

const CHUNK_BYTES = 16 * 1024;
const MAX_PHOTO_BYTES = 5 * 1024 * 1024;
const MAX_PHOTOS_KEPT = 12;
const PHOTO_TYPES = ["image/jpeg", "image/png", "image/webp"];
const observer = config.role === "observer";

const ui = {
  video: $("remote-video"),
  audio: $("remote-audio"),
  wrap: $("video-wrap"),
  layer: $("volunteer-layer"),
  noVideo: $("no-video"),
  paused: $("paused-overlay"),
  pointer: $("pointer-mode"),
  pointerHelp: $("pointer-help"),
  fit: $("fit-toggle"),
  mic: $("mic-toggle"),
  sound: $("sound-button"),
  chatForm: $("chat-form"),
  chatLog: $("chat-log"),
  chatInput: $("chat-input"),
  photos: $("photos"),
  photosEmpty: $("photos-empty"),
  dialog: $("photo-dialog"),
  photoFull: $("photo-full"),
  invite: $("invite"),
  endForm: $("end-form"),
  ended: $("ended-panel"),
  notice: $("notice"),
};

const run = serial();
let signaling = null;
let iceServers = [];
let bene = null; // {id, pc, channel, pending}: the connection with the beneficiary
let benePresent = false;
let beneLost = false;
let beneName = "";
let remoteState = null;
let ended = false;
let pointing = false;
let drag = null;
let lastMove = 0;
let lastKey = "";
let photoCount = 0;
const photos = new Map();

function notify(text) {
  if (ui.notice) ui.notice.textContent = text;
}

const mic = createMic({
  button: ui.mic,
  notify,
  disabled: observer,
  async attach(track) {
    const audio = bene && audioTransceiver(bene.pc);
    if (audio && track) await audio.sender.replaceTrack(track);
  },
});

// --- Signalling -----------------------------------------------------------------------------

async function connect() {
  await watchIceServers((servers) => {
    iceServers = servers;
  });
  signaling = connectSignaling({ session_id: config.session_id });
  signaling
    .on("welcome", onWelcome)
    .on("peer-joined", (msg) => {
      if (msg.role !== "beneficiary") return;
      benePresent = true;
      beneLost = false;
      if (typeof msg.name === "string") beneName = msg.name;
      refresh();
    })
    .on("peer-left", onPeerLeft)
    .on("offer", (msg) => run(() => onOffer(msg)))
    .on("candidate", (msg) => run(async () => onCandidate(msg)))
    .on("state", onState)
    .on("ended", finish)
    .on("disconnect", refresh)
    .on("connect_error", ({ code, message, fatal }) => {
      if (fatal && code === "session_ended") finish();
      else notify(message);
      refresh();
    })
    .on("connect", () => notify(""));
}

function onWelcome(msg) {
  if (msg.session?.status === "ended") {
    finish();
    return;
  }
  beneName = msg.session?.beneficiary_name || beneName;
  const peers = Array.isArray(msg.peers) ? msg.peers : [];
  benePresent = peers.some((peer) => peer.role === "beneficiary");
  // Our own peer id changed: the beneficiary will offer a new connection to the new one.
  refresh();
}

function onPeerLeft(msg) {
  if (msg.role !== "beneficiary") return;
  if (msg.reason === "disconnected") {
    // It may come back (network switch): keep the connection, media may even still flow.
    beneLost = true;
  } else if (bene?.id === msg.peer_id) {
    closeBene();
    benePresent = false;
    remoteState = null;
  }
  refresh();
}

function createConnection(id) {
  const peer = createPeer(id, iceServers, signaling);
  const { pc } = peer;
  pc.ontrack = ({ track }) => {
    if (track.kind === "video") {
      ui.video.srcObject = new MediaStream([track]);
      ui.video.play().catch(() => {});
    } else {
      ui.audio.srcObject = new MediaStream([track]);
      playAudio();
    }
  };
  pc.ondatachannel = ({ channel }) => {
    if (channel.label === "assist") setupChannel(peer, channel);
  };
  pc.oniceconnectionstatechange = refresh;
  pc.onconnectionstatechange = refresh;
  return peer;
}

function closeBene() {
  if (!bene) return;
  closeConnection(bene);
  bene = null;
  ui.video.srcObject = null;
  ui.audio.srcObject = null;
  photos.clear();
}

function audioTransceiver(pc) {
  return pc.getTransceivers().find((tr) => tr.receiver.track.kind === "audio");
}

async function onOffer(msg) {
  if (ended || typeof msg.sdp !== "string") return;
  // An ICE restart keeps the connection (and its secure transport); anything else is a new
  // connection: the beneficiary's page was reloaded or our socket reconnected.
  if (!msg.restart || !bene || bene.pc.signalingState === "closed") {
    closeBene();
    bene = createConnection(msg.from);
  }
  const peer = bene;
  peer.id = msg.from;
  benePresent = true;
  beneLost = false;
  const { pc } = peer;
  await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
  flushCandidates(peer);
  const audio = audioTransceiver(pc);
  if (audio) {
    // Always answer sendrecv: the microphone can then be switched on later with
    // replaceTrack alone, since only the beneficiary may renegotiate.
    audio.direction = observer ? "recvonly" : "sendrecv";
    if (mic.track && !observer) await audio.sender.replaceTrack(mic.track);
  }
  await pc.setLocalDescription(await pc.createAnswer());
  if (bene === peer) signaling.emit("answer", { to: peer.id, sdp: pc.localDescription.sdp });
  refresh();
}

function onCandidate(msg) {
  if (bene && bene.id === msg.from) receiveCandidate(bene, msg);
}

function onState(msg) {
  if (msg.role !== "beneficiary") return;
  remoteState = msg.state;
  refresh();
}

function refresh() {
  if (ended) return;
  const pcState = bene?.pc.connectionState;
  let key = "waiting";
  if (pcState === "connected") key = remoteState === "paused" ? "paused" : "connected";
  else if (beneLost || pcState === "disconnected" || pcState === "failed" || (signaling && !signaling.connected)) {
    key = "reconnecting";
  }
  setStatus(key);
  if (ui.invite) {
    // Fold the invitation away once the beneficiary is in; unfold it when they leave.
    if ((key === "connected" || key === "paused") && lastKey !== "paused" && lastKey !== "connected") ui.invite.open = false;
    if (key === "waiting" && !benePresent && lastKey !== "waiting") ui.invite.open = true;
  }
  lastKey = key;
  show(ui.paused, remoteState === "paused" && Boolean(bene));
  const sharing = remoteState === "sharing" || remoteState === "paused";
  show(ui.noVideo, !(sharing || (remoteState === null && ui.video.videoWidth > 0 && bene)));
}

// --- Data channel: chat, photos, pointer ---------------------------------------------------

function setupChannel(peer, channel) {
  useChannel(peer, channel, (msg) => {
    if (isChat(msg)) showChat(ui.chatLog, beneName || t("beneficiary"), msg);
    else if (msg.t.startsWith("photo-")) onPhotoMessage(msg);
  });
}

function send(message) {
  const channel = bene?.channel;
  if (channel?.readyState !== "open") return false;
  channel.send(JSON.stringify(message));
  return true;
}

function onPhotoMessage(msg) {
  if (typeof msg.id !== "string") return;
  if (msg.t === "photo-start") {
    const valid = PHOTO_TYPES.includes(msg.mime) && Number.isInteger(msg.size) && msg.size > 0
      && msg.size <= MAX_PHOTO_BYTES && Number.isInteger(msg.chunks) && msg.chunks >= 1
      && msg.chunks <= msg.size;
    if (!valid) return;
    if (photos.size >= 4) photos.delete(photos.keys().next().value);
    photos.set(msg.id, { mime: msg.mime, size: msg.size, parts: new Array(msg.chunks), got: 0, bytes: 0 });
  } else if (msg.t === "photo-chunk") {
    const photo = photos.get(msg.id);
    if (!photo || !Number.isInteger(msg.seq) || msg.seq < 0 || msg.seq >= photo.parts.length) return;
    if (photo.parts[msg.seq] || typeof msg.data !== "string") return;
    let bytes;
    try {
      bytes = Uint8Array.from(atob(msg.data), (char) => char.charCodeAt(0));
    } catch {
      photos.delete(msg.id);
      return;
    }
    photo.bytes += bytes.length;
    if (bytes.length > CHUNK_BYTES || photo.bytes > photo.size) {
      photos.delete(msg.id);
      return;
    }
    photo.parts[msg.seq] = bytes;
    photo.got += 1;
  } else if (msg.t === "photo-end") {
    const photo = photos.get(msg.id);
    photos.delete(msg.id);
    if (photo && photo.got === photo.parts.length && photo.bytes === photo.size) {
      showPhoto(new Blob(photo.parts, { type: photo.mime }));
    }
  }
}

function showPhoto(blob) {
  photoCount += 1;
  const url = URL.createObjectURL(blob);
  const alt = t("photo_alt", { n: photoCount });
  const button = el("button", { type: "button", className: "photo-thumb", title: t("photo_zoom") }, el("img", { src: url, alt }));
  on(button, "click", () => {
    ui.photoFull.src = url;
    ui.photoFull.alt = alt;
    ui.dialog.classList.remove("zoomed");
    ui.dialog.showModal();
  });
  const item = el("li", {}, button);
  item.dataset.url = url;
  ui.photos.prepend(item);
  // Keep the last photos only: a peer sending photos in a loop must not exhaust memory.
  while (ui.photos.children.length > MAX_PHOTOS_KEPT) {
    const oldest = ui.photos.lastElementChild;
    URL.revokeObjectURL(oldest.dataset.url);
    oldest.remove();
  }
  show(ui.photosEmpty, false);
  announce(t("photo_received"));
}

// --- Pointer mode ---------------------------------------------------------------------------

// Position of a pointer event relative to the video frame (0..1), or null outside the frame
// (on the letterbox bands) unless `clamp`.
function relative(event, clamp) {
  if (!ui.video.videoWidth) return null;
  const frame = frameRect(ui.video);
  const x = (event.clientX - frame.left) / frame.width;
  const y = (event.clientY - frame.top) / frame.height;
  if (clamp) return { x: clamp01(x), y: clamp01(y) };
  return x >= 0 && x <= 1 && y >= 0 && y <= 1 ? { x, y } : null;
}

function echo(className, x0, y0, x1, y1) {
  const node = el("div", { className });
  const [left, top] = toLayer(ui.video, ui.layer, x0, y0);
  node.style.left = `${left}px`;
  node.style.top = `${top}px`;
  if (x1 !== undefined) {
    const [right, bottom] = toLayer(ui.video, ui.layer, x1, y1);
    node.style.width = `${right - left}px`;
    node.style.height = `${bottom - top}px`;
  }
  ui.layer.append(node);
  return node;
}

function onPointerDown(event) {
  if (!pointing || event.button !== 0) return;
  const point = relative(event, false);
  if (!point) return;
  event.preventDefault();
  ui.layer.setPointerCapture(event.pointerId);
  drag = { ...point, clientX: event.clientX, clientY: event.clientY, box: null };
}

function onPointerMove(event) {
  if (!pointing) return;
  if (drag) {
    const point = relative(event, true);
    drag.box?.remove();
    drag.box = echo("vp-highlight vp-drawing", Math.min(drag.x, point.x), Math.min(drag.y, point.y),
      Math.max(drag.x, point.x), Math.max(drag.y, point.y));
    return;
  }
  const now = performance.now();
  if (now - lastMove < 80) return;
  const point = relative(event, false);
  if (!point) return;
  lastMove = now;
  send({ t: "pointer", x: point.x, y: point.y, kind: "move" });
}

function onPointerUp(event) {
  if (!drag) return;
  const start = drag;
  drag = null;
  start.box?.remove();
  if (Math.hypot(event.clientX - start.clientX, event.clientY - start.clientY) < 8) {
    send({ t: "pointer", x: start.x, y: start.y, kind: "click" });
    const ring = echo("vp-pointer vp-click vp-echo", start.x, start.y);
    setTimeout(() => ring.remove(), 2000);
    return;
  }
  const end = relative(event, true);
  const box = {
    x0: Math.min(start.x, end.x), y0: Math.min(start.y, end.y),
    x1: Math.max(start.x, end.x), y1: Math.max(start.y, end.y),
  };
  send({ t: "highlight", ...box });
  const shown = echo("vp-highlight vp-echo", box.x0, box.y0, box.x1, box.y1);
  setTimeout(() => shown.remove(), 3000);
}

function togglePointer() {
  pointing = !pointing;
  ui.pointer.setAttribute("aria-pressed", String(pointing));
  ui.wrap.classList.toggle("pointing", pointing);
  show(ui.pointerHelp, pointing);
}

// --- Microphone, sound, view ---------------------------------------------------------------

// Browsers may refuse to play sound before the user has clicked in the page.
function playAudio() {
  ui.audio.play().then(() => show(ui.sound, false)).catch(() => show(ui.sound, true));
}

function toggleFit() {
  const actual = ui.wrap.classList.toggle("actual");
  ui.fit.textContent = t(actual ? "fit_width" : "fit_actual");
}

// --- Invitation panel ----------------------------------------------------------------------

// True when the text was copied.
async function copyText(text, source) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No clipboard API (plain http, old browser): select the text so Ctrl+C works.
    selectContents(source);
    try {
      return document.execCommand("copy");
    } catch {
      return false;
    }
  }
}

function selectContents(node) {
  if (!node) return;
  const range = document.createRange();
  range.selectNodeContents(node);
  const selection = getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

function setupInvite() {
  for (const [buttonId, sourceId] of [["copy-link", "join-link"], ["copy-code", "join-code"]]) {
    const button = $(buttonId);
    const source = $(sourceId);
    if (!button || !source) continue;
    const label = button.textContent;
    on(button, "click", async () => {
      const done = await copyText(source.textContent.trim(), source);
      button.textContent = t(done ? "copied" : "copy_failed");
      announce(button.textContent);
      setTimeout(() => {
        button.textContent = label;
      }, 2500);
    });
  }
  const expires = $("code-expires");
  const when = expires ? new Date(expires.dateTime) : null;
  if (!when || Number.isNaN(when.getTime())) return;
  expires.textContent = when.toLocaleTimeString(document.documentElement.lang || "fr", { hour: "2-digit", minute: "2-digit" });
  const check = () => {
    if (Date.now() < when.getTime()) return;
    show($("code-block"), false);
    show($("code-expired"), true);
    clearInterval(timer);
  };
  const timer = setInterval(check, 15000);
  check();
}

// --- End ------------------------------------------------------------------------------------

function finish() {
  if (ended) return;
  ended = true;
  closeBene();
  mic.stop();
  signaling?.close();
  setStatus("ended");
  show(ui.endForm, false);
  show(ui.paused, false);
  show(ui.ended, true);
  for (const button of document.querySelectorAll(".stage button, .chat-form button")) button.disabled = true;
  $("ended-title")?.focus();
}

// --- Wiring ---------------------------------------------------------------------------------

setStatus("waiting");
setupInvite();
on(ui.fit, "click", toggleFit);
on(ui.pointer, "click", togglePointer);
on(ui.layer, "pointerdown", onPointerDown);
on(ui.layer, "pointermove", onPointerMove);
on(ui.layer, "pointerup", onPointerUp);
on(ui.layer, "pointercancel", () => {
  drag?.box?.remove();
  drag = null;
});
on(ui.mic, "click", mic.toggle);
on(ui.sound, "click", playAudio);
setupChatForm({ form: ui.chatForm, input: ui.chatInput, log: ui.chatLog, send, notify, clearNotice: true });
on(ui.video, "resize", refresh);
on($("photo-close"), "click", () => ui.dialog.close());
on(ui.photoFull, "click", () => ui.dialog.classList.toggle("zoomed"));
on(ui.endForm, "submit", () => signaling?.emit("end", {}));
on($("leave"), "click", () => signaling?.emit("bye", { reason: "left" }));
if (!observer) {
  navigator.permissions?.query({ name: "microphone" })
    .then((status) => status.state === "granted" && mic.enable(false))
    .catch(() => {});
}
mic.update();
connect();
