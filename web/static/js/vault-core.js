// The vault's cryptography, device storage and API client (server/vault/DESIGN.md is the
// contract). No DOM here: the vault page (vault.js) and the room's "Montrer un document" both
// use it. Everything readable is made and read in this browser with WebCrypto; the server only
// ever gets ciphertext and capabilities.
//
// Interface for other pages:
//   const device = await loadDevice();           // null when this device has no vault
//   const vault = new VaultClient(device, urls); // urls: the page config's `urls` (below)
//   await vault.list();          // [{id, size, category, created_at, updated_at, meta}]
//   await vault.read(id);        // {meta, bytes}; VaultError code "tampered" when GCM fails
//   await vault.add(blob, {name, mime, category, expires_on}, {onProgress});
//   await vault.rename(id, {name, category, expires_on}); await vault.remove(id);
//   await vault.removeVault();   // and this device forgets it
//   await vault.usage();         // {bytes, documents, max_bytes, max_documents, max_document_bytes}
// `urls` holds the API addresses rendered from route names: {vault, contact, documents,
// recover, challenge, trustees, trustee_key, recovery_requests}; a document's address is
// `${documents}/${id}` (DESIGN.md's table), its ciphertext `${documents}/${id}/blob`.
// Errors are VaultError {code, message, status, field}: `message` is the server's French text
// when it gave one (else null: the page picks its own text from `code`).

export const CATEGORIES = ["identite", "caf", "impots", "sante", "logement", "emploi", "retraite", "autre"];

const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"; // Crockford base32
const CODE_BYTES = 15; // 120 bits → 24 characters, plus 1 check character
const CODE_CHARS = 24;
const INFO = {
  wrap: "vp-vault/v1/wrap",
  meta: "vp-vault/v1/meta",
  access: "vp-vault/v1/access",
  lookup: "vp-vault/v1/recovery-lookup",
  recoveryWrap: "vp-vault/v1/recovery-wrap",
};
const AAD_RECOVERY = "vp-vault/v1/recovery";
const AAD_DOC = "vp-vault/v1/doc:";
const AAD_META = "vp-vault/v1/meta:";
const IV_BYTES = 12;
const MAX_NAME = 120;
const MAX_LABEL_BYTES = 60;
const RSA = { name: "RSA-OAEP", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" };

const DB_NAME = "vp-vault";
const DB_STORE = "device";
const DEVICE_KEY = "vault";
const PENDING_KEY = "recovery-request"; // a new device waiting for its personne de confiance

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const subtle = globalThis.crypto?.subtle;

export class VaultError extends Error {
  constructor(code, message = null, { status = 0, field = null, cause } = {}) {
    super(message ?? code, cause ? { cause } : undefined);
    this.name = "VaultError";
    this.code = code;
    this.serverMessage = message; // French, for the person; null when the server gave none
    this.status = status;
    this.field = field;
  }
}

// True when this browser can hold a vault (WebCrypto needs a secure context: https or localhost).
export function supported() {
  return Boolean(subtle && globalThis.indexedDB && globalThis.crypto?.randomUUID);
}

// --- Encodings --------------------------------------------------------------------------------

export function b64u(bytes) {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let text = "";
  for (let i = 0; i < view.length; i += 0x8000) text += String.fromCharCode(...view.subarray(i, i + 0x8000));
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function fromB64u(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) throw new VaultError("bad_encoding");
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  const binary = atob(base64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.byteLength, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part instanceof Uint8Array ? part : new Uint8Array(part), offset);
    offset += part.byteLength;
  }
  return out;
}

function randomBytes(length) {
  return crypto.getRandomValues(new Uint8Array(length));
}

async function sha256(bytes) {
  return new Uint8Array(await subtle.digest("SHA-256", bytes));
}

// --- Recovery code ----------------------------------------------------------------------------

// Bits are read most significant first: byte 0's top five bits make the first character.
function base32(bytes) {
  let bits = 0;
  let value = 0;
  let text = "";
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      text += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  if (bits > 0) text += ALPHABET[(value << (5 - bits)) & 31];
  return text;
}

