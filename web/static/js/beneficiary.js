// The beneficiary's page: consent, then share screen / camera / photo, talk and chat.
// The beneficiary is always the offerer: one Peer (rtc.js) per volunteer or observer.
// Only what the consent step needs is imported here; the connection's modules (Socket.IO,
// WebRTC, data use: most of the page's script) come just after, see `connection` below.
import { $, on, show, el, t, config, setStatus, announce, toLayer, isUnit } from "./common.js";
import { isChat, showChat, setupChatForm } from "./chat.js";
import { createMic } from "./mic.js";
import { isDataMode, preferCodecs, tuneAudioSender, tuneVideoSender } from "./media.js";

const HELPER_ROLES = ["volunteer", "observer"];

// The link or the code opened this room directly (no redirect, one round trip less on a slow
// network): put the room's own address in the bar, without the link's token; a reload opens it.
if (config.room_url && location.pathname !== config.room_url) history.replaceState(null, "", config.room_url);

const ui = {
  consent: $("step-consent"),
  room: $("step-room"),
  endStep: $("step-ended"),
  title: $("room-title"),
  notice: $("notice"),
  dataMode: $("data-mode-notice"),
  connError: $("conn-error"),
  shareScreen: $("share-screen"),
  shareCamera: $("share-camera"),
  sendPhoto: $("send-photo"),
  photoInput: $("photo-input"),
  vaultShow: $("vault-show"),
  vaultLink: $("vault-link"),
  controls: $("share-controls"),
  sharingInfo: $("sharing-info"),
  pause: $("pause"),
  resume: $("resume"),
  stop: $("stop"),
  mic: $("mic-toggle"),
  previewWrap: $("preview-wrap"),
  preview: $("local-preview"),
  layer: $("pointer-layer"),
  localPaused: $("local-paused"),
  pip: $("pip-button"),
  chatForm: $("chat-form"),
  chatLog: $("chat-log"),
  chatInput: $("chat-input"),
  remoteAudio: $("remote-audio"),
  continueBox: $("continue"),
  continueButton: $("continue-pc"),
  continueResult: $("continue-result"),
};

const peers = new Map(); // peer_id -> Peer
const roles = new Map(); // peer_id -> "volunteer" | "observer"
let rtc = null; // rtc.js, once loaded (see `connection`)
let signaling = null;
let iceServers = [];
let track = null;
let media = null; // "screen" | "camera" while a live track is shared
let paused = false;
let dataMode = "normal"; // the volunteer's low-data mode (media.js DATA_MODES)
let everShared = false;
let ended = false;
let socketUp = false;
let helperLost = false;
let wakeLock = null;
let pipWindow = null;
let moveDot = null;
let moveTimer = 0;
let usage = null; // issue 14: the data this device uses, reported to the server (usage.js)
// The last photos sent, by id: the volunteer may suggest keeping one in the vault (issue 15).
const sentPhotos = new Map();
const KEPT_PHOTOS = 6;

// Real phones have no screen sharing, but desktop Chromium emulating a phone still exposes
// getDisplayMedia: trust the platform signals as well as the feature test.
function isMobile() {
  const ua = navigator.userAgent;
  return navigator.userAgentData?.mobile === true
    || /Android|iPhone|iPad|iPod|Mobile/i.test(ua)
    || (/Macintosh/.test(ua) && navigator.maxTouchPoints > 1)
    || (matchMedia("(pointer: coarse)").matches && !matchMedia("(pointer: fine)").matches);
}

const mobile = isMobile();
const canScreen = Boolean(navigator.mediaDevices && "getDisplayMedia" in navigator.mediaDevices) && !mobile;
const canCamera = Boolean(navigator.mediaDevices?.getUserMedia);
// Document Picture-in-Picture only exists on desktop browsers; phone emulators still expose it.
const canPip = "documentPictureInPicture" in window && !mobile;

function notify(text) {
  ui.notice.textContent = text;
}

// Every connection's senders follow what is shared and the low-data mode (media.js).
const tuning = {
  transceivers(video) {
    preferCodecs(video, { mobile });
  },
  senders(video, audio) {
    if (media) tuneVideoSender(video, media, dataMode);
    tuneAudioSender(audio);
  },
};

