// The person's vault page (templates/vault/vault.html): one step shown at a time. The
// cryptography and the API are vault-core.js; what is not needed before the first tap comes
// later, by import(): the recovery sheet's QR code (vault-sheet.js), restoring on another device
// (vault-restore.js), the personne de confiance (vault-trust.js), the export (vault-export.js).
import { $, on, show, el, t, tn, config, announce } from "./common.js";
import * as core from "./vault-core.js";

const urls = config.urls ?? {};
const limits = config.limits ?? {};
const categoryLabels = new Map((config.categories ?? []).map((c) => [c.code, c.label]));
const PHOTO_MAX_SIDE = 2400; // pixels: a page of text stays readable, a photo stays ≤ ~1.5 MB
const PHOTO_QUALITY = 0.85;
const FILE_TYPES = ["application/pdf", "image/jpeg", "image/png", "image/webp"];
const GCM_OVERHEAD = 28; // iv + tag: what encryption adds to a document's size
const dateFormat = new Intl.DateTimeFormat("fr-FR", { dateStyle: "long" });
const numberFormat = new Intl.NumberFormat("fr-FR", { maximumFractionDigits: 1 });

let client = null; // core.VaultClient of this device's vault
let current = null; // the last state(): {vault, documents, trustees, events}
let fresh = null; // right after creation only: {K, code}; dropped once the person moves on
let pending = null; // the file being added: {file, photo}
let editing = null; // id of the document being renamed
let removing = null; // id of the document to delete
let viewerUrl = null;
let previewUrl = null;
let checkGroup = 0;
let powJob = null;
const lazy = {};

// --- Steps and messages -------------------------------------------------------------------------

const steps = [...document.querySelectorAll("main > section.step")];

function go(name, { focus = true } = {}) {
  for (const step of steps) step.hidden = step.id !== `step-${name}`;
  document.body.dataset.vaultStep = name;
  if (name !== "docs") closeViewer();
  const title = $(`step-${name}`)?.querySelector("h1");
  if (focus && title) title.focus();
  window.scrollTo(0, 0);
}

const ERROR_KEYS = {
  network: "err_network",
  tampered: "err_tampered",
  code_typo: "err_code_typo",
  code_length: "err_code_length",
  device_storage: "err_device_storage",
  pow_failed: "err_pow",
  wrong_vault: "err_wrong_vault",
  too_large: "err_too_large",
  type: "err_type",
  photo: "err_photo",
};

// The French text of an error: the server's when it gave one, else ours for its code.
function message(err, vars = {}) {
  if (err instanceof core.VaultError) {
    if (err.serverMessage) return err.serverMessage;
    if (ERROR_KEYS[err.code]) return t(ERROR_KEYS[err.code], vars);
  }
  console.warn("visio-permanence: vault error", err);
  return t("err_generic");
}

function setError(id, err, vars) {
  const node = $(id);
  if (!node) return;
  node.textContent = err ? (typeof err === "string" ? err : message(err, vars)) : "";
  show(node, Boolean(err));
}

function setText(id, text) {
  const node = $(id);
  if (node) node.textContent = text ?? "";
}

function formatDate(value) {
  if (!value) return "";
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  const date = match ? new Date(Number(match[1]), Number(match[2]) - 1, Number(match[3])) : new Date(value);
  return Number.isNaN(date.getTime()) ? "" : dateFormat.format(date);
}

function formatSize(bytes) {
  const mb = bytes / (1024 * 1024);
  if (mb >= 1) return t("mb", { value: numberFormat.format(mb) });
  return t("kb", { value: numberFormat.format(Math.max(1, Math.round(bytes / 1024))) });
}

function busy(button, on_) {
  if (button) button.disabled = on_;
}

// The app's pieces the lazily loaded modules use.
const app = {
  config,
  urls,
  core,
  t,
  go,
  message,
  setError,
  setText,
  announce,
  formatDate,
  get client() {
    return client;
  },
  set client(value) {
    client = value;
  },
  openDocs,
  openSettings,
};

function load(name) {
  lazy[name] ??= {
    sheet: () => import("./vault-sheet.js"),
    restore: () => import("./vault-restore.js"),
    trust: () => import("./vault-trust.js"),
    export: () => import("./vault-export.js"),
  }[name]().then((module) => module.setup?.(app) ?? module);
  return lazy[name].catch((err) => {
    delete lazy[name];
    throw new core.VaultError("network", null, { cause: err });
  });
}