function unbase32(text) {
  const bytes = [];
  let bits = 0;
  let value = 0;
  for (const char of text) {
    value = (value << 5) | ALPHABET.indexOf(char);
    bits += 5;
    if (bits >= 8) {
      bytes.push((value >>> (bits - 8)) & 255);
      bits -= 8;
    }
    value &= (1 << bits) - 1;
  }
  return new Uint8Array(bytes);
}

async function checkChar(codeBytes) {
  return ALPHABET[(await sha256(codeBytes))[0] & 31];
}

// "7K2M9-QXA4T-…": 25 characters (24 + the check character) in 5 groups of 5.
export async function formatCode(codeBytes) {
  const text = base32(codeBytes) + (await checkChar(codeBytes));
  return text.match(/.{5}/g).join("-");
}

// The code's bytes from what the person typed. Spaces and dashes are ignored, O reads as 0,
// I and L as 1. VaultError "code_length" (too short/long) or "code_typo" (a character outside
// the alphabet, or the check character does not match): both said without asking the server.
export async function parseCode(typed) {
  const text = String(typed ?? "")
    .toUpperCase()
    .replace(/[\s\-‐‑–—_.]/g, "")
    .replace(/O/g, "0")
    .replace(/[IL]/g, "1");
  if (text.length !== CODE_CHARS + 1) throw new VaultError("code_length");
  if ([...text].some((char) => !ALPHABET.includes(char))) throw new VaultError("code_typo");
  const bytes = unbase32(text.slice(0, CODE_CHARS));
  if ((await checkChar(bytes)) !== text[CODE_CHARS]) throw new VaultError("code_typo");
  return bytes;
}

// --- Key derivation ---------------------------------------------------------------------------

async function hkdfBase(secret) {
  return subtle.importKey("raw", secret, "HKDF", false, ["deriveBits", "deriveKey"]);
}

function hkdfParams(info) {
  return { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: encoder.encode(info) };
}

async function hkdfBytes(base, info, length = 32) {
  return new Uint8Array(await subtle.deriveBits(hkdfParams(info), base, length * 8));
}

// The device's keys from the vault key K (32 bytes): Kw and Km as non-extractable CryptoKeys,
// and the access capability A.
async function deviceKeys(K) {
  const base = await hkdfBase(K);
  const [Kw, Km, access] = await Promise.all([
    subtle.deriveKey(hkdfParams(INFO.wrap), base, { name: "AES-KW", length: 256 }, false, ["wrapKey", "unwrapKey"]),
    subtle.deriveKey(hkdfParams(INFO.meta), base, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]),
    hkdfBytes(base, INFO.access),
  ]);
  return { Kw, Km, access };
}

async function recoveryKeys(codeBytes) {
  const base = await hkdfBase(codeBytes);
  const [lookup, Kr] = await Promise.all([
    hkdfBytes(base, INFO.lookup),
    subtle.deriveKey(hkdfParams(INFO.recoveryWrap), base, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]),
  ]);
  return { lookup, Kr };
}

async function gcmSeal(key, plaintext, aad) {
  const iv = randomBytes(IV_BYTES);
  const sealed = await subtle.encrypt({ name: "AES-GCM", iv, additionalData: encoder.encode(aad) }, key, plaintext);
  return concat(iv, new Uint8Array(sealed));
}

// Opens iv ‖ ciphertext ‖ tag; VaultError "tampered" when the tag does not match.
async function gcmOpen(key, sealed, aad) {
  const bytes = sealed instanceof Uint8Array ? sealed : new Uint8Array(sealed);
  if (bytes.byteLength < IV_BYTES + 16) throw new VaultError("tampered");
  try {
    const plain = await subtle.decrypt(
      { name: "AES-GCM", iv: bytes.subarray(0, IV_BYTES), additionalData: encoder.encode(aad) },
      key,
      bytes.subarray(IV_BYTES),
    );
    return new Uint8Array(plain);
  } catch (err) {
    throw new VaultError("tampered", null, { cause: err });
  }
}

// --- Documents and metadata -------------------------------------------------------------------

export async function encryptDocument(Kw, id, bytes) {
  const D = await subtle.generateKey({ name: "AES-GCM", length: 256 }, true, ["encrypt", "decrypt"]);
  const blob = await gcmSeal(D, bytes, AAD_DOC + id);
  const key = new Uint8Array(await subtle.wrapKey("raw", D, Kw, "AES-KW"));
  return { blob, key: b64u(key) };
}