const mic = createMic({
  button: ui.mic,
  notify,
  attach(value) {
    for (const peer of peers.values()) peer.setAudioTrack(value).catch(console.debug);
  },
});

// --- Consent and start --------------------------------------------------------------------

async function start(event) {
  event.preventDefault();
  const name = $("first-name").value.trim().slice(0, 40);
  show(ui.consent, false);
  show(ui.room, true);
  ui.title.focus();
  setStatus("waiting");
  updateSharingUi();
  offerVault();
  keepAwake();
  mic.enable(false);
  let connectAssist;
  let UsageReporter;
  try {
    ({ connectAssist, UsageReporter } = await connection);
  } catch (err) {
    console.warn("visio-permanence: the connection's scripts did not load", err);
    ui.connError.textContent = t("conn_load");
    show(ui.connError, true);
    return;
  }
  signaling = connectAssist(name ? { name } : {});
  usage = new UsageReporter(signaling);
  signaling
    .on("connect", () => show(ui.connError, false))
    .on("welcome", onWelcome)
    .on("peer-joined", onPeerJoined)
    .on("peer-left", onPeerLeft)
    .on("answer", (msg) => peers.get(msg.from)?.acceptAnswer(msg))
    .on("candidate", (msg) => peers.get(msg.from)?.addCandidate(msg))
    .on("ended", (msg) => finish(msg.reason))
    .on("disconnect", () => {
      socketUp = false;
      refresh();
    })
    .on("connect_error", onConnectError);
}

function onConnectError({ code, message, fatal }) {
  if (fatal && code === "session_ended") {
    finish("expired");
    return;
  }
  ui.connError.textContent = message;
  show(ui.connError, true);
  if (fatal) {
    for (const id of [...peers.keys()]) closePeer(id);
    setStatus("ended");
  } else {
    refresh();
  }
}

// --- Peers ------------------------------------------------------------------------------------

function onWelcome(msg) {
  socketUp = true;
  if (typeof msg.session?.id === "string") usage?.session(msg.session.id);
  if (msg.session?.status === "ended") {
    finish("expired");
    return;
  }
  const present = new Set();
  for (const peer of Array.isArray(msg.peers) ? msg.peers : []) {
    if (!HELPER_ROLES.includes(peer.role)) continue;
    present.add(peer.peer_id);
    const known = peers.get(peer.peer_id);
    // Our own socket reconnected: the media path may still be fine, but our peer id changed
    // and answers in flight are lost, so restart ICE on a fresh offer.
    if (known && !known.closed) known.restart(true);
    else addPeer(peer.peer_id, peer.role);
  }
  for (const id of [...peers.keys()]) if (!present.has(id)) closePeer(id);
  if (present.size) helperLost = false;
  sendState();
  refresh();
}

function onPeerJoined(msg) {
  if (!HELPER_ROLES.includes(msg.role)) return;
  helperLost = false;
  addPeer(msg.peer_id, msg.role);
  sendState();
  refresh();
}

function onPeerLeft(msg) {
  if (!peers.has(msg.peer_id)) return;
  closePeer(msg.peer_id);
  if (msg.reason === "disconnected" && !peers.size) helperLost = true;
  refresh();
}

function addPeer(id, role) {
  closePeer(id);
  const peer = new rtc.Peer(id, {
    signaling,
    iceServers: () => iceServers,
    offerer: true,
    video: sendableTrack(),
    audio: mic.track,
    tuning,
  });
  peers.set(id, peer);
  roles.set(id, role);
  peer
    .on("track", (remote) => {
      if (remote.kind !== "audio" || role !== "volunteer") return;
      ui.remoteAudio.srcObject = new MediaStream([remote]);
      ui.remoteAudio.play().catch(() => {});
    })
    .on("message", (msg) => onMessage(role, msg, peer))
    .on("change", refresh);
  usage?.watch(peer);
  peer.start();
}

function closePeer(id) {
  const peer = peers.get(id);
  if (!peer) return;
  peers.delete(id);
  roles.delete(id);
  peer.close();
}

