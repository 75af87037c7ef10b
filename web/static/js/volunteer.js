// The volunteer's room: answers the beneficiary's offers, shows the shared screen, points,
// talks, chats and receives photos and the documents the person shows from their vault. An
// invited observer only watches.
import { $, on, show, el, t, config, setStatus, announce, frameRect, toLayer, clamp01 } from "./common.js";
import { connectAssist } from "./signaling.js";
import { watchIceServers, Peer } from "./rtc.js";
import { isChat, showChat, setupChatForm } from "./chat.js";
import { createMic } from "./mic.js";
import { Receiver } from "./transfer.js";
import { ReceivedList } from "./received.js";
import { showDataUsed } from "./usage.js";
import { isDataMode } from "./media.js";

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
  dataModeForm: $("data-mode-form"),
  dataModeState: $("data-mode-state"),
  grid: $("room-grid"),
  rightsOpen: $("rights-open"),
};

let signaling = null;
let iceServers = [];
let bene = null; // the Peer with the beneficiary, from their first offer until they leave
let benePresent = false;
let beneLost = false;
let beneName = "";
let remoteState = null;
let ended = false;
let pointing = false;
let drag = null;
let lastMove = 0;
let lastKey = "";
let dataMode = "normal"; // the low-data mode chosen here
let appliedMode = null; // the one the beneficiary's page said it applies

function notify(text) {
  if (ui.notice) ui.notice.textContent = text;
}

const mic = createMic({
  button: ui.mic,
  notify,
  disabled: observer,
  async attach(track) {
    await bene?.setAudioTrack(track);
  },
});

// --- Signalling -----------------------------------------------------------------------------