export async function decryptDocument(Kw, id, blob, key) {
  let D;
  try {
    D = await subtle.unwrapKey("raw", fromB64u(key), Kw, "AES-KW", "AES-GCM", false, ["decrypt"]);
  } catch (err) {
    throw new VaultError("tampered", null, { cause: err });
  }
  return gcmOpen(D, blob, AAD_DOC + id);
}

export async function encryptMeta(Km, id, meta) {
  return b64u(await gcmSeal(Km, encoder.encode(JSON.stringify(meta)), AAD_META + id));
}

export async function decryptMeta(Km, id, meta) {
  const plain = await gcmOpen(Km, fromB64u(meta), AAD_META + id);
  try {
    return JSON.parse(decoder.decode(plain));
  } catch (err) {
    throw new VaultError("tampered", null, { cause: err });
  }
}

function cleanMeta({ name, mime, category, expires_on: expiresOn }, size, addedAt) {
  const text = String(name ?? "").trim().slice(0, MAX_NAME) || "document";
  return {
    name: text,
    mime: String(mime || "application/octet-stream"),
    category: CATEGORIES.includes(category) ? category : "autre",
    expires_on: /^\d{4}-\d{2}-\d{2}$/.test(expiresOn ?? "") ? expiresOn : null,
    size,
    added_at: addedAt ?? new Date().toISOString(),
  };
}

// --- Device storage (IndexedDB `vp-vault`, store `device`) ------------------------------------

function openDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(DB_STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
    request.onblocked = () => reject(new Error("vp-vault database blocked"));
  });
}

async function store(mode, action) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(DB_STORE, mode);
      const request = action(tx.objectStore(DB_STORE));
      tx.oncomplete = () => resolve(request?.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("transaction aborted"));
    });
  } finally {
    db.close();
  }
}

// This device's vault ({Kw, Km, access, saved_at}) or null.
export async function loadDevice() {
  if (!supported()) return null;
  try {
    const device = await store("readonly", (s) => s.get(DEVICE_KEY));
    return device?.Kw && device?.Km && device?.access ? device : null;
  } catch (err) {
    console.warn("visio-permanence: the vault's device storage cannot be read", err);
    return null;
  }
}

// Keeps the keys derived from K on this device; K itself is not kept.
export async function saveDevice(K) {
  const keys = await deviceKeys(K);
  const device = { ...keys, saved_at: new Date().toISOString() };
  try {
    await store("readwrite", (s) => s.put(device, DEVICE_KEY));
  } catch (err) {
    throw new VaultError("device_storage", null, { cause: err });
  }
  return device;
}

export async function forgetDevice() {
  try {
    await store("readwrite", (s) => s.clear());
  } catch (err) {
    console.warn("visio-permanence: the vault's device storage cannot be cleared", err);
  }
}

// --- HTTP -------------------------------------------------------------------------------------

async function errorFrom(response) {
  let error = null;
  try {
    error = (await response.json())?.error ?? null;
  } catch {
    // not JSON (a proxy's page): the page uses its own text
  }
  const code = typeof error?.code === "string" ? error.code : `http_${response.status}`;
  const message = typeof error?.message === "string" && error.message ? error.message : null;
  return new VaultError(code, message, { status: response.status, field: error?.field ?? null });
}

async function call(url, { method = "GET", json, auth, headers = {}, expect = "json" } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "omit", cache: "no-store" };
  if (auth) init.headers.Authorization = auth;
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new VaultError("network", null, { cause: err });
  }
  if (!response.ok) throw await errorFrom(response);
  if (expect === "bytes") return new Uint8Array(await response.arrayBuffer());
  if (response.status === 204 || expect === "none") return null;
  try {
    return await response.json();
  } catch (err) {
    throw new VaultError("network", null, { cause: err });
  }
}

// A multipart upload with progress (fetch has none for uploads): resolves with the JSON answer.
function upload(url, form, auth, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.setRequestHeader("Authorization", auth);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "text";
    if (onProgress) xhr.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
    xhr.onerror = () => reject(new VaultError("network"));
    xhr.ontimeout = () => reject(new VaultError("network"));
    xhr.onload = () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = null;
      }
      if (xhr.status >= 200 && xhr.status < 300 && data) return resolve(data);
      const error = data?.error;
      const message = typeof error?.message === "string" && error.message ? error.message : null;
      reject(new VaultError(error?.code ?? `http_${xhr.status}`, message, { status: xhr.status, field: error?.field ?? null }));
    };
    xhr.send(form);
  });
}