function refresh() {
  if (ended) return;
  const states = [...peers.values()].map((peer) => peer.connectionState);
  let key = "waiting";
  // Without its socket the room is not "connected" (as on the volunteer's side).
  if (!socketUp && signaling) key = "reconnecting";
  else if (states.includes("connected")) key = paused ? "paused" : "connected";
  else if (helperLost || states.includes("disconnected") || states.includes("failed")) key = "reconnecting";
  setStatus(key);
}

// --- Data channel -----------------------------------------------------------------------------

function onMessage(role, msg, peer) {
  if (role === "volunteer" && msg.t === "data-mode") {
    if (isDataMode(msg.mode)) setDataMode(msg.mode, peer);
  } else if (isChat(msg)) {
    showChat(ui.chatLog, t(role === "observer" ? "observer" : "volunteer"), msg);
  } else if (role === "volunteer" && msg.t === "pointer") {
    drawPointer(msg);
  } else if (role === "volunteer" && msg.t === "highlight") {
    drawHighlight(msg);
  } else if (role === "volunteer" && msg.t === "vault-suggest" && sentPhotos.has(msg.photo)) {
    vaultModule().then((vault) => vault.suggestPhoto(sentPhotos.get(msg.photo))).catch(vaultFailed);
  } else if (role === "volunteer" && msg.t.startsWith("rights-")) {
    // The rights check the volunteer shows (issue 16): its script comes with the first one.
    import("./rights-view.js").then((view) => view.receive(msg)).catch((err) => {
      console.warn("visio-permanence: the rights view did not load", err);
      notify(t("conn_load"));
    });
  }
}

function openChannels(role = null) {
  return [...peers].filter(([id]) => !role || roles.get(id) === role).map(([, peer]) => peer.channel).filter(Boolean);
}

// A document of the vault goes to the volunteer the person talks with, not to an observer.
const volunteerChannels = () => openChannels("volunteer");

// To every helper at once; false when none is connected.
function sendAll(message) {
  const channels = openChannels();
  const data = JSON.stringify(message);
  for (const channel of channels) channel.send(data);
  return channels.length > 0;
}

// --- Pointer and highlight drawn over the preview ------------------------------------------

function drawPointer(msg) {
  if (!track || !isUnit(msg.x) || !isUnit(msg.y)) return;
  const [left, top] = toLayer(ui.preview, ui.layer, msg.x, msg.y);
  if (msg.kind === "move") {
    moveDot ??= el("div", { className: "vp-pointer vp-move" });
    place(moveDot, left, top);
    if (!moveDot.isConnected) ui.layer.append(moveDot);
    clearTimeout(moveTimer);
    moveTimer = setTimeout(() => moveDot.remove(), 2000);
    return;
  }
  const ring = el("div", { className: "vp-pointer vp-click" });
  place(ring, left, top);
  ui.layer.append(ring);
  setTimeout(() => ring.remove(), 4000);
  announce(t("pointer_announce"));
  navigator.vibrate?.(80);
}

function drawHighlight(msg) {
  if (!track || ![msg.x0, msg.y0, msg.x1, msg.y1].every(isUnit)) return;
  const [x0, y0] = toLayer(ui.preview, ui.layer, Math.min(msg.x0, msg.x1), Math.min(msg.y0, msg.y1));
  const [x1, y1] = toLayer(ui.preview, ui.layer, Math.max(msg.x0, msg.x1), Math.max(msg.y0, msg.y1));
  const box = el("div", { className: "vp-highlight" });
  place(box, x0, y0);
  box.style.width = `${x1 - x0}px`;
  box.style.height = `${y1 - y0}px`;
  ui.layer.append(box);
  setTimeout(() => box.remove(), 3000);
  announce(t("highlight_announce"));
}

function place(node, left, top) {
  node.style.left = `${left}px`;
  node.style.top = `${top}px`;
}

// --- Sharing ----------------------------------------------------------------------------------

