// The person's vault in the room (issue 15), loaded only when they press "Montrer un document"
// or when the volunteer suggests keeping a photo: the room's first load stays as small as it was.
// Its markup and French strings come then too (`GET /b/coffre-fort`, beneficiary/_vault.html).
// A document is decrypted here (vault-core.js) and goes to the volunteer peer to peer over the
// data channel (transfer.js), never through the server; the page then tells the server that a
// document was shown, for the statistics (`vault-shown`, PROTOCOL.md). A photo the person sent
// can be added to their vault, encrypted here like any document.
import { $, on, show, el, t, config, announce } from "./common.js";
import { loadDevice, VaultClient } from "./vault-core.js";
import { limitsOf, sendFile } from "./transfer.js";

let parts = null; // {urls, categories, link, i18n} once the parts are in the page
let loading = null;
let categories = new Map();
let client = null;

// The vault parts in the page (fetched once; a failed fetch is tried again on the next use).
async function ready() {
  if (parts) return;
  loading ??= (async () => {
    const response = await fetch(config.vault.parts_url, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const html = new DOMParser().parseFromString(await response.text(), "text/html");
    const data = JSON.parse(html.getElementById("vp-vault")?.textContent ?? "null");
    if (!data?.urls) throw new Error("the vault parts hold no config");
    $("vault-parts").replaceChildren(...[...html.body.children].filter((node) => node.localName !== "script")
      .map((node) => document.importNode(node, true)));
    Object.assign(config.i18n, data.i18n);
    categories = new Map(data.categories.map(({ code, label }) => [code, label]));
    parts = data;
    wire();
  })().finally(() => {
    loading = null;
  });
  await loading;
}

// This device's vault client, or null when the device has no vault.
async function openVault() {
  if (client) return client;
  const device = await loadDevice();
  if (!device) return null;
  client = new VaultClient(device, parts.urls);
  return client;
}

function errorText(err, fallback) {
  if (err?.code === "tampered") return t("vault_tampered");
  return err?.serverMessage || t(fallback);
}

// --- "Montrer un document" ----------------------------------------------------------------

let picker = null;
let offer = null;

function wire() {
  picker = {
    dialog: $("vault-dialog"),
    form: $("vault-form"),
    status: $("vault-status"),
    docsSet: $("vault-docs-set"),
    docs: $("vault-docs"),
    how: $("vault-how"),
    send: $("vault-send"),
    link: $("vault-dialog-link"),
  };
  offer = {
    panel: $("vault-suggest"),
    title: $("vault-suggest-title"),
    photo: $("vault-suggest-photo"),
    add: $("vault-suggest-add"),
    category: $("vault-suggest-category"),
    yes: $("vault-suggest-yes"),
    open: $("vault-suggest-open"),
    no: $("vault-suggest-no"),
    status: $("vault-suggest-status"),
  };
  on(picker.form, "submit", sendChosen);
  on($("vault-cancel"), "click", closePicker);
  on(picker.dialog, "close", () => {
    pickerTask = null;
  });
  on(offer.yes, "click", addOffered);
  on(offer.no, "click", closeOffer);
}

let pickerTask = null; // {channels, notify, shown} of the picker open now

function closePicker() {
  pickerTask = null;
  if (picker.dialog.open) picker.dialog.close();
}

function documentChoice(doc, index, sendable) {
  const input = el("input", { type: "radio", name: "vault-doc", value: doc.id, id: `vault-doc-${index}` });
  const label = el("label", { htmlFor: input.id, className: "vault-doc" });
  if (!doc.meta) {
    input.disabled = true;
    label.append(input, " ", t("vault_damaged"));
    return label;
  }
  input.disabled = !sendable;
  const category = categories.get(doc.meta.category) ?? "";
  label.append(input, " ", el("span", { className: "vault-doc-name" }, doc.meta.name));
  if (category) label.append(" ", el("span", { className: "vault-doc-category" }, `(${category})`));
  if (!sendable) label.append(" ", el("span", { className: "muted" }, t("vault_not_sendable")));
  return label;
}

// Opens the picker: the documents of this device's vault, then how to show the chosen one.
// channels(): the open data channels; notify(text): the page's notice; shown(copy): after a
// document was sent (the page tells the server).
export async function pickDocument({ channels, notify, shown }) {
  await ready();
  pickerTask = { channels, notify, shown };
  picker.form.reset(); // "Montrer seulement" again, whatever was chosen last time
  picker.docs.replaceChildren();
  show(picker.docsSet, false);
  show(picker.how, false);
  show(picker.send, false);
  show(picker.link, false);
  picker.status.textContent = t("vault_loading");
  if (!picker.dialog.open) picker.dialog.showModal();
  let documents;
  try {
    const vault = await openVault();
    if (!vault) {
      picker.status.textContent = t("vault_none");
      show(picker.link, true);
      return;
    }
    documents = await vault.list();
  } catch (err) {
    console.warn("vault not listed", err);
    picker.status.textContent = errorText(err, "vault_list_error");
    return;
  }
  if (pickerTask === null) return; // closed meanwhile
  if (!documents.length) {
    picker.status.textContent = t("vault_empty");
    show(picker.link, true);
    return;
  }
  const limits = limitsOf("doc");
  documents.forEach((doc, index) => {
    const sendable = Boolean(doc.meta && limits?.types.includes(doc.meta.mime) && doc.meta.size <= limits.max_bytes);
    picker.docs.append(documentChoice(doc, index, sendable));
  });
  picker.status.textContent = "";
  show(picker.docsSet, true);
  show(picker.how, true);
  show(picker.send, true);
  picker.docs.querySelector("input:not(:disabled)")?.focus();
}

async function sendChosen(event) {
  event.preventDefault();
  const task = pickerTask;
  const chosen = picker.form.querySelector('input[name="vault-doc"]:checked');
  if (!task) return;
  if (!chosen) {
    picker.status.textContent = t("vault_choose");
    picker.docs.querySelector("input:not(:disabled)")?.focus();
    return;
  }
  const copy = picker.form.querySelector('input[name="vault-copy"]:checked')?.value === "copy";
  closePicker();
  const channels = task.channels();
  if (!channels.length) {
    task.notify(t("not_connected"));
    return;
  }
  task.notify(t("vault_sending"));
  let doc;
  try {
    doc = await client.read(chosen.value); // AES-GCM checks it: a changed byte fails here
  } catch (err) {
    console.warn("vault document not read", err);
    task.notify(errorText(err, "vault_read_error"));
    return;
  }
  try {
    let shown = -1; // the percentage last shown: one notice per 10 %
    const progress = (fraction) => {
      const percent = Math.floor(fraction * 10) * 10;
      if (percent === shown || percent >= 100) return;
      shown = percent;
      task.notify(t("vault_sending_progress", { percent }));
    };
    const fields = { name: doc.meta.name.slice(0, 120), copy };
    await sendFile("doc", { mime: doc.meta.mime, bytes: doc.bytes }, fields, channels, progress);
  } catch (err) {
    console.warn("vault document not sent", err);
    task.notify(t("vault_send_error"));
    return;
  }
  task.notify(t(copy ? "vault_copy_given" : "vault_shown"));
  task.shown(copy);
}


// --- The volunteer's suggestion: keep a photo in the vault ---------------------------------------

let offered = null; // {bytes, url} of the photo suggested now

function closeOffer() {
  if (offered) URL.revokeObjectURL(offered.url);
  offered = null;
  offer.photo.removeAttribute("src");
  show(offer.panel, false);
}

// The volunteer suggests keeping `photo` ({mime, bytes}, as the person sent it) in the vault.
export async function suggestPhoto(photo) {
  await ready();
  closeOffer();
  offered = { bytes: photo.bytes, mime: photo.mime, url: URL.createObjectURL(new Blob([photo.bytes], { type: photo.mime })) };
  offer.photo.src = offered.url;
  offer.status.textContent = "";
  let vault = null;
  try {
    vault = await openVault();
  } catch (err) {
    console.warn("vault device not read", err);
  }
  show(offer.add, Boolean(vault));
  show(offer.yes, Boolean(vault));
  show(offer.open, !vault);
  show(offer.panel, true);
  offer.yes.disabled = false;
  announce(t("vault_suggested"));
  offer.title.focus();
}

async function addOffered() {
  if (!offered || !client) return;
  const { bytes, mime } = offered;
  offer.yes.disabled = true;
  offer.status.textContent = t("vault_adding");
  try {
    const day = new Date().toLocaleDateString(document.documentElement.lang || "fr");
    await client.add(new Blob([bytes], { type: mime }), {
      name: t("vault_photo_name", { date: day }),
      mime,
      category: offer.category.value,
      expires_on: null,
    });
  } catch (err) {
    console.warn("photo not added to the vault", err);
    offer.status.textContent = errorText(err, "vault_add_error");
    offer.yes.disabled = false;
    return;
  }
  closeOffer();
  const notice = $("notice");
  notice.textContent = t("vault_added");
  announce(t("vault_added"));
}