// --- Proof of work for the creation (ALTCHA, server/pow.py) -----------------------------------

// Solves an ALTCHA v2 challenge with its PBKDF2 Worker (the vendored file, served from our
// origin) and returns the payload the server checks.
export function solveChallenge(challenge, workerUrl) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(workerUrl);
    worker.onmessage = (event) => {
      worker.terminate();
      const solution = event.data;
      if (!solution || solution.error || typeof solution.counter !== "number") {
        reject(new VaultError("pow_failed"));
        return;
      }
      const payload = { challenge: { parameters: challenge.parameters, signature: challenge.signature }, solution };
      resolve(btoa(JSON.stringify(payload)));
    };
    worker.onerror = (event) => {
      worker.terminate();
      reject(new VaultError("pow_failed", null, { cause: event }));
    };
    worker.postMessage({ type: "work", challenge, counterMode: "uint32", counterStart: 0, counterStep: 1, timeout: 120000 });
  });
}

// The challenge to solve before creating a vault, or null when the server asks for none.
export async function fetchChallenge(urls) {
  const data = await call(urls.challenge);
  const challenge = data && "parameters" in data ? data : data?.challenge;
  return challenge?.parameters ? challenge : null;
}

// --- Creation and recovery ----------------------------------------------------------------------

// Creates a vault: K and the recovery code are made here; the server gets A, L and the
// recovery box. Returns {vault, K, code, codeBytes, device}: K and the code stay in memory only
// as long as the page needs them (the recovery sheet, naming a personne de confiance).
export async function createVault(urls, { shareFacts = false, altcha = null, context = null } = {}) {
  const K = randomBytes(32);
  const codeBytes = randomBytes(CODE_BYTES);
  const keys = await deviceKeys(K);
  const { lookup, Kr } = await recoveryKeys(codeBytes);
  const box = await gcmSeal(Kr, K, AAD_RECOVERY);
  const body = {
    access: b64u(keys.access),
    recovery_lookup: b64u(lookup),
    recovery_box: b64u(box),
    share_facts: Boolean(shareFacts),
  };
  if (altcha) body.altcha = altcha;
  if (context) body.context = context;
  const answer = await call(urls.vault, { method: "POST", json: body });
  const device = await saveDevice(K);
  return { vault: answer?.vault ?? null, K, codeBytes, code: await formatCode(codeBytes), device };
}

// K from a typed recovery code: VaultError code_typo / code_length (local), or the server's 404
// (its French message) when no vault has this code.
export async function openWithCode(urls, typed) {
  const codeBytes = await parseCode(typed);
  const { lookup, Kr } = await recoveryKeys(codeBytes);
  const answer = await call(urls.recover, { method: "POST", json: { recovery_lookup: b64u(lookup) } });
  const K = await gcmOpen(Kr, fromB64u(answer?.recovery_box ?? ""), AAD_RECOVERY);
  if (K.byteLength !== 32) throw new VaultError("tampered");
  return K;
}

// Restores this device from a recovery code; returns {device, K}.
export async function restoreWithCode(urls, typed) {
  const K = await openWithCode(urls, typed);
  return { device: await saveDevice(K), K };
}

// True when K is the key of the vault this device holds (its access capability matches).
export async function sameVault(device, K) {
  const base = await hkdfBase(K);
  const access = await hkdfBytes(base, INFO.access);
  const held = new Uint8Array(device.access);
  return access.length === held.length && access.every((byte, i) => byte === held[i]);
}

// --- Personne de confiance ----------------------------------------------------------------------

// The check digits both screens show: the first 3 bytes of sha256(spki), each % 100, two digits.
export async function checkDigits(spki) {
  const digest = await sha256(spki instanceof Uint8Array ? spki : fromB64u(spki));
  return [...digest.subarray(0, 3)].map((byte) => String(byte % 100).padStart(2, "0"));
}