async function share(kind) {
  let stream;
  try {
    stream = kind === "screen"
      ? await navigator.mediaDevices.getDisplayMedia({
        video: { frameRate: { ideal: 15, max: 30 } },
        audio: false,
        selfBrowserSurface: "exclude",
        surfaceSwitching: "include",
      })
      : await navigator.mediaDevices.getUserMedia({
        video: { facingMode: { ideal: "environment" }, width: { ideal: 1280 }, height: { ideal: 720 } },
        audio: false,
      });
  } catch (err) {
    console.warn(`${kind} sharing refused`, err);
    notify(t(kind === "screen" ? "err_screen" : "err_camera"));
    return;
  }
  const next = stream.getVideoTracks()[0];
  if (!next) return;
  releaseTrack();
  track = next;
  media = kind;
  paused = false;
  everShared = true;
  track.contentHint = "detail"; // favour sharp text over smooth motion
  // The browser's own "Stop sharing" bar ends the track: same as our Arrêter button.
  next.addEventListener("ended", () => {
    if (track === next) stopSharing();
  });
  ui.preview.srcObject = new MediaStream([track]);
  ui.preview.play().catch(() => {});
  setVideoTrack(sendableTrack());
  notify("");
  afterSharingChange(ui.pause);
}

function pauseSharing() {
  if (!track || paused) return;
  paused = true;
  setVideoTrack(null); // nothing more leaves the device from now on
  afterSharingChange(ui.resume);
}

function resumeSharing() {
  if (!track || !paused) return;
  paused = false;
  setVideoTrack(sendableTrack());
  afterSharingChange(ui.pause);
}

function stopSharing() {
  if (!track) return;
  releaseTrack();
  setVideoTrack(null);
  afterSharingChange(canScreen ? ui.shareScreen : ui.shareCamera);
}

function releaseTrack() {
  if (track) track.stop();
  track = null;
  media = null;
  paused = false;
  ui.preview.srcObject = null;
  for (const node of ui.layer.querySelectorAll(".vp-pointer, .vp-highlight")) node.remove();
  pipWindow?.close();
}

// What may leave the device now: nothing while paused or in the audio-only mode.
function sendableTrack() {
  return track && !paused && dataMode !== "audio" ? track : null;
}

// --- Low-data mode (chosen by the volunteer, applied to every helper) ---------------------

function setDataMode(mode, from) {
  from.send({ t: "data-mode", mode }); // tells the volunteer's page what is in effect
  if (mode === dataMode) return;
  dataMode = mode;
  setVideoTrack(sendableTrack()); // each Peer retunes its sender once the track is in place
  const text = t(`data_mode_${mode}`);
  ui.dataMode.textContent = mode === "normal" ? "" : text;
  show(ui.dataMode, mode !== "normal");
  announce(text);
  updateSharingUi();
}

function setVideoTrack(value) {
  for (const peer of peers.values()) peer.setVideoTrack(value);
}

function afterSharingChange(focusTarget) {
  updateSharingUi();
  sendState();
  refresh();
  if (focusTarget && !focusTarget.hidden) focusTarget.focus();
}

function updateSharingUi() {
  const sharing = Boolean(track);
  show(ui.controls, sharing);
  show(ui.pause, sharing && !paused);
  show(ui.resume, sharing && paused);
  show(ui.shareScreen, canScreen && !sharing);
  show(ui.shareCamera, canCamera && !sharing);
  show(ui.previewWrap, sharing);
  show(ui.localPaused, paused);
  show(ui.pip, canPip && sharing);
  let info = "";
  if (sharing && paused) info = t("info_paused");
  else if (sharing && dataMode === "audio") info = t("info_audio_only");
  else if (sharing) info = t(media === "screen" ? "info_screen" : "info_camera");
  ui.sharingInfo.textContent = info;
}

function sendState(photo = false) {
  let state = everShared ? "stopped" : "waiting";
  if (media) state = paused ? "paused" : "sharing";
  else if (photo) state = "sharing";
  signaling?.emit("state", { state, media: media ?? (photo ? "photo" : null) });
}

// --- Photos (peer to peer only, never uploaded) ----------------------------------------------