function connect() {
  watchIceServers((servers) => {
    iceServers = servers;
  });
  signaling = connectAssist({ session_id: config.session_id });
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
    .on("offer", onOffer)
    .on("candidate", (msg) => bene?.addCandidate(msg))
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

function benePeer() {
  const peer = new Peer(null, { signaling, iceServers: () => iceServers, audio: mic.track, sendAudio: !observer });
  return peer
    .on("offer", () => {
      benePresent = true;
      beneLost = false;
    })
    .on("track", (track) => {
      if (track.kind === "video") {
        ui.video.srcObject = new MediaStream([track]);
        ui.video.play().catch(() => {});
      } else {
        ui.audio.srcObject = new MediaStream([track]);
        playAudio();
      }
    })
    .on("open", () => {
      sendDataMode(); // a fresh or reloaded page starts in "normal": say it again
      rights?.resend(); // and shows nothing of the rights check
    })
    .on("message", (msg) => {
      if (msg.t === "data-mode") onDataModeApplied(msg);
      else if (isChat(msg)) showChat(ui.chatLog, beneName || t("beneficiary"), msg);
      else inbox.receive(msg);
    })
    .on("renewed", () => {
      clearMedia();
      showDataMode(null);
    })
    .on("change", refresh);
}

function onOffer(msg) {
  if (ended) return;
  bene ??= benePeer();
  bene.acceptOffer(msg);
}

// The remote media and half-received files belong to a connection that is gone.
function clearMedia() {
  ui.video.srcObject = null;
  ui.audio.srcObject = null;
  inbox.reset();
}

function closeBene() {
  if (!bene) return;
  bene.close();
  bene = null;
  clearMedia();
  showDataMode(null);
}

// --- Low-data mode: chosen here, applied by the beneficiary's page --------------------------

function sendDataMode() {
  if (observer || !ui.dataModeForm) return;
  send({ t: "data-mode", mode: dataMode });
}

function onDataModeApplied(msg) {
  if (isDataMode(msg.mode)) showDataMode(msg.mode);
}

function showDataMode(applied) {
  appliedMode = applied;
  if (!ui.dataModeState) return;
  const input = ui.dataModeForm.querySelector(`input[value="${appliedMode}"]`);
  ui.dataModeState.textContent = input
    ? t("data_mode_applied", { mode: input.parentElement.textContent.trim() })
    : t("data_mode_pending");
}

function chooseDataMode(event) {
  if (!isDataMode(event.target.value)) return;
  dataMode = event.target.value;
  if (appliedMode !== dataMode) showDataMode(null);
  sendDataMode();
}

function onState(msg) {
  if (msg.role !== "beneficiary") return;
  remoteState = msg.state;
  refresh();
}

function refresh() {
  if (ended) return;
  const pcState = bene?.connectionState;
  let key = "waiting";
  // Without its socket the room is not "connected", even while the last frames still arrive:
  // the other side may be gone (a server restart closes its connection too).
  if (signaling && !signaling.connected) key = "reconnecting";
  else if (pcState === "connected") key = remoteState === "paused" ? "paused" : "connected";
  else if (beneLost || pcState === "disconnected" || pcState === "failed") key = "reconnecting";
  setStatus(key);
  if (ui.invite) {
    // Fold the invitation away once the beneficiary is in; unfold it when they leave.
    if ((key === "connected" || key === "paused") && lastKey !== "paused" && lastKey !== "connected") ui.invite.open = false;
    if (key === "waiting" && !benePresent && lastKey !== "waiting") ui.invite.open = true;
  }
  lastKey = key;
  show(ui.paused, remoteState === "paused" && Boolean(bene?.active));
  const sharing = remoteState === "sharing" || remoteState === "paused";
  show(ui.noVideo, !(sharing || (remoteState === null && ui.video.videoWidth > 0 && bene?.active)));
}

// --- Data channel: chat, photos, pointer ---------------------------------------------------

function send(message) {
  return bene?.send(message) ?? false;
}

// Photos and documents: shown here for this session only, never uploaded (received.js).
const received = new ReceivedList({
  list: ui.photos,
  empty: ui.photosEmpty,
  zoom(url, alt) {
    ui.photoFull.src = url;
    ui.photoFull.alt = alt;
    ui.dialog.classList.remove("zoomed");
    ui.dialog.showModal();
  },
  // The main volunteer may suggest keeping a photo in the person's vault; an observer may not.
  suggest: observer ? null : (photo) => {
    const sent = send({ t: "vault-suggest", photo });
    if (!sent) notify(t("not_connected"));
    return sent;
  },
});
const inbox = new Receiver((file) => {
  received.add(file);
  announce(t(file.kind === "doc" ? "doc_received" : "photo_received"));
});

// --- Rights check (issue 16): its script and form are fetched on the first press -----------

let rights = null;

async function openRights() {
  ui.rightsOpen.disabled = true;
  try {
    rights ??= await import("./rights.js");
    await rights.openRights({
      partsUrl: config.rights_url,
      container: $("rights-parts"),
      share: ended ? null : send,
      onOpen() {
        show(ui.rightsOpen, false);
        ui.grid?.classList.add("rights-open");
      },
      onClose() {
        show(ui.rightsOpen, true);
        ui.grid?.classList.remove("rights-open");
        ui.rightsOpen.focus();
      },
    });
  } catch (err) {
    console.warn("visio-permanence: the rights check did not load", err);
    notify(t("rights_load_error"));
  } finally {
    ui.rightsOpen.disabled = false;
  }
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
  received.clear(); // what the person showed was for the session only
  rights?.stopSharing();
  ui.photosEmpty.textContent = t("received_ended");
  show(ui.photosEmpty, true);
  setStatus("ended");
  show(ui.endForm, false);
  show(ui.paused, false);
  show(ui.ended, true);
  showDataUsed(config.data_used_url, $("ended-data-used")); // issue 14: as the server stored it
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
on(ui.rightsOpen, "click", openRights);
on(ui.sound, "click", playAudio);
if (ui.dataModeForm) {
  on(ui.dataModeForm, "change", chooseDataMode);
  on(ui.dataModeForm, "submit", (event) => event.preventDefault());
}
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
