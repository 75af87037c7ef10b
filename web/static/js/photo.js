// Photos on the `assist` data channel (signaling/PROTOCOL.md), peer to peer only, never
// uploaded: the beneficiary downscales, chunks and sends them (photo-start, photo-chunk…,
// photo-end); the volunteer reassembles and shows them. The protocol's limits come from the page
// config (`photo`: max_bytes, chunk_bytes, types), filled from signaling/messages.py.
import { config, el, uid } from "./common.js";

const MAX_SIDE = 1600; // pixels: enough to read a letter, small enough for a phone to send
const JPEG_QUALITY = 0.8;
const MAX_ASSEMBLING = 4; // photos being received at once
const MAX_KEPT = 12; // photos shown: a peer sending photos in a loop must not exhaust memory
// The send buffer's bounds, so that a big photo does not flood memory.
const BUFFER_HIGH = 256 * 1024;
const BUFFER_LOW = 64 * 1024;

const limits = readLimits();

function readLimits() {
  const photo = config.photo;
  if (Number.isInteger(photo?.max_bytes) && Number.isInteger(photo?.chunk_bytes) && photo.chunk_bytes > 0
    && Array.isArray(photo?.types)) {
    return photo;
  }
  console.error("visio-permanence: the page config has no photo limits");
  return null;
}

// --- Sending (beneficiary) -------------------------------------------------------------------

async function downscale(file) {
  const url = URL.createObjectURL(file);
  try {
    const image = new Image();
    image.src = url;
    await image.decode();
    const scale = Math.min(1, MAX_SIDE / Math.max(image.naturalWidth, image.naturalHeight));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(image.naturalWidth * scale));
    canvas.height = Math.max(1, Math.round(image.naturalHeight * scale));
    canvas.getContext("2d").drawImage(image, 0, 0, canvas.width, canvas.height);
    return await new Promise((resolve, reject) => {
      canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("JPEG encoding failed"))), "image/jpeg", JPEG_QUALITY);
    });
  } finally {
    URL.revokeObjectURL(url);
  }
}

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

// The chosen image as a JPEG of at most MAX_SIDE pixels a side: {mime, bytes}. Throws when it
// cannot be made or is still over the limit.
export async function encodePhoto(file) {
  const mime = "image/jpeg";
  if (!limits?.types.includes(mime)) throw new Error("no photo limits");
  const blob = await downscale(file);
  if (blob.size > limits.max_bytes) throw new Error("photo too large");
  return { mime, bytes: new Uint8Array(await blob.arrayBuffer()) };
}

// Sends an encoded photo on each channel in turn; throws if a channel closes on the way.
export async function sendPhoto(photo, channels) {
  const { mime, bytes } = photo;
  const size = limits.chunk_bytes;
  const id = uid();
  const chunks = Math.ceil(bytes.length / size);
  for (const channel of channels) {
    channel.send(JSON.stringify({ t: "photo-start", id, mime, size: bytes.length, chunks }));
    for (let seq = 0; seq < chunks; seq += 1) {
      await drain(channel);
      const data = toBase64(bytes.subarray(seq * size, (seq + 1) * size));
      channel.send(JSON.stringify({ t: "photo-chunk", id, seq, data }));
    }
    channel.send(JSON.stringify({ t: "photo-end", id }));
  }
}

// --- Receiving (volunteer) -------------------------------------------------------------------

// Reassembles the photos a peer sends and shows the last MAX_KEPT in `list`, newest first: each
// an <li> around `thumbnail(url, n)` (n counts from 1); older ones are removed and their object
// URLs revoked.
export class PhotoInbox {
  constructor(list, thumbnail) {
    this._list = list;
    this._thumbnail = thumbnail;
    this._assembling = new Map(); // id -> {mime, size, parts, got, bytes}
    this._count = 0;
  }

  // One photo-* message from the data channel; true when it completed a photo, now shown.
  receive(msg) {
    if (!limits || typeof msg.id !== "string") return false;
    if (msg.t === "photo-start") this._start(msg);
    else if (msg.t === "photo-chunk") this._chunk(msg);
    else if (msg.t === "photo-end") return this._end(msg);
    return false;
  }

  // Drops the photos half received (their connection is gone).
  reset() {
    this._assembling.clear();
  }

  _start(msg) {
    const valid = limits.types.includes(msg.mime) && Number.isInteger(msg.size) && msg.size > 0
      && msg.size <= limits.max_bytes && Number.isInteger(msg.chunks) && msg.chunks >= 1
      && msg.chunks <= msg.size;
    if (!valid) return;
    if (this._assembling.size >= MAX_ASSEMBLING) this._assembling.delete(this._assembling.keys().next().value);
    this._assembling.set(msg.id, { mime: msg.mime, size: msg.size, parts: new Array(msg.chunks), got: 0, bytes: 0 });
  }

  _chunk(msg) {
    const photo = this._assembling.get(msg.id);
    if (!photo || !Number.isInteger(msg.seq) || msg.seq < 0 || msg.seq >= photo.parts.length) return;
    if (photo.parts[msg.seq] || typeof msg.data !== "string") return;
    let bytes;
    try {
      bytes = Uint8Array.from(atob(msg.data), (char) => char.charCodeAt(0));
    } catch {
      this._assembling.delete(msg.id);
      return;
    }
    photo.bytes += bytes.length;
    if (bytes.length > limits.chunk_bytes || photo.bytes > photo.size) {
      this._assembling.delete(msg.id);
      return;
    }
    photo.parts[msg.seq] = bytes;
    photo.got += 1;
  }

  _end(msg) {
    const photo = this._assembling.get(msg.id);
    this._assembling.delete(msg.id);
    if (!photo || photo.got !== photo.parts.length || photo.bytes !== photo.size) return false;
    this._show(new Blob(photo.parts, { type: photo.mime }));
    return true;
  }

  _show(blob) {
    this._count += 1;
    const url = URL.createObjectURL(blob);
    const item = el("li", {}, this._thumbnail(url, this._count));
    item.dataset.url = url;
    this._list.prepend(item);
    while (this._list.children.length > MAX_KEPT) {
      const oldest = this._list.lastElementChild;
      URL.revokeObjectURL(oldest.dataset.url);
      oldest.remove();
    }
  }
}
