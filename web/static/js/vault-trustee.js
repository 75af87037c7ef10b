// The personne de confiance page (server/vault/DESIGN.md, "Trustee key pair"): an RSA-OAEP
// key pair made here, the private key non-extractable in IndexedDB `vp-trustee`; codes to give
// to people; answering a new device's request by decrypting the vault key of one of our grants
// and encrypting it again for the device's public key. No vault key ever leaves this page in
// clear, and the server never sees the private key.
import { $, config, on, show, t } from "./common.js";
// The vault's encodings and check digits: one definition for both screens that must agree.
import { b64u, checkDigits, fromB64u } from "./vault-core.js";

const DB_NAME = "vp-trustee";
const STORE = "keys";
const RECORD = "trustee";
const RSA = { name: "RSA-OAEP", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" };

const ui = {
  error: $("trustee-error"),
  keyStatus: $("key-status"),
  makeKey: $("make-key"),
  codeSection: $("code-section"),
  makeCode: $("make-code"),
  codeResult: $("code-result"),
  code: $("trustee-code"),
  codeExpiry: $("code-expiry"),
  requestSection: $("request-section"),
  pairingForm: $("pairing-form"),
  pairingCode: $("pairing-code"),
  findRequest: $("find-request"),
  requestResult: $("request-result"),
  checkDigits: $("check-digits"),
  grantList: $("grant-list"),
  answerForm: $("answer-form"),
  answer: $("answer"),
  done: $("answer-done"),
};

let keys = null; // {privateKey, spki, fingerprint} of this browser, once loaded or made
let current = null; // {request, grants} found by a pairing code

// -- Encoding -----------------------------------------------------------------------------

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));

// -- IndexedDB ------------------------------------------------------------------------------

function openDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function stored(mode, action) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = action(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

const loadKeys = () => stored("readonly", (store) => store.get(RECORD));
const saveKeys = (record) => stored("readwrite", (store) => store.put(record, RECORD));

// -- Server ---------------------------------------------------------------------------------

class ApiError extends Error {}

async function call(method, url, body) {
  let response;
  try {
    response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: {
        Accept: "application/json",
        "X-CSRF-Token": config.csrf_token ?? "",
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(t("network"));
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(data?.error?.message ?? t("error"));
  return data;
}

function fail(err) {
  ui.error.textContent = err instanceof ApiError ? err.message : t("error");
  if (!(err instanceof ApiError)) console.error("vault-trustee:", err);
  show(ui.error, true);
}

function clearError() {
  show(ui.error, false);
  ui.error.textContent = "";
}

// -- Key ------------------------------------------------------------------------------------

function ready() {
  ui.keyStatus.textContent = t("key_ready");
  show(ui.makeKey, false);
  show(ui.codeSection, true);
  show(ui.requestSection, true);
  ui.makeCode.disabled = false;
  ui.findRequest.disabled = false;
}

async function register(record) {
  const answer = await call("POST", config.urls.key, { public_key: record.spki });
  config.fingerprint = answer.fingerprint;
}

async function makeKey() {
  if (config.fingerprint && !window.confirm(t("replace_warning"))) return;
  clearError();
  ui.makeKey.disabled = true;
  ui.keyStatus.textContent = t("making_key");
  try {
    // Non-extractable: the private key can be used here, never read out (public keys always
    // can be exported).
    const pair = await crypto.subtle.generateKey(RSA, false, ["encrypt", "decrypt"]);
    const spkiBytes = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
    const record = { privateKey: pair.privateKey, spki: b64u(spkiBytes), fingerprint: hex(await sha256(spkiBytes)) };
    await saveKeys(record);
    await register(record);
    keys = record;
    ready();
    ui.keyStatus.textContent = t("key_made");
  } catch (err) {
    ui.keyStatus.textContent = t("key_missing");
    ui.makeKey.disabled = false;
    fail(err);
  }
}

// -- Codes and requests ---------------------------------------------------------------------

async function makeCode() {
  clearError();
  ui.makeCode.disabled = true;
  try {
    const answer = await call("POST", config.urls.code, {});
    ui.code.textContent = answer.code;
    const until = new Date(answer.expires_at);
    const time = until.toLocaleTimeString("fr-FR", { hour: "2-digit", minute: "2-digit" });
    ui.codeExpiry.textContent = t("code_until", { time });
    show(ui.codeResult, true);
  } catch (err) {
    fail(err);
  } finally {
    ui.makeCode.disabled = false;
  }
}

async function decryptLabel(sealed) {
  try {
    const plain = await crypto.subtle.decrypt({ name: "RSA-OAEP" }, keys.privateKey, fromB64u(sealed));
    return new TextDecoder().decode(plain);
  } catch {
    return t("grant_unknown_label");
  }
}

async function findRequest(event) {
  event.preventDefault();
  clearError();
  show(ui.done, false);
  show(ui.requestResult, false);
  const digits = ui.pairingCode.value.replace(/\D/g, "");
  ui.findRequest.disabled = true;
  try {
    const found = await call("GET", config.urls.pairing.replace("CODE", encodeURIComponent(digits || "0")));
    // Digits from the very key we will encrypt for, not from what the server says.
    ui.checkDigits.textContent = (await checkDigits(fromB64u(found.request.public_key))).join(" ");
    ui.grantList.replaceChildren();
    for (const grant of found.grants) {
      const label = document.createElement("label");
      label.className = "choice";
      const radio = document.createElement("input");
      radio.type = "radio";
      radio.name = "grant";
      radio.value = grant.id;
      const when = new Date(grant.created_at).toLocaleDateString("fr-FR");
      label.append(radio, ` ${await decryptLabel(grant.label)} `);
      const small = document.createElement("small");
      small.className = "muted";
      small.textContent = `(${t("added_on", { date: when })})`;
      label.append(small);
      const row = document.createElement("div");
      row.append(label);
      ui.grantList.append(row);
    }
    if (!found.grants.length) {
      const none = document.createElement("p");
      none.textContent = t("no_grants");
      ui.grantList.append(none);
    }
    current = found;
    ui.answer.disabled = !found.grants.length;
    show(ui.requestResult, true);
  } catch (err) {
    fail(err);
  } finally {
    ui.findRequest.disabled = false;
  }
}

async function answer(event) {
  event.preventDefault();
  clearError();
  const picked = ui.answerForm.querySelector('input[name="grant"]:checked');
  if (!picked || !current) {
    fail(new ApiError(t("pick_first")));
    return;
  }
  const grant = current.grants.find((g) => g.id === picked.value);
  ui.answer.disabled = true;
  let vaultKey = null;
  try {
    // Opening the grant is the use the person will see in their vault's history.
    const opened = await call("POST", config.urls.open.replace("REQUEST", encodeURIComponent(current.request.id)), {
      grant_id: grant.id,
    });
    try {
      vaultKey = new Uint8Array(await crypto.subtle.decrypt({ name: "RSA-OAEP" }, keys.privateKey, fromB64u(opened.wrapped_key)));
    } catch {
      throw new ApiError(t("decrypt_failed"));
    }
    const device = await crypto.subtle.importKey("spki", fromB64u(current.request.public_key), { name: "RSA-OAEP", hash: "SHA-256" }, false, ["encrypt"]);
    const wrapped = await crypto.subtle.encrypt({ name: "RSA-OAEP" }, device, vaultKey);
    const url = config.urls.answer.replace("REQUEST", encodeURIComponent(current.request.id));
    await call("POST", url, { grant_id: grant.id, wrapped_key: b64u(wrapped) });
    show(ui.requestResult, false);
    ui.done.textContent = t("answered");
    show(ui.done, true);
    ui.pairingCode.value = "";
    current = null;
  } catch (err) {
    ui.answer.disabled = false;
    fail(err);
  } finally {
    vaultKey?.fill(0);
  }
}

// -- Start ----------------------------------------------------------------------------------

async function start() {
  if (!window.crypto?.subtle || !window.indexedDB) {
    fail(new ApiError(t("no_crypto")));
    return;
  }
  on(ui.makeKey, "click", makeKey);
  on(ui.makeCode, "click", makeCode);
  on(ui.pairingForm, "submit", findRequest);
  on(ui.answerForm, "submit", answer);
  try {
    keys = (await loadKeys()) ?? null;
  } catch (err) {
    fail(err);
    return;
  }
  if (keys && !config.fingerprint) {
    // Made here but never registered (the network failed then): register it now.
    try {
      await register(keys);
    } catch (err) {
      fail(err);
      return;
    }
  }
  if (keys && keys.fingerprint === config.fingerprint) {
    ready();
    return;
  }
  ui.keyStatus.textContent = config.fingerprint ? t("key_elsewhere") : t("key_missing");
  keys = null;
  ui.makeKey.disabled = false;
  show(ui.makeKey, true);
}

start();