// --- Start ----------------------------------------------------------------------------------------

// `#code=…` (the QR code of the recovery sheet): read, then removed from the address bar and
// the history, so that it stays on no screen. It never reaches the server (a fragment).
function codeFromAddress() {
  const match = /(?:^#|&)code=([^&]*)/.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, "", location.pathname + location.search);
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return null;
  }
}

async function start() {
  wire();
  const code = codeFromAddress();
  if (!core.supported()) {
    go("unsupported");
    return;
  }
  const device = await core.loadDevice();
  if (device) {
    client = new core.VaultClient(device, urls);
    await openDocs({ focus: false });
    return;
  }
  const waiting = await core.loadPendingRecovery();
  if (waiting) {
    (await load("restore")).resumePairing(waiting);
    return;
  }
  if (code) {
    (await load("restore")).withCode(code);
    return;
  }
  go("intro", { focus: false });
}

function wire() {
  for (const button of document.querySelectorAll("button.back[data-step]")) {
    on(button, "click", () => (button.dataset.step === "docs" ? openDocs() : button.dataset.step === "settings" ? openSettings() : go(button.dataset.step)));
  }
  on($("go-create"), "click", startCreate);
  on($("go-restore"), "click", () => openRestore());
  on($("create-form"), "submit", (event) => {
    event.preventDefault();
    create();
  });
  on($("print-sheet"), "click", () => window.print());
  on($("sheet-kept"), "click", askGroup);
  on($("check-form"), "submit", (event) => {
    event.preventDefault();
    checkCode();
  });
  on($("take-photo"), "click", () => $("photo-input").click());
  on($("choose-file"), "click", () => $("file-input").click());
  on($("photo-input"), "change", (event) => chosen(event.target, true));
  on($("file-input"), "change", (event) => chosen(event.target, false));
  on($("add-form"), "submit", (event) => {
    event.preventDefault();
    addDocument();
  });
  on($("add-cancel"), "click", () => {
    pending = null;
    openDocs();
  });
  on($("docs-list"), "click", onDocAction);
  on($("docs-retry"), "click", () => openDocs());
  on($("viewer-close"), "click", closeViewer);
  on($("edit-form"), "submit", (event) => {
    event.preventDefault();
    saveEdit();
  });
  on($("remove-yes"), "click", removeDocument);
  on($("go-settings"), "click", () => openSettings());
  on($("trustees-list"), "click", onRevoke);
  on($("add-trustee"), "click", async () => {
    try {
      (await load("trust")).later();
    } catch (err) {
      setError("settings-error", err);
    }
  });
  on($("contact-form"), "submit", (event) => {
    event.preventDefault();
    saveContact(false);
  });
  on($("contact-remove"), "click", () => saveContact(true));
  on($("export"), "click", exportAll);
  on($("go-erase"), "click", () => {
    setError("erase-error", null);
    go("erase");
  });
  on($("erase-yes"), "click", eraseVault);
  on($("go-forget"), "click", () => go("forget"));
  on($("forget-yes"), "click", forgetHere);
}

async function openRestore() {
  const button = $("go-restore");
  busy(button, true);
  try {
    (await load("restore")).open();
  } catch (err) {
    announce(message(err));
  } finally {
    busy(button, false);
  }
}

// --- Creation -------------------------------------------------------------------------------------

// The proof of work is solved while the person reads the warning.
function solvePow() {
  powJob ??= core
    .fetchChallenge(urls)
    .then((challenge) => (challenge ? core.solveChallenge(challenge, config.pow_worker) : null));
  powJob.catch(() => {
    powJob = null;
  });
  return powJob;
}

function startCreate() {
  setError("create-error", null);
  setText("create-status", "");
  go("create");
  solvePow().catch(() => {}); // said when the person presses the button
}

