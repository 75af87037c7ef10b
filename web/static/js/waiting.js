// The drop-in waiting room: position and estimate pushed over /queue; on their turn the page
// rings, vibrates, changes its title and opens the visio. Without this script the page refreshes.
import { $, config, on, show, t } from "./common.js";
import { connectQueue } from "./signaling.js";

const ui = {
  position: $("position"),
  estimate: $("estimate"),
  offline: $("offline"),
  callback: $("callback-offer"),
  callbackText: $("callback-text"),
  turn: $("turn"),
  section: $("waiting"),
  leave: $("leave-form"),
  languageNote: $("language-note"), // only for someone who asked for their language
};
let audio = null;
let entering = false;

// Browsers only let a page play sound after a tap on it: prepare the sound on the first one.
function unlockAudio() {
  if (audio || !globalThis.AudioContext) return;
  try {
    audio = new AudioContext();
  } catch {
    audio = null;
  }
}

function ring() {
  if (!audio) return;
  audio.resume().catch(() => {});
  const start = audio.currentTime;
  for (const [offset, freq] of [[0, 880], [0.35, 660], [0.7, 880], [1.05, 660]]) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, start + offset);
    gain.gain.exponentialRampToValueAtTime(0.4, start + offset + 0.03);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.3);
    osc.connect(gain).connect(audio.destination);
    osc.start(start + offset);
    osc.stop(start + offset + 0.32);
  }
}

function onPosition(msg) {
  if (entering) return;
  ui.position.textContent = msg.position === 1 ? t("position_1") : t("position_n", { position: msg.position });
  ui.estimate.textContent = t("estimate", { minutes: msg.estimate_minutes });
  if (ui.languageNote) show(ui.languageNote, Boolean(msg.language_only));
  if (!msg.open) ui.callbackText.textContent = t("closed");
  show(ui.callback, Boolean(msg.offer_callback));
}

function onTurn(msg) {
  if (entering) return;
  entering = true;
  document.title = t("turn_title");
  ui.section.classList.add("turn-now");
  show(ui.turn, true);
  show(ui.leave, false);
  ring();
  navigator.vibrate?.([400, 200, 400, 200, 400]);
  $("turn-enter")?.focus();
  // Leave the person a moment to hear and see it, then open the visio.
  setTimeout(() => location.assign(msg.url || config.enter_url), 1500);
}

function showOffline() {
  ui.offline.textContent = t("offline");
  show(ui.offline, true);
}

const signaling = connectQueue()
  .on("position", onPosition)
  .on("turn", onTurn)
  .on("removed", () => {
    if (!entering) location.reload(); // the page says why, and what to do now
  })
  .on("connect", () => show(ui.offline, false))
  .on("disconnect", () => {
    if (!entering) showOffline();
  })
  .on("connect_error", ({ code, fatal }) => {
    if (entering) return;
    showOffline();
    // A refused connection (place gone): the page itself explains; otherwise we retry.
    if (fatal) setTimeout(() => location.reload(), 3000);
    console.warn("visio-permanence: queue connection", code);
  });

for (const type of ["pointerdown", "keydown", "touchstart"]) on(document, type, unlockAudio, { once: true });
on(ui.leave, "submit", () => signaling.close());