async function sendChosenPhoto() {
  const file = ui.photoInput.files?.[0];
  ui.photoInput.value = "";
  if (!file) return;
  const channels = openChannels();
  if (!channels.length) {
    notify(t("not_connected"));
    return;
  }
  notify(t("photo_sending"));
  ui.sendPhoto.disabled = true;
  try {
    // Loaded on the first photo only: most sessions send none, and the first load stays small.
    const { encodePhoto, sendPhoto } = await import("./photo.js");
    const photo = await encodePhoto(file);
    if (!media) sendState(true);
    const id = await sendPhoto(photo, channels);
    sentPhotos.set(id, photo);
    if (sentPhotos.size > KEPT_PHOTOS) sentPhotos.delete(sentPhotos.keys().next().value);
    notify(t("photo_sent"));
  } catch (err) {
    console.warn("photo not sent", err);
    notify(t("photo_error"));
  } finally {
    ui.sendPhoto.disabled = false;
  }
}

// --- The vault (issue 15) ---------------------------------------------------------------------

// "Montrer un document" when this device holds a vault, else the link to make one (in a new
// tab: the session goes on). Only the names of the browser's databases are read here: the
// vault's code (room-vault.js, vault-core.js) is loaded when the person asks for it.
async function offerVault() {
  let present = null; // unknown where the browser cannot list its databases
  if (!globalThis.crypto?.subtle || !globalThis.indexedDB) present = false;
  else if (indexedDB.databases) {
    try {
      present = (await indexedDB.databases()).some((db) => db.name === "vp-vault");
    } catch {
      present = null;
    }
  }
  show(ui.vaultShow, present !== false);
  show(ui.vaultLink, present === false);
}

function vaultModule() {
  return import("./room-vault.js");
}

function vaultFailed(err) {
  console.warn("visio-permanence: the vault's script did not load", err);
  notify(t("conn_load"));
}

async function showDocument() {
  if (!volunteerChannels().length) {
    notify(t("not_connected"));
    return;
  }
  ui.vaultShow.disabled = true;
  try {
    const vault = await vaultModule();
    await vault.pickDocument({
      channels: volunteerChannels,
      notify,
      shown: (copy) => signaling?.emit("vault-shown", { copy }),
    });
  } catch (err) {
    vaultFailed(err);
  } finally {
    ui.vaultShow.disabled = false;
  }
}

// --- Continue on a computer ---------------------------------------------------------------

// Only the drawing elements of the QR code are kept: no script, link or event attribute.
function cleanSvg(svg) {
  for (const node of svg.querySelectorAll("script, foreignObject, a, iframe, use, image")) node.remove();
  for (const node of [svg, ...svg.querySelectorAll("*")]) {
    for (const attr of [...node.attributes]) {
      if (/^on/i.test(attr.name) || /href$/i.test(attr.name)) node.removeAttribute(attr.name);
    }
  }
  return svg;
}