async function rsaEncrypt(publicKeyB64u, bytes) {
  const key = await subtle.importKey("spki", fromB64u(publicKeyB64u), { name: "RSA-OAEP", hash: "SHA-256" }, false, ["encrypt"]);
  return b64u(await subtle.encrypt({ name: "RSA-OAEP" }, key, bytes));
}

// The label (≤ 60 UTF-8 bytes), cut on a character boundary.
function labelBytes(label) {
  let text = String(label ?? "").trim();
  while (encoder.encode(text).length > MAX_LABEL_BYTES) text = [...text].slice(0, -1).join("");
  return encoder.encode(text);
}

// Starts a recovery through a personne de confiance on this (new) device: an RSA key pair whose
// private half never leaves it, kept in IndexedDB while waiting (a reload does not lose it).
export async function startTrusteeRecovery(urls) {
  const pair = await subtle.generateKey(RSA, false, ["encrypt", "decrypt"]);
  const spki = new Uint8Array(await subtle.exportKey("spki", pair.publicKey));
  const answer = await call(urls.recovery_requests, { method: "POST", json: { public_key: b64u(spki) } });
  const pending = {
    id: answer.id,
    poll_token: answer.poll_token,
    pairing_code: answer.pairing_code,
    expires_at: answer.expires_at,
    check: await checkDigits(spki),
    privateKey: pair.privateKey,
  };
  try {
    await store("readwrite", (s) => s.put(pending, PENDING_KEY));
  } catch (err) {
    console.warn("visio-permanence: the recovery request is kept in memory only", err);
  }
  return pending;
}

export async function loadPendingRecovery() {
  if (!supported()) return null;
  try {
    const pending = await store("readonly", (s) => s.get(PENDING_KEY));
    if (!pending?.privateKey) return null;
    if (pending.expires_at && Date.parse(pending.expires_at) < Date.now()) {
      await dropPendingRecovery();
      return null;
    }
    return pending;
  } catch {
    return null;
  }
}

export async function dropPendingRecovery() {
  try {
    await store("readwrite", (s) => s.delete(PENDING_KEY));
  } catch {
    // nothing kept
  }
}

// One poll: null while pending; the saved device once the trustee answered. VaultError with the
// server's message on 404/410 (expired or refused).
export async function pollTrusteeRecovery(urls, pending) {
  const answer = await call(`${urls.recovery_requests}/${encodeURIComponent(pending.id)}`, {
    auth: `Recovery ${pending.poll_token}`,
  });
  if (answer?.status !== "ready") return null;
  let K;
  try {
    K = new Uint8Array(await subtle.decrypt({ name: "RSA-OAEP" }, pending.privateKey, fromB64u(answer.wrapped_key)));
  } catch (err) {
    throw new VaultError("tampered", null, { cause: err });
  }
  if (K.byteLength !== 32) throw new VaultError("tampered");
  const device = await saveDevice(K);
  await dropPendingRecovery();
  return device;
}

// --- The client ---------------------------------------------------------------------------------

export class VaultClient {
  constructor(device, urls) {
    if (!device?.access) throw new VaultError("no_vault");
    this.device = device;
    this.urls = urls;
    this.auth = `Vault ${b64u(device.access)}`;
    this.vault = null; // the last `vault` object the server gave
    this.documents = new Map(); // id → document (server fields + decrypted meta)
  }

  _call(url, options = {}) {
    return call(url, { ...options, auth: this.auth });
  }

  _doc(id) {
    return `${this.urls.documents}/${encodeURIComponent(id)}`;
  }

  async _withMeta(document) {
    let meta = null;
    try {
      meta = await decryptMeta(this.device.Km, document.id, document.meta);
    } catch {
      meta = null; // shown as damaged; its blob cannot be trusted either
    }
    const entry = { ...document, meta, damaged: meta === null };
    this.documents.set(document.id, entry);
    return entry;
  }

  // Everything the page shows: {vault, documents (with meta), trustees, events}.
  async state() {
    const answer = await this._call(this.urls.vault);
    this.vault = answer.vault;
    this.documents.clear();
    const documents = await Promise.all((answer.documents ?? []).map((d) => this._withMeta(d)));
    return { vault: answer.vault, documents, trustees: answer.trustees ?? [], events: answer.events ?? [] };
  }