async function create() {
  const button = $("create-button");
  busy(button, true);
  setError("create-error", null);
  setText("create-status", t("creating"));
  try {
    let made = null;
    for (let attempt = 0; attempt < 2 && !made; attempt += 1) {
      const altcha = await solvePow();
      try {
        made = await core.createVault(urls, {
          shareFacts: $("share-facts").checked,
          altcha,
          context: config.context ?? null,
        });
      } catch (err) {
        powJob = null; // a proof counts once: a new one for the next try
        if (attempt > 0 || !(err instanceof core.VaultError) || !/^pow_/.test(err.code)) throw err;
      }
    }
    client = new core.VaultClient(made.device, urls);
    fresh = { K: made.K, code: made.code };
    setText("create-status", "");
    announce(t("created"));
    showSheet();
  } catch (err) {
    setText("create-status", "");
    setError("create-error", err);
  } finally {
    busy(button, false);
  }
}

async function showSheet() {
  // Group by group, so that a narrow screen wraps between groups, never inside one.
  const groups = fresh.code.split("-");
  $("sheet-code").replaceChildren(
    ...groups.map((group, i) => el("span", { className: "code-group", textContent: i < groups.length - 1 ? `${group}-` : group })),
  );
  go("sheet");
  try {
    const sheet = await load("sheet");
    sheet.drawQr($("sheet-qr"), `${config.page_url}#code=${fresh.code}`, t("qr_label"));
  } catch (err) {
    console.warn("visio-permanence: the QR code could not be drawn", err);
  }
}

function askGroup() {
  checkGroup = 1 + (crypto.getRandomValues(new Uint8Array(1))[0] % 5);
  setText("check-label", t("group_prompt", { n: checkGroup }));
  $("check-group").value = "";
  setError("check-error", null);
  $("check-group").removeAttribute("aria-invalid");
  go("check");
}

function normalise(text) {
  return String(text).toUpperCase().replace(/[\s-]/g, "").replace(/O/g, "0").replace(/[IL]/g, "1");
}

async function checkCode() {
  const input = $("check-group");
  const expected = fresh.code.split("-")[checkGroup - 1];
  if (normalise(input.value) !== expected) {
    setError("check-error", t("group_wrong"));
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", "check-error");
    input.focus();
    return;
  }
  announce(t("group_ok"));
  try {
    (await load("trust")).offer(fresh.K, () => {
      fresh = null;
      openDocs();
    });
  } catch (err) {
    fresh = null;
    openDocs();
  }
}

// --- Documents ------------------------------------------------------------------------------------

// Loads the vault's state and shows the documents. A vault the server no longer knows (deleted
// on another device, or after the retention period) is forgotten here.
async function openDocs({ focus = true } = {}) {
  // The recovery code leaves the page once the person moved on (it was shown once).
  fresh = null;
  setText("sheet-code", "");
  $("sheet-qr")?.replaceChildren();
  go("docs", { focus });
  setError("docs-error", null);
  show($("docs-retry"), false);
  if (!current) setText("docs-status", t("opening"));
  try {
    current = await client.state();
    setText("docs-status", "");
    renderDocs();
  } catch (err) {
    setText("docs-status", "");
    show($("docs-retry"), true);
    if (err instanceof core.VaultError && err.status === 401) {
      await core.forgetDevice();
      client = null;
      current = null;
      go("intro");
      announce(t("err_gone"));
      return;
    }
    setError("docs-error", err);
  }
}

function sortedDocuments() {
  const added = (doc) => doc.meta?.added_at ?? doc.created_at ?? "";
  return [...(current?.documents ?? [])].sort((a, b) => added(b).localeCompare(added(a)));
}

function renderDocs() {
  const list = $("docs-list");
  const documents = sortedDocuments();
  list.replaceChildren(...documents.map(docItem));
  show($("docs-empty"), documents.length === 0);
}

