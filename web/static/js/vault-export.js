// "Tout télécharger": every document decrypted on this device, in one zip (npm `fflate`,
// stored without compression: photos and PDFs are compressed already). Loaded on demand only.
import { zipSync } from "../vendor/fflate.esm.js";

const EXTENSIONS = { "application/pdf": ".pdf", "image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp" };

function clean(text) {
  return String(text ?? "").replace(/[\\/:*?"<>|\u0000-\u001f]+/g, " ").replace(/\s+/g, " ").trim();
}

// A unique path in the zip: "<category label>/<name>.<ext>", "… (2)" when taken.
function pathFor(meta, labels, taken) {
  const folder = clean(labels.get(meta.category) ?? meta.category) || "Autre";
  const ext = EXTENSIONS[meta.mime] ?? "";
  let base = clean(meta.name) || "document";
  if (ext && base.toLowerCase().endsWith(ext)) base = base.slice(0, -ext.length);
  let path = `${folder}/${base}${ext}`;
  for (let n = 2; taken.has(path.toLowerCase()); n += 1) path = `${folder}/${base} (${n})${ext}`;
  taken.add(path.toLowerCase());
  return path;
}

// {blob, count, skipped}: damaged documents (GCM failure) are left out and counted.
export async function exportAll(client, documents, onProgress, labels = new Map()) {
  const files = {};
  const taken = new Set();
  let skipped = 0;
  let done = 0;
  for (const doc of documents) {
    try {
      const { meta, bytes } = await client.read(doc.id);
      const mtime = new Date(meta.added_at ?? doc.created_at ?? Date.now());
      files[pathFor(meta, labels, taken)] = [bytes, { level: 0, mtime: Number.isNaN(mtime.getTime()) ? new Date() : mtime }];
    } catch (err) {
      if (err?.code !== "tampered") throw err;
      skipped += 1;
    }
    done += 1;
    onProgress?.(done, documents.length);
  }
  const zipped = zipSync(files, { level: 0 });
  return { blob: new Blob([zipped], { type: "application/zip" }), count: done - skipped, skipped };
}
