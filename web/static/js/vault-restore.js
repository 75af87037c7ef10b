// Opening a vault on another device (loaded when the person asks for it, or opens the recovery
// sheet's QR code): the recovery code typed or scanned, or a personne de confiance. Either way
// the device then keeps the keys like the first one (vault-core.js saveDevice).
import { $, on, show } from "./common.js";

const POLL_MS = 3000;

export function setup(app) {
  const { core, urls, t, go, setError, setText, announce } = app;
  let scanning = null; // {stream, stop}
  let polling = 0;
  let waiting = null;

  async function restored(device) {
    stopScan();
    app.client = new core.VaultClient(device, urls);
    await app.openDocs();
    announce(t("restored"));
    setText("docs-status", t("restored"));
  }

  // The code: a typing mistake is said here, without asking the server; an unknown code gets
  // the server's message (one for every cause).
  async function submit() {
    const button = $("restore-button");
    button.disabled = true;
    setError("restore-error", null);
    $("restore-code").removeAttribute("aria-invalid");
    setText("restore-status", t("opening"));
    try {
      const { device } = await core.restoreWithCode(urls, $("restore-code").value);
      setText("restore-status", "");
      await restored(device);
    } catch (err) {
      setText("restore-status", "");
      setError("restore-error", err);
      $("restore-code").setAttribute("aria-invalid", "true");
      $("restore-code").setAttribute("aria-describedby", "restore-code-help restore-error");
    } finally {
      button.disabled = false;
    }
  }

  function open() {
    setError("restore-error", null);
    setText("restore-status", "");
    show($("scan-qr"), "BarcodeDetector" in window && Boolean(navigator.mediaDevices?.getUserMedia));
    go("restore");
  }

  function withCode(code) {
    open();
    $("restore-code").value = code;
    submit();
  }

  // --- The QR code, with the browser's BarcodeDetector when it has one ------------------------

  function stopScan() {
    scanning?.stop();
    scanning = null;
    show($("scan-box"), false);
    show($("scan-qr"), "BarcodeDetector" in window);
  }

  async function scan() {
    setError("restore-error", null);
    let stream;
    try {
      const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
      const video = $("scan-video");
      video.srcObject = stream;
      await video.play();
      show($("scan-box"), true);
      show($("scan-qr"), false);
      setText("scan-status", t("scan_looking"));
      let timer = 0;
      let stopped = false;
      scanning = {
        stop() {
          stopped = true;
          clearTimeout(timer);
          for (const track of stream.getTracks()) track.stop();
          video.srcObject = null;
        },
      };
      const look = async () => {
        if (stopped) return;
        try {
          for (const code of await detector.detect(video)) {
            const match = /#code=([^&\s]+)/.exec(code.rawValue) ?? /^([0-9A-Za-z-]{25,40})$/.exec(code.rawValue.trim());
            if (match) {
              stopScan();
              $("restore-code").value = decodeURIComponent(match[1]);
              submit();
              return;
            }
          }
        } catch (err) {
          console.warn("visio-permanence: QR detection failed", err);
        }
        timer = setTimeout(look, 300);
      };
      look();
    } catch (err) {
      for (const track of stream?.getTracks() ?? []) track.stop();
      stopScan();
      setError("restore-error", err instanceof core.VaultError ? err : t("err_generic"));
    }
  }

  // --- A personne de confiance ------------------------------------------------------------------

  function showPairing(request) {
    waiting = request;
    setText("pairing-code", String(request.pairing_code ?? "").replace(/^(\d{3})(\d{3})$/, "$1 $2"));
    setText("pairing-check", request.check.join(" "));
    setError("pairing-error", null);
    setText("pairing-status", t("pairing_wait"));
    show($("pairing-retry"), false);
    go("pairing");
    poll();
  }

  function expired() {
    clearTimeout(polling);
    waiting = null;
    core.dropPendingRecovery();
    setText("pairing-status", "");
    setError("pairing-error", t("pairing_expired"));
    show($("pairing-retry"), true);
  }

  async function poll() {
    clearTimeout(polling);
    const request = waiting;
    if (!request) return;
    if (request.expires_at && Date.parse(request.expires_at) < Date.now()) {
      expired();
      return;
    }
    try {
      const device = await core.pollTrusteeRecovery(urls, request);
      if (request !== waiting) return;
      if (device) {
        waiting = null;
        await restored(device);
        return;
      }
      setError("pairing-error", null);
    } catch (err) {
      if (request !== waiting) return;
      if (err.status === 404 || err.status === 410) {
        expired();
        if (err.serverMessage) setError("pairing-error", err.serverMessage);
        return;
      }
      setError("pairing-error", err.code === "network" ? t("err_network") : app.message(err));
    }
    polling = setTimeout(poll, POLL_MS);
  }

  async function startPairing() {
    const buttons = [$("go-pairing"), $("pairing-retry")];
    for (const button of buttons) button.disabled = true;
    setError("restore-error", null);
    try {
      showPairing(await core.startTrusteeRecovery(urls));
    } catch (err) {
      if (document.body.dataset.vaultStep === "pairing") setError("pairing-error", err);
      else setError("restore-error", err);
    } finally {
      for (const button of buttons) button.disabled = false;
    }
  }

  on($("restore-form"), "submit", (event) => {
    event.preventDefault();
    submit();
  });
  on($("scan-qr"), "click", scan);
  on($("scan-stop"), "click", stopScan);
  on($("go-pairing"), "click", () => {
    stopScan();
    startPairing();
  });
  on($("pairing-retry"), "click", startPairing);
  on($("pairing-cancel"), "click", async () => {
    clearTimeout(polling);
    waiting = null;
    await core.dropPendingRecovery();
    open();
  });
  // Polling resumes at once when the person comes back to the page (phones pause timers).
  on(document, "visibilitychange", () => {
    if (document.visibilityState === "visible" && waiting) poll();
  });

  return { open, withCode, resumePairing: showPairing };
}