function docItem(doc) {
  const nameId = `doc-name-${doc.id}`;
  const meta = doc.meta;
  const button = (action, label, cls = "btn") => {
    const node = el("button", { type: "button", className: cls, textContent: label });
    Object.assign(node.dataset, { action, id: doc.id });
    return node;
  };
  const item = el("li", { className: "doc" });
  if (!meta) {
    item.append(el("h3", { id: nameId, className: "doc-name", textContent: t("damaged_name") }));
    item.append(el("p", { className: "error", textContent: t("err_tampered") }));
    const remove = button("remove", t("delete"), "btn btn-danger");
    remove.setAttribute("aria-describedby", nameId);
    item.append(el("div", { className: "button-row" }, remove));
    return item;
  }
  item.append(el("p", { className: "doc-category", textContent: categoryLabels.get(meta.category) ?? meta.category }));
  item.append(el("h3", { id: nameId, className: "doc-name", textContent: meta.name }));
  const facts = el("p", { className: "doc-facts" });
  const lines = [t("added_on", { date: formatDate(meta.added_at ?? doc.created_at) })];
  if (meta.expires_on) {
    const past = new Date(`${meta.expires_on}T23:59:59`) < new Date();
    lines.push(t(past ? "expired" : "valid_until", { date: formatDate(meta.expires_on) }));
  }
  lines.push(t("size", { size: formatSize(meta.size ?? doc.size) }));
  lines.forEach((line, i) => facts.append(...(i ? [el("br"), line] : [line])));
  item.append(facts);
  const actions = [
    button("open", t("open"), "btn btn-primary"),
    button("download", t("download")),
    button("rename", t("rename")),
    button("remove", t("delete"), "btn btn-danger"),
  ];
  for (const action of actions) action.setAttribute("aria-describedby", nameId);
  item.append(el("div", { className: "button-row doc-actions" }, ...actions));
  return item;
}

function onDocAction(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const { action, id } = button.dataset;
  if (action === "open" || action === "download") openDocument(id, action, button);
  else if (action === "rename") startEdit(id);
  else if (action === "remove") askRemove(id);
}

function closeViewer() {
  show($("viewer"), false);
  $("viewer-body")?.replaceChildren();
  if (viewerUrl) URL.revokeObjectURL(viewerUrl);
  viewerUrl = null;
}

