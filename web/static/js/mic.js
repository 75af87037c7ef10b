// The microphone both pages share: asked for once, then switched on and off in place, so the
// connections never renegotiate.
import { t } from "./common.js";

// `attach(track)` puts a newly granted track on the connections (it may return a promise);
// `notify` shows why the microphone failed when the user asked for it; `button` (optional)
// shows its state; `disabled`: never ask (an observer only listens).
export function createMic({ button, notify, attach, disabled = false }) {
  let track = null;
  let request = null;

  function update() {
    if (!button) return;
    const live = Boolean(track?.enabled);
    button.textContent = t(live ? "mic_on" : "mic_off");
    button.classList.toggle("is-off", !live);
  }

  function enable(asked) {
    if (disabled || !navigator.mediaDevices?.getUserMedia) return Promise.resolve();
    request ??= navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    }).then((stream) => {
      track = stream.getAudioTracks()[0] ?? null;
      return attach(track);
    }).catch((err) => {
      console.warn("microphone unavailable", err);
      if (asked) notify(t("err_mic"));
    }).finally(() => {
      request = null;
      update();
    });
    return request;
  }

  function toggle() {
    if (!track || track.readyState === "ended") {
      track = null;
      enable(true);
      return;
    }
    track.enabled = !track.enabled;
    update();
  }

  return {
    get track() {
      return track;
    },
    enable,
    toggle,
    update,
    stop() {
      track?.stop();
      track = null;
    },
  };
}
