// Files on the `assist` data channel (signaling/PROTOCOL.md), peer to peer only, never
// uploaded: photos and the documents of the person's vault go the same way. The sender chunks
// a file as `<kind>-start` {id, mime, size, chunks, …}, `<kind>-chunk` {id, seq, data} (base64)
// and `<kind>-end` {id}; the receiver checks every message against the limits of the page
// config (`photo` and `doc`: max_bytes, chunk_bytes, types; `doc` also max_name), filled from
// signaling/messages.py, reassembles the file and checks that its first bytes are what its
// type says.
import { config, uid } from "./common.js";

export const KINDS = ["photo", "doc"];
const MAX_ASSEMBLING = 4; // files being received at once
// The send buffer's bounds, so that a big file does not flood memory.
const BUFFER_HIGH = 256 * 1024;
const BUFFER_LOW = 64 * 1024;
// The first bytes of each type we accept: a peer cannot pass an HTML page off as a PDF.
const SIGNATURES = {
  "application/pdf": [[0x25, 0x50, 0x44, 0x46, 0x2d]], // %PDF-
  "image/jpeg": [[0xff, 0xd8, 0xff]],
  "image/png": [[0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]],
  "image/webp": [[0x52, 0x49, 0x46, 0x46, null, null, null, null, 0x57, 0x45, 0x42, 0x50]], // RIFF….WEBP
};

const limits = Object.fromEntries(KINDS.map((kind) => [kind, readLimits(kind)]));

function readLimits(kind) {
  const found = config[kind];
  if (Number.isInteger(found?.max_bytes) && Number.isInteger(found?.chunk_bytes) && found.chunk_bytes > 0
    && Array.isArray(found?.types)) {
    return found;
  }
  return null;
}

// The limits of a kind ("photo", "doc") from the page config, or null when it has none.
export function limitsOf(kind) {
  return limits[kind] ?? null;
}

// True when `bytes` start as files of type `mime` do.
export function looksLike(mime, bytes) {
  return (SIGNATURES[mime] ?? []).some((signature) => signature.length <= bytes.length
    && signature.every((byte, i) => byte === null || bytes[i] === byte));
}

// --- Sending ----------------------------------------------------------------------------------

function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 4096) text += String.fromCharCode(...bytes.subarray(i, i + 4096));
  return btoa(text);
}

// Wait while the channel's send buffer is full.
async function drain(channel) {
  if (channel.readyState !== "open") throw new Error("data channel closed");
  if (channel.bufferedAmount < BUFFER_HIGH) return;
  channel.bufferedAmountLowThreshold = BUFFER_LOW;
  await new Promise((resolve, reject) => {
    channel.addEventListener("bufferedamountlow", resolve, { once: true });
    channel.addEventListener("close", () => reject(new Error("data channel closed")), { once: true });
  });
}

// Sends a file of `kind` ({mime, bytes}, plus the kind's own start fields in `fields`) on each
// channel in turn; resolves with its id. Throws when it breaks the kind's limits or a channel
// closes on the way. `onProgress(fraction)` follows a long send (a document on a slow network).
export async function sendFile(kind, { mime, bytes }, fields, channels, onProgress = null) {
  const kindLimits = limits[kind];
  if (!kindLimits) throw new Error(`the page config has no ${kind} limits`);
  if (!kindLimits.types.includes(mime)) throw new Error(`${kind}: type ${mime} not allowed`);
  if (!bytes.length || bytes.length > kindLimits.max_bytes) throw new Error(`${kind} too large`);
  const size = kindLimits.chunk_bytes;
  const id = uid();
  const chunks = Math.ceil(bytes.length / size);
  const total = chunks * channels.length;
  for (const [index, channel] of channels.entries()) {
    channel.send(JSON.stringify({ t: `${kind}-start`, id, mime, size: bytes.length, chunks, ...fields }));
    for (let seq = 0; seq < chunks; seq += 1) {
      await drain(channel);
      const data = toBase64(bytes.subarray(seq * size, (seq + 1) * size));
      channel.send(JSON.stringify({ t: `${kind}-chunk`, id, seq, data }));
      onProgress?.((index * chunks + seq + 1) / total);
    }
    channel.send(JSON.stringify({ t: `${kind}-end`, id }));
  }
  return id;
}

