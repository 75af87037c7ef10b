// The volunteer's "Photos et documents reçus": what the person sent over the data channel
// (transfer.js), kept in this page only and for this session only. An image shows as a
// thumbnail (zoomed in the dialog), a PDF as a card with its name and "Ouvrir"; a document can
// be saved only when the person chose "Donner une copie". A photo can be suggested for the
// person's vault. Every object URL is revoked when the list is cleared (end of the session).
import { el, on, t } from "./common.js";

const MAX_KEPT = 12; // items shown: a peer sending files in a loop must not exhaust memory
const EXTENSIONS = { "application/pdf": ".pdf", "image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp" };

// A file name safe to save: no path, no control or reserved characters, with its extension.
export function downloadName(name, mime) {
  const extension = EXTENSIONS[mime] ?? "";
  let clean = String(name ?? "").replace(/[\u0000-\u001f\u007f/\\:*?"<>|]+/g, " ").replace(/\s+/g, " ").trim();
  clean = clean.replace(/^\.+/, "").slice(0, 120) || "document";
  return clean.toLowerCase().endsWith(extension) ? clean : clean + extension;
}

export class ReceivedList {
  // list: the <ul>; empty: the "nothing yet" note; zoom(url, alt): shows an image large;
  // suggest(photoId): sends vault-suggest, true when sent (null: this page may not suggest).
  constructor({ list, empty, zoom, suggest = null }) {
    this._list = list;
    this._empty = empty;
    this._zoom = zoom;
    this._suggest = suggest;
    this._photos = 0;
    this._docs = 0;
  }

  // One complete file from transfer.js's Receiver.
  add(file) {
    const url = URL.createObjectURL(file.blob);
    const item = file.kind === "doc" ? this._doc(file, url) : this._photo(file, url);
    item.dataset.url = url;
    item.dataset.kind = file.kind;
    this._list.prepend(item);
    this._empty.hidden = true;
    while (this._list.children.length > MAX_KEPT) this._drop(this._list.lastElementChild);
  }

  // Revokes every object URL and empties the list (the session is over).
  clear() {
    for (const item of [...this._list.children]) this._drop(item);
  }

  _drop(item) {
    URL.revokeObjectURL(item.dataset.url);
    item.remove();
  }

  _thumbnail(url, alt) {
    const button = el("button", { type: "button", className: "photo-thumb", title: t("photo_zoom") }, el("img", { src: url, alt }));
    on(button, "click", () => this._zoom(url, alt));
    return button;
  }

  _photo(file, url) {
    this._photos += 1;
    const item = el("li", { className: "received received-photo" }, this._thumbnail(url, t("photo_alt", { n: this._photos })));
    if (this._suggest) {
      const button = el("button", { type: "button", className: "btn btn-small suggest-vault" }, t("suggest_vault"));
      on(button, "click", () => {
        if (!this._suggest(file.id)) return;
        button.textContent = t("suggest_sent");
        button.disabled = true;
      });
      item.append(button);
    }
    return item;
  }

  _doc(file, url) {
    this._docs += 1;
    const nameId = `received-doc-${this._docs}`;
    const item = el("li", { className: "received received-doc" });
    const name = el("p", { className: "received-name", id: nameId }, file.name);
    if (file.mime === "application/pdf") {
      const open = el("a", { className: "btn btn-small", href: url, target: "_blank", rel: "noopener" }, t("doc_open"));
      open.setAttribute("aria-describedby", nameId);
      item.append(name, open);
    } else {
      item.append(this._thumbnail(url, t("doc_alt", { name: file.name })), name);
    }
    if (file.copy) {
      const save = el("a", { className: "btn btn-small save-copy", href: url, download: downloadName(file.name, file.mime) }, t("doc_save"));
      save.setAttribute("aria-describedby", nameId);
      item.append(save);
    }
    item.append(el("p", { className: "muted small" }, t(file.copy ? "doc_copy_given" : "doc_session_only")));
    return item;
  }
}