async function continueOnPc() {
  ui.continueButton.disabled = true;
  try {
    const response = await fetch(config.continue_url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": config.csrf_token ?? "", Accept: "application/json" },
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    $("continue-url").textContent = String(data.url ?? "");
    // Read out in groups of four, like the volunteer's page shows it ("4521 8930").
    $("continue-code").textContent = String(data.code ?? "").replace(/(\d{4})(?=\d)/g, "$1 ");
    const qr = $("continue-qr");
    qr.replaceChildren();
    if (typeof data.qr_svg === "string") {
      const parsed = new DOMParser().parseFromString(data.qr_svg, "image/svg+xml").documentElement;
      if (parsed.localName === "svg") qr.append(document.importNode(cleanSvg(parsed), true));
    }
    show(ui.continueResult, true);
    $("continue-url").focus();
  } catch (err) {
    console.warn("continue on PC failed", err);
    notify(t("continue_error"));
  } finally {
    ui.continueButton.disabled = false;
  }
}

// --- Preview above every window (Document Picture-in-Picture) -----------------------------

async function togglePip() {
  if (pipWindow) {
    pipWindow.close();
    return;
  }
  let win;
  try {
    win = await documentPictureInPicture.requestWindow({ width: 420, height: 280 });
  } catch (err) {
    console.warn("picture-in-picture refused", err);
    return;
  }
  pipWindow = win;
  const doc = win.document;
  doc.documentElement.lang = document.documentElement.lang;
  doc.title = document.title;
  for (const link of document.querySelectorAll('link[rel="stylesheet"]')) {
    const copy = doc.createElement("link");
    copy.rel = "stylesheet";
    copy.href = link.href;
    doc.head.append(copy);
  }
  doc.body.className = "beneficiary pip";
  const placeholder = document.createComment("preview");
  ui.previewWrap.before(placeholder);
  doc.body.append(ui.previewWrap);
  ui.preview.play().catch(() => {});
  ui.pip.textContent = t("pip_close");
  win.addEventListener("pagehide", () => {
    placeholder.replaceWith(ui.previewWrap);
    ui.preview.play().catch(() => {});
    pipWindow = null;
    ui.pip.textContent = t("pip_open");
  }, { once: true });
}

// --- End ----------------------------------------------------------------------------------

async function keepAwake() {
  try {
    if (!ended && document.visibilityState === "visible") wakeLock = await navigator.wakeLock?.request("screen");
  } catch (err) {
    console.debug("no wake lock", err);
  }
}

function finish(reason) {
  if (ended) return;
  ended = true;
  usage?.stop();
  releaseTrack();
  mic.stop();
  for (const id of [...peers.keys()]) closePeer(id);
  signaling?.close();
  wakeLock?.release().catch(() => {});
  if (reason === "requeued") {
    // A drop-in volunteer put the person back in the queue: back to their place in line.
    location.assign(config.requeued_url);
    return;
  }
  $("end-message").textContent = t(reason === "replaced" ? "ended_replaced" : "ended");
  show(ui.room, false);
  show(ui.endStep, true);
  setStatus("ended");
  $("end-title").focus();
}

// --- Wiring -------------------------------------------------------------------------------

// The connection's modules, fetched at once (preloaded at low priority: the consent step's
// files go first on a slow link) but not waited for: the page is usable without them, and
// "Commencer" waits for them if pressed first. Then, while the person reads the consent text:
// the ICE servers came with the page, the signalling connection opens (without joining the
// room: that waits for "Commencer") and the first connection gathers its network candidates,
// so that "Commencer" costs one round trip. server/web/assets.py SOON lists these imports.
const connection = Promise.all([import("./signaling.js"), import("./rtc.js"), import("./usage.js")])
  .then(([signalingModule, rtcModule, usageModule]) => {
    rtc = rtcModule;
    rtc.watchIceServers((servers) => {
      iceServers = servers;
    });
    signalingModule.preconnect();
    setTimeout(() => rtc.Peer.warmUp(() => iceServers, tuning), 0);
    return { connectAssist: signalingModule.connectAssist, UsageReporter: usageModule.UsageReporter };
  });

show(ui.shareScreen, canScreen);
show(ui.shareCamera, canCamera);
show(ui.continueBox, mobile);
on($("consent-form"), "submit", start);
on(ui.shareScreen, "click", () => share("screen"));
on(ui.shareCamera, "click", () => share("camera"));
on(ui.sendPhoto, "click", () => ui.photoInput.click());
on(ui.photoInput, "change", sendChosenPhoto);
on(ui.vaultShow, "click", showDocument);
on(ui.pause, "click", pauseSharing);
on(ui.resume, "click", resumeSharing);
on(ui.stop, "click", stopSharing);
on(ui.mic, "click", mic.toggle);
setupChatForm({ form: ui.chatForm, input: ui.chatInput, log: ui.chatLog, send: sendAll, notify });
on(ui.continueButton, "click", continueOnPc);
on(ui.pip, "click", togglePip);
on(document, "visibilitychange", () => {
  if (signaling) keepAwake();
});
document.body.dataset.vpStatus = "waiting";
$("start-button").disabled = false;
show($("start-wait"), false);
// Every handler is wired: the page does what its buttons say (tests and benchmarks read this).
document.body.dataset.vpReady = "true";