  async list() {
    return (await this.state()).documents;
  }

  async usage() {
    if (!this.vault) await this.state();
    return this.vault.usage;
  }

  // The document's bytes and meta, checked by AES-GCM: VaultError "tampered" and no bytes when
  // the ciphertext, its key or its meta was changed.
  async read(id, { onProgress } = {}) {
    let entry = this.documents.get(id);
    if (!entry) {
      await this.state();
      entry = this.documents.get(id);
    }
    if (!entry) throw new VaultError("not_found", null, { status: 404 });
    if (entry.damaged) throw new VaultError("tampered");
    const blob = await this._call(`${this._doc(id)}/blob`, { expect: "bytes", headers: { Accept: "application/octet-stream" } });
    onProgress?.(1);
    const bytes = await decryptDocument(this.device.Kw, id, blob, entry.key);
    return { meta: entry.meta, bytes };
  }

  // Encrypts and uploads a file (Blob or File). Resolves with the new document (with meta).
  async add(file, details, { onProgress } = {}) {
    if (!this.vault) await this.state();
    const id = crypto.randomUUID();
    const bytes = new Uint8Array(await file.arrayBuffer());
    const meta = cleanMeta({ mime: file.type, ...details }, bytes.byteLength);
    const { blob, key } = await encryptDocument(this.device.Kw, id, bytes);
    const form = new FormData();
    form.append("id", id);
    form.append("key", key);
    form.append("meta", await encryptMeta(this.device.Km, id, meta));
    if (this.vault.share_facts) form.append("category", meta.category);
    form.append("blob", new Blob([blob], { type: "application/octet-stream" }), "blob");
    const answer = await upload(this.urls.documents, form, this.auth, onProgress);
    if (answer.usage && this.vault) this.vault = { ...this.vault, usage: answer.usage };
    return this._withMeta(answer.document);
  }

  // New name, category or expiry date: the meta is encrypted again (the same `added_at`).
  async rename(id, changes) {
    let entry = this.documents.get(id);
    if (!entry) {
      await this.state();
      entry = this.documents.get(id);
    }
    if (!entry?.meta) throw new VaultError(entry ? "tampered" : "not_found");
    const meta = cleanMeta({ ...entry.meta, ...changes }, entry.meta.size, entry.meta.added_at);
    const body = { meta: await encryptMeta(this.device.Km, id, meta) };
    if (this.vault?.share_facts) body.category = meta.category;
    const answer = await this._call(this._doc(id), { method: "PUT", json: body });
    return this._withMeta(answer.document);
  }

  async remove(id) {
    await this._call(this._doc(id), { method: "DELETE", expect: "none" });
    this.documents.delete(id);
  }

  // Deletes the vault for everyone, at once; then this device forgets it.
  async removeVault() {
    await this._call(this.urls.vault, { method: "DELETE", expect: "none" });
    await forgetDevice();
    this.documents.clear();
    this.vault = null;
  }

  // {phone, email} for the retention notices; {} removes them.
  async setContact(contact) {
    const answer = await this._call(this.urls.contact, { method: "PUT", json: contact });
    this.vault = answer.vault ?? this.vault;
    return this.vault;
  }

  // {name, association, public_key, fingerprint} of the personne de confiance whose code it is.
  async trusteeKey(code) {
    const url = new URL(this.urls.trustee_key, location.href);
    url.searchParams.set("code", String(code ?? "").toUpperCase().replace(/[\s-]/g, ""));
    return this._call(url.href);
  }

  // Names a personne de confiance: K and the label are encrypted for their public key here.
  async addTrustee(K, code, trustee, label) {
    if (!(await sameVault(this.device, K))) throw new VaultError("wrong_vault");
    const body = {
      trustee_code: String(code ?? "").toUpperCase().replace(/[\s-]/g, ""),
      wrapped_key: await rsaEncrypt(trustee.public_key, K),
      label: await rsaEncrypt(trustee.public_key, labelBytes(label)),
    };
    const answer = await this._call(this.urls.trustees, { method: "POST", json: body });
    return answer.trustee;
  }

  async revokeTrustee(grantId) {
    await this._call(`${this.urls.trustees}/${encodeURIComponent(grantId)}`, { method: "DELETE", expect: "none" });
  }
}
