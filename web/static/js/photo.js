// Photos on the `assist` data channel (signaling/PROTOCOL.md), peer to peer only, never
// uploaded: the beneficiary downscales them to a JPEG here and sends them through transfer.js
// (photo-start, photo-chunk…, photo-end), the same path as the documents of their vault.
import { limitsOf, sendFile } from "./transfer.js";

const MAX_SIDE = 1600; // pixels: enough to read a letter, small enough for a phone to send
const JPEG_QUALITY = 0.8;

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

// The chosen image as a JPEG of at most MAX_SIDE pixels a side: {mime, bytes}. Throws when it
// cannot be made or is still over the limit.
export async function encodePhoto(file) {
  const mime = "image/jpeg";
  const limits = limitsOf("photo");
  if (!limits?.types.includes(mime)) throw new Error("no photo limits");
  const blob = await downscale(file);
  if (blob.size > limits.max_bytes) throw new Error("photo too large");
  return { mime, bytes: new Uint8Array(await blob.arrayBuffer()) };
}

// Sends an encoded photo on each channel in turn; resolves with its id (the volunteer's
// `vault-suggest` names it). Throws if a channel closes on the way.
export function sendPhoto(photo, channels) {
  return sendFile("photo", photo, {}, channels);
}