function fileName(meta) {
  const ext = { "application/pdf": ".pdf", "image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp" }[meta.mime] ?? "";
  const base = String(meta.name || "document").replace(/[\\/:*?"<>|\u0000-\u001f]+/g, " ").trim() || "document";
  return base.toLowerCase().endsWith(ext) ? base : base + ext;
}

// Decrypts a document here. A tampered one shows the French error and nothing else.
async function openDocument(id, action, button) {
  closeViewer();
  setError("docs-error", null);
  setText("docs-status", t("decrypting"));
  busy(button, true);
  try {
    const { meta, bytes } = await client.read(id);
    const blob = new Blob([bytes], { type: meta.mime || "application/octet-stream" });
    viewerUrl = URL.createObjectURL(blob);
    const download = $("viewer-download");
    download.href = viewerUrl;
    download.download = fileName(meta);
    setText("docs-status", "");
    if (action === "download") {
      download.click();
      announce(t("downloaded", { name: meta.name }));
      return;
    }
    const body = $("viewer-body");
    if (meta.mime?.startsWith("image/")) {
      body.append(el("img", { src: viewerUrl, alt: meta.name, className: "viewer-image" }));
    } else if (meta.mime === "application/pdf") {
      body.append(
        el("p", {}, el("a", { href: viewerUrl, target: "_blank", rel: "noopener", className: "btn btn-primary btn-big", id: "viewer-pdf", textContent: t("open_pdf") })),
      );
    }
    setText("viewer-title", meta.name);
    show($("viewer"), true);
    $("viewer-title").focus();
    announce(t("opened", { name: meta.name }));
  } catch (err) {
    closeViewer();
    setText("docs-status", "");
    setError("docs-error", err);
  } finally {
    busy(button, false);
  }
}

// --- Adding ---------------------------------------------------------------------------------------

function guessType(file) {
  if (FILE_TYPES.includes(file.type)) return file.type;
  const ext = /\.([a-z0-9]+)$/i.exec(file.name ?? "")?.[1]?.toLowerCase();
  return { pdf: "application/pdf", jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", webp: "image/webp" }[ext] ?? file.type;
}

function chosen(input, photo) {
  const file = input.files?.[0];
  input.value = "";
  if (!file) return;
  setError("docs-error", null);
  if (!photo && !FILE_TYPES.includes(guessType(file))) {
    setError("docs-error", t("err_type"));
    return;
  }
  pending = { file, photo };
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
  const preview = $("add-preview");
  if (photo || guessType(file).startsWith("image/")) {
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    show(preview, true);
  } else {
    preview.removeAttribute("src");
    show(preview, false);
  }
  setText("add-file", photo ? "" : file.name);
  $("add-name").value = photo ? t("photo_name", { date: dateFormat.format(new Date()) }) : file.name.replace(/\.[a-z0-9]{2,4}$/i, "");
  $("add-category").value = "";
  $("add-expiry").value = "";
  setError("add-error", null);
  show($("add-progress-row"), false);
  busy($("add-button"), false);
  go("add");
}

// A photo as a readable JPEG: at most PHOTO_MAX_SIDE pixels, EXIF orientation applied.
async function downscale(file) {
  let source;
  try {
    source = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    const url = URL.createObjectURL(file);
    try {
      source = new Image();
      source.src = url;
      await source.decode();
    } catch (err) {
      throw new core.VaultError("photo", null, { cause: err });
    } finally {
      URL.revokeObjectURL(url);
    }
  }
  const width = source.width || source.naturalWidth;
  const height = source.height || source.naturalHeight;
  const scale = Math.min(1, PHOTO_MAX_SIDE / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  canvas.getContext("2d").drawImage(source, 0, 0, canvas.width, canvas.height);
  source.close?.();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", PHOTO_QUALITY));
  if (!blob) throw new core.VaultError("photo");
  return blob;
}

function tooLarge(size) {
  return Number.isInteger(limits.max_document_bytes) && size + GCM_OVERHEAD > limits.max_document_bytes;
}

async function addDocument() {
  const form = $("add-form");
  if (!pending || !form.reportValidity()) return;
  const button = $("add-button");
  busy(button, true);
  setError("add-error", null);
  const progress = $("add-progress");
  progress.value = 0;
  show($("add-progress-row"), true);
  setText("add-status", t("encrypting"));
  try {
    let blob = pending.file;
    let mime = guessType(blob);
    if (pending.photo || (mime.startsWith("image/") && tooLarge(blob.size))) {
      blob = await downscale(blob);
      mime = "image/jpeg";
    }
    if (tooLarge(blob.size)) {
      throw new core.VaultError("too_large");
    }
    const name = $("add-name").value.trim();
    const doc = await client.add(
      blob,
      { name, mime, category: $("add-category").value, expires_on: $("add-expiry").value || null },
      {
        onProgress: (share) => {
          const percent = Math.round(share * 100);
          progress.value = percent;
          setText("add-status", t("uploading", { percent }));
        },
      },
    );
    pending = null;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    await openDocs();
    announce(t("added", { name: doc.meta?.name ?? name }));
    setText("docs-status", t("added", { name: doc.meta?.name ?? name }));
  } catch (err) {
    show($("add-progress-row"), false);
    const size = pending?.file ? formatSize(pending.file.size) : "";
    setError("add-error", err, { size, max: formatSize(limits.max_document_bytes ?? 0) });
    busy(button, false);
  }
}

// --- Renaming and deleting ------------------------------------------------------------------------

function startEdit(id) {
  const doc = current?.documents.find((d) => d.id === id);
  if (!doc?.meta) return;
  editing = id;
  $("edit-name").value = doc.meta.name;
  $("edit-category").value = doc.meta.category;
  $("edit-expiry").value = doc.meta.expires_on ?? "";
  setError("edit-error", null);
  go("edit");
}

async function saveEdit() {
  if (!editing || !$("edit-form").reportValidity()) return;
  try {
    await client.rename(editing, {
      name: $("edit-name").value.trim(),
      category: $("edit-category").value,
      expires_on: $("edit-expiry").value || null,
    });
    editing = null;
    await openDocs();
    setText("docs-status", t("renamed"));
  } catch (err) {
    setError("edit-error", err);
  }
}

function askRemove(id) {
  const doc = current?.documents.find((d) => d.id === id);
  if (!doc) return;
  removing = id;
  setText("remove-text", t("confirm_delete", { name: doc.meta?.name ?? t("damaged_name") }));
  setError("remove-error", null);
  go("remove");
}

async function removeDocument() {
  const button = $("remove-yes");
  busy(button, true);
  try {
    await client.remove(removing);
    removing = null;
    await openDocs();
    setText("docs-status", t("deleted"));
  } catch (err) {
    setError("remove-error", err);
  } finally {
    busy(button, false);
  }
}

// --- Settings -------------------------------------------------------------------------------------

async function openSettings() {
  go("settings");
  setError("settings-error", null);
  setText("export-status", "");
  try {
    current = await client.state();
  } catch (err) {
    setError("settings-error", err);
  }
  renderSettings();
}

function renderSettings() {
  const vault = current?.vault;
  if (vault?.usage) {
    const usage = vault.usage;
    const bar = $("usage-bar");
    bar.value = usage.max_bytes ? Math.min(100, Math.round((usage.bytes / usage.max_bytes) * 100)) : 0;
    setText(
      "usage-text",
      tn("usage", usage.documents, {
        used: formatSize(usage.bytes),
        max: formatSize(usage.max_bytes),
        max_count: usage.max_documents,
      }),
    );
  }
  show($("contact-state"), Boolean(vault?.has_contact));
  const trustees = current?.trustees ?? [];
  const trusteeItems = trustees.map((trustee) => {
    const vars = { name: trustee.name, association: trustee.association ?? "", date: formatDate(trustee.revoked_at ?? trustee.created_at) };
    if (trustee.revoked_at) return el("li", { className: "muted", textContent: t("trustee_gone", vars) });
    const revoke = el("button", { type: "button", className: "btn btn-danger", textContent: t("revoke", vars) });
    revoke.dataset.grant = trustee.id;
    return el("li", {}, el("p", { textContent: t("trustee_active", vars) }), revoke);
  });
  $("trustees-list").replaceChildren(...(trusteeItems.length ? trusteeItems : [el("li", { className: "muted", textContent: t("no_trustee") })]));
  const events = (current?.events ?? []).map((event) => {
    const who = event.trustee;
    const trustee = typeof who === "string" ? who : who?.name ? (who.association ? `${who.name} (${who.association})` : who.name) : t("someone");
    const key = `event_${event.kind}`;
    const text = config.i18n?.[key] ? t(key, { date: formatDate(event.at), trustee }) : formatDate(event.at);
    return el("li", { textContent: text });
  });
  $("events-list").replaceChildren(...events);
}

async function onRevoke(event) {
  const button = event.target.closest("button[data-grant]");
  if (!button) return;
  busy(button, true);
  try {
    await client.revokeTrustee(button.dataset.grant);
    current = await client.state();
    renderSettings();
    setText("settings-status", t("trustee_revoked"));
  } catch (err) {
    setError("settings-error", err);
    busy(button, false);
  }
}

async function saveContact(remove) {
  setError("settings-error", null);
  const phone = $("contact-phone").value.trim();
  const email = $("contact-email").value.trim();
  const body = {};
  if (!remove && phone) body.phone = phone;
  if (!remove && email) body.email = email;
  if (!remove && !phone && !email) {
    $("contact-phone").focus();
    return;
  }
  try {
    const vault = await client.setContact(body);
    if (current) current.vault = vault;
    if (remove) {
      $("contact-phone").value = "";
      $("contact-email").value = "";
    }
    show($("contact-state"), Boolean(vault?.has_contact));
    setText("settings-status", t(remove ? "contact_removed" : "contact_saved"));
  } catch (err) {
    setError("settings-error", err);
  }
}

async function exportAll() {
  const button = $("export");
  busy(button, true);
  setError("settings-error", null);
  try {
    const documents = (await client.state()).documents;
    if (!documents.length) {
      setText("export-status", t("export_empty"));
      return;
    }
    const exporter = await load("export");
    const { blob, skipped } = await exporter.exportAll(
      client,
      documents,
      (done, total) => setText("export-status", t("export_progress", { done, total })),
      categoryLabels,
    );
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: `coffre-fort-${new Date().toISOString().slice(0, 10)}.zip` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    setText("export-status", skipped ? `${t("export_done")} ${tn("export_skipped", skipped)}` : t("export_done"));
  } catch (err) {
    setText("export-status", "");
    setError("settings-error", err);
  } finally {
    busy(button, false);
  }
}

async function eraseVault() {
  const button = $("erase-yes");
  busy(button, true);
  try {
    await client.removeVault();
    client = null;
    current = null;
    go("erased");
  } catch (err) {
    setError("erase-error", err);
  } finally {
    busy(button, false);
  }
}

// A borrowed device (a computer at the association): the keys leave this browser, the vault
// stays on the server for the person's other devices and their recovery code.
async function forgetHere() {
  await core.forgetDevice();
  client = null;
  current = null;
  go("forgotten");
}

start().catch((err) => {
  console.error("visio-permanence: the vault page could not start", err);
  go("intro");
});