// --- Receiving --------------------------------------------------------------------------------

// The kind's own fields of a `<kind>-start`, checked; null when they are wrong.
const START_FIELDS = {
  photo: () => ({}),
  doc: (msg, kindLimits) => {
    const maxName = Number.isInteger(kindLimits.max_name) ? kindLimits.max_name : 120;
    if (typeof msg.name !== "string" || !msg.name || msg.name.length > maxName) return null;
    if (typeof msg.copy !== "boolean") return null;
    return { name: msg.name, copy: msg.copy };
  },
};

// Reassembles the files a peer sends; `onFile({kind, id, mime, blob, …})` gets each complete
// one (a document also has `name` and `copy`). Anything malformed or over a limit is dropped.
export class Receiver {
  constructor(onFile) {
    this._onFile = onFile;
    this._assembling = new Map(); // id -> {kind, mime, size, parts, got, bytes, fields}
  }

  // One message from the data channel; true when it belongs to a file transfer.
  receive(msg) {
    if (typeof msg.t !== "string") return false;
    const [kind, step, ...rest] = msg.t.split("-");
    if (rest.length || !KINDS.includes(kind) || !["start", "chunk", "end"].includes(step)) return false;
    if (!limits[kind] || typeof msg.id !== "string") return true;
    if (step === "start") this._start(kind, msg);
    else if (step === "chunk") this._chunk(kind, msg);
    else this._end(kind, msg);
    return true;
  }

  // Drops the files half received (their connection is gone).
  reset() {
    this._assembling.clear();
  }

  _start(kind, msg) {
    const kindLimits = limits[kind];
    const valid = kindLimits.types.includes(msg.mime) && Number.isInteger(msg.size) && msg.size > 0
      && msg.size <= kindLimits.max_bytes && Number.isInteger(msg.chunks) && msg.chunks >= 1
      && msg.chunks <= msg.size && msg.chunks >= Math.ceil(msg.size / kindLimits.chunk_bytes);
    const fields = valid ? START_FIELDS[kind](msg, kindLimits) : null;
    if (!fields) return;
    if (this._assembling.size >= MAX_ASSEMBLING) this._assembling.delete(this._assembling.keys().next().value);
    this._assembling.set(msg.id, { kind, mime: msg.mime, size: msg.size, parts: new Array(msg.chunks), got: 0, bytes: 0, fields });
  }

  _chunk(kind, msg) {
    const file = this._assembling.get(msg.id);
    if (!file || file.kind !== kind || !Number.isInteger(msg.seq) || msg.seq < 0 || msg.seq >= file.parts.length) return;
    if (file.parts[msg.seq] || typeof msg.data !== "string") return;
    let bytes;
    try {
      bytes = Uint8Array.from(atob(msg.data), (char) => char.charCodeAt(0));
    } catch {
      this._assembling.delete(msg.id);
      return;
    }
    file.bytes += bytes.length;
    if (bytes.length > limits[kind].chunk_bytes || file.bytes > file.size) {
      this._assembling.delete(msg.id);
      return;
    }
    file.parts[msg.seq] = bytes;
    file.got += 1;
  }

  _end(kind, msg) {
    const file = this._assembling.get(msg.id);
    if (!file || file.kind !== kind) return;
    this._assembling.delete(msg.id);
    if (file.got !== file.parts.length || file.bytes !== file.size) return;
    if (!looksLike(file.mime, file.parts[0])) return;
    this._onFile({ kind, id: msg.id, mime: file.mime, blob: new Blob(file.parts, { type: file.mime }), ...file.fields });
  }
}
