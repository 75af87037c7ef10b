// The rights check (issue 16), loaded only when the volunteer presses "Vérifier les droits" (in
// the room, or on the handoff sheet's form): the room's first load stays as small as it was.
// Its markup and French strings come then too (`GET …/droits`, rights/_form.html). The form
// asks with skip logic, sends the answers as JSON, shows the server's French errors beside
// their fields, then the result; it puts the benefits to claim on the handoff sheet, and in the
// room shows the form and the result to the person over the data channel (`rights-form`,
// `rights-result`, `rights-close`: signaling/PROTOCOL.md).
import { $, on, show, el, t, tn, config, announce } from "./common.js";

const MAX_CHILDREN_INPUTS = 10;
const MAX_ITEMS = 40;
const MAX_TEXT = 200;
const TENANTS = new Set(["tenant", "social_tenant"]);

let rc = null; // the parts' settings: urls, csrf_token, available, stored
let loading = null;
let options = {}; // {container, share(message) → bool, onOpen(), onClose()}
let ui = null;
let sharing = false;
let shareTimer = 0;
let view = null; // the last result in words (the server's `view`)
let personView = null; // the same in the person's language (`person_view`), if not French
let communesFor = ""; // the postal code the commune list was filled for
// The same form in the person's language (a detached document, never shown here), when they
// read another language than French: what they are shown names questions and answers with it.
let theirs = null;
let theirsLoading = null;

// The form's parts in the page (fetched once; a failed fetch is tried again next time).
async function ready(partsUrl, container) {
  if (rc) return;
  loading ??= (async () => {
    const response = await fetch(partsUrl, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const html = new DOMParser().parseFromString(await response.text(), "text/html");
    const data = JSON.parse(html.getElementById("vp-rights")?.textContent ?? "null");
    if (!data?.urls) throw new Error("the rights parts hold no config");
    container.replaceChildren(...[...html.body.children].filter((node) => node.localName !== "script")
      .map((node) => document.importNode(node, true)));
    config.i18n = { ...(config.i18n ?? {}), ...data.i18n };
    rc = data;
    wire();
  })().finally(() => {
    loading = null;
  });
  await loading;
}

// Opens the panel. `share`: sends a data-channel message to the person, false when not
// connected (the room only).
export async function openRights(opts) {
  options = opts;
  await ready(opts.partsUrl, opts.container);
  show($("rights-panel"), true);
  options.onOpen?.();
  $("rights-title").focus();
}

// The person's page reconnected: show it again what it was shown.
export function resend() {
  if (sharing) sendAll();
}

// The session ended: nobody to show anything to.
export function stopSharing() {
  if (!ui) return;
  sharing = false;
  show(ui.shareRow, false);
  ui.shareState.textContent = "";
}

function close() {
  if (sharing) toggleShare();
  show($("rights-panel"), false);
  options.onClose?.();
}

function wire() {
  ui = {
    panel: $("rights-panel"),
    form: $("rights-form"),
    summary: $("rights-summary"),
    status: $("rights-status"),
    submit: $("rights-submit"),
    children: $("rights-children"),
    childCount: $("rights-children-count"),
    postal: $("rights-postal"),
    commune: $("rights-commune"),
    keep: $("rights-keep"),
    result: $("rights-result"),
    source: $("rights-source"),
    lines: $("rights-lines"),
    amounts: $("rights-amounts"),
    put: $("rights-put"),
    remove: $("rights-remove"),
    sheetState: $("rights-sheet-state"),
    shareRow: $("rights-share-row"),
    share: $("rights-share"),
    shareState: $("rights-share-state"),
  };
  on($("rights-close"), "click", close);
  if (!ui.form) return; // the check is not available on this server
  on(ui.form, "submit", submit);
  on(ui.form, "change", changed);
  on(ui.form, "input", (event) => {
    if (event.target === ui.postal) loadCommunes();
    if (event.target === ui.childCount) skips();
    shareSoon();
  });
  on(ui.put, "click", () => putOnSheet(true));
  on(ui.remove, "click", () => putOnSheet(false));
  on(ui.share, "click", toggleShare);
  show(ui.shareRow, Boolean(options.share));
  skips();
  if (rc.stored) restore(rc.stored);
}

function changed() {
  skips();
  shareSoon();
}

// --- Reading and filling the form -------------------------------------------------------------

const radio = (name) => ui.form.querySelector(`input[name="${name}"]:checked`)?.value ?? null;

function setRadio(name, value) {
  for (const input of ui.form.querySelectorAll(`input[name="${name}"]`)) input.checked = input.value === value;
}

function childCount() {
  const count = Number.parseInt(ui.childCount.value, 10);
  return Number.isFinite(count) && count > 0 ? count : 0;
}

// Skip logic: the partner's questions for a couple, the children's ages if there are
// children, the rent for a tenant, the disability rate if a handicap is recognised.
function skips() {
  const couple = radio("rights-couple") === "1";
  const housing = radio("rights-housing");
  const count = childCount();
  for (const node of ui.panel.querySelectorAll("[data-when]")) {
    const when = node.dataset.when;
    let visible = false;
    if (when === "couple") visible = couple;
    else if (when === "tenant") visible = TENANTS.has(housing);
    else if (when === "children") visible = count > 0;
    else if (when.startsWith("handicap")) visible = radio(`rights-a${when.slice(8)}-handicap`) === "1";
    node.hidden = !visible;
  }
  childInputs(count);
}

function childInputs(count) {
  const wanted = Math.min(count, MAX_CHILDREN_INPUTS);
  const rows = [...ui.children.children];
  for (const row of rows.slice(wanted)) row.remove();
  for (let i = rows.length; i < wanted; i++) {
    const id = `rights-child-${i}`;
    const input = el("input", {
      type: "number", id, min: 0, max: 24, step: 1, inputMode: "numeric", autocomplete: "off", className: "rights-short",
    });
    input.dataset.path = `children.${i}`;
    input.setAttribute("aria-describedby", `${id}-help`);
    const row = el("div", { className: "form-row" },
      el("label", { htmlFor: id }, t("rights_child_age", { n: i + 1 })),
      el("span", { className: "muted", id: `${id}-help` }, t("rights_child_help")),
      el("p", { className: "error", id: `${id}-error`, hidden: true }),
      input);
    ui.children.append(row);
  }
}

function amount(id) {
  return $(id).value.trim();
}

function answers() {
  const couple = radio("rights-couple");
  const adults = [];
  for (const i of couple === "1" ? [0, 1] : [0]) {
    const handicap = radio(`rights-a${i}-handicap`);
    adults.push({
      age: $(`rights-a${i}-age`).value.trim(),
      activity: $(`rights-a${i}-activity`).value,
      salary: amount(`rights-a${i}-salary`),
      unemployment: amount(`rights-a${i}-unemployment`),
      pension: amount(`rights-a${i}-pension`),
      // Yes without a rate is an answer to correct, not "none".
      disability: handicap === "1" ? $(`rights-a${i}-disability`).value || "unset" : "none",
    });
  }
  const count = childCount();
  const children = count > MAX_CHILDREN_INPUTS
    ? new Array(Math.min(count, 99)).fill(0) // the server says how many it takes
    : [...ui.children.querySelectorAll("input")].map((input) => input.value.trim());
  const housing = radio("rights-housing");
  return {
    couple: couple === null ? null : couple === "1",
    adults,
    children,
    housing,
    rent: TENANTS.has(housing) ? amount("rights-rent") : null,
    postal_code: ui.postal.value.trim(),
    commune: ui.commune.value,
    received: [...ui.form.querySelectorAll('input[name="rights-received"]:checked')].map((input) => input.value),
  };
}

const shown = (value) => (value ? String(value).replace(".", ",") : "");

// A stored check back in the form (its answers, if they were kept) and its result.
function restore(stored) {
  const given = stored.check?.answers;
  if (given) {
    setRadio("rights-couple", given.couple ? "1" : "0");
    (given.adults ?? []).slice(0, 2).forEach((adult, i) => {
      $(`rights-a${i}-age`).value = adult.age ?? "";
      $(`rights-a${i}-activity`).value = adult.activity ?? "";
      $(`rights-a${i}-salary`).value = shown(adult.salary);
      $(`rights-a${i}-unemployment`).value = shown(adult.unemployment);
      $(`rights-a${i}-pension`).value = shown(adult.pension);
      setRadio(`rights-a${i}-handicap`, adult.disability && adult.disability !== "none" ? "1" : "0");
      $(`rights-a${i}-disability`).value = adult.disability !== "none" ? adult.disability : "";
    });
    const ages = given.children ?? [];
    ui.childCount.value = String(ages.length);
    childInputs(ages.length);
    ages.forEach((age, i) => {
      const input = $(`rights-child-${i}`);
      if (input) input.value = String(age);
    });
    setRadio("rights-housing", given.housing ?? "");
    $("rights-rent").value = shown(given.rent);
    ui.postal.value = given.postal_code ?? "";
    for (const input of ui.form.querySelectorAll('input[name="rights-received"]')) {
      input.checked = (given.received ?? []).includes(input.value);
    }
    ui.keep.checked = Boolean(stored.check.keep_answers);
    loadCommunes(given.commune);
  }
  skips();
  showResult(stored);
}

// --- Communes -----------------------------------------------------------------------------------

async function loadCommunes(wanted = null) {
  const postal = ui.postal.value.trim();
  if (!/^[0-9]{5}$/.test(postal)) {
    if (communesFor) fillCommunes([], null, t("rights_communes_wait"));
    communesFor = "";
    return;
  }
  if (postal === communesFor && !wanted) return;
  communesFor = postal;
  try {
    const url = `${rc.urls.communes}?${new URLSearchParams({ cp: postal })}`;
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    if (ui.postal.value.trim() !== postal) return; // typed on meanwhile
    const list = Array.isArray(data.communes) ? data.communes : [];
    fillCommunes(list, wanted);
    setError(ui.postal, list.length ? "" : t("rights_no_commune"));
  } catch (err) {
    console.warn("communes not loaded", err);
    communesFor = "";
  }
}

function fillCommunes(list, wanted, placeholder = t("rights_pick_commune")) {
  const options = list.map(({ code, name }) => el("option", { value: String(code) }, `${name} (${code})`));
  // One commune: chosen at once; several: the volunteer asks which.
  if (list.length !== 1) options.unshift(el("option", { value: "" }, list.length ? placeholder : t("rights_communes_wait")));
  ui.commune.replaceChildren(...options);
  if (wanted && list.some(({ code }) => code === wanted)) ui.commune.value = wanted;
  shareSoon();
}

// --- Errors -----------------------------------------------------------------------------------

function describedBy(control, id, add) {
  const ids = new Set((control.getAttribute("aria-describedby") ?? "").split(/\s+/).filter(Boolean));
  if (add) ids.add(id);
  else ids.delete(id);
  if (ids.size) control.setAttribute("aria-describedby", [...ids].join(" "));
  else control.removeAttribute("aria-describedby");
}

// The message beside a control ("" clears it).
function setError(control, text) {
  const box = $(`${control.id}-error`);
  if (!box) return false;
  box.textContent = text;
  show(box, Boolean(text));
  if (text) control.setAttribute("aria-invalid", "true");
  else control.removeAttribute("aria-invalid");
  describedBy(control, box.id, Boolean(text));
  return true;
}

function clearErrors() {
  for (const control of ui.panel.querySelectorAll("[aria-invalid]")) setError(control, "");
  ui.summary.textContent = "";
  show(ui.summary, false);
}

// The server's {path: message} beside their fields, the rest in the summary; focus goes to
// the first field to correct.
function showErrors(errors, message) {
  const unplaced = [];
  for (const [path, text] of Object.entries(errors)) {
    const control = ui.panel.querySelector(`[data-path="${CSS.escape(path)}"]`);
    if (!control || control.closest("[hidden]") || !setError(control, text)) unplaced.push(text);
  }
  ui.summary.textContent = [message, ...unplaced].filter(Boolean).join(" ");
  show(ui.summary, true);
  const first = ui.form.querySelector('[aria-invalid="true"]');
  if (first?.localName === "fieldset") first.querySelector("input")?.focus();
  else if (first) first.focus();
}

// --- Checking -----------------------------------------------------------------------------------

function post(url, body) {
  return fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": rc.csrf_token ?? "" },
    body: JSON.stringify(body),
  });
}

// {data} of a JSON answer, or {error: message}.
async function call(url, body) {
  try {
    const response = await post(url, body);
    const data = await response.json().catch(() => null);
    if (response.ok && data?.check) return { data };
    if (data?.error?.message) return { error: data.error };
    throw new Error(`HTTP ${response.status}`);
  } catch (err) {
    console.warn("rights check failed", err);
    return { error: { message: t("rights_failed") } };
  }
}

async function submit(event) {
  event.preventDefault();
  clearErrors();
  ui.submit.disabled = true;
  ui.status.textContent = t("rights_computing");
  const { data, error } = await call(rc.urls.check, { answers: answers(), keep_answers: ui.keep.checked });
  ui.submit.disabled = false;
  ui.status.textContent = "";
  if (error) {
    showErrors(error.errors ?? {}, error.message);
    return;
  }
  showResult(data);
  ui.status.textContent = t("rights_done");
  $("rights-result-title").focus();
}

function showResult({ check, view: words, person_view: theirs }) {
  if (!words) return;
  view = words;
  personView = theirs ?? null;
  ui.source.textContent = words.source;
  // What to talk about first (probably due, to check); the rest folded under one line.
  const main = words.lines.filter((line) => line.verdict !== "unlikely");
  const others = words.lines.filter((line) => line.verdict === "unlikely");
  ui.lines.replaceChildren(...(main.length ? main.map(resultLine) : [el("li", {}, t("rights_nothing"))]));
  $("rights-lines-others").replaceChildren(...others.map(resultLine));
  $("rights-others-summary").textContent = tn("rights_others", others.length);
  show($("rights-others"), others.length > 0);
  showSheetState(check);
  show(ui.result, true);
  if (sharing) sendAll();
}

function resultLine(line) {
  const verdict = el("p", { className: "rights-verdict" }, line.verdict_text);
  if (line.received) verdict.append(` (${t("rights_received")})`);
  const item = el("li", { className: "rights-line" },
    el("p", { className: "rights-label" }, el("strong", {}, line.label)),
    verdict,
    el("p", { className: "muted" }, line.reason),
    el("p", {}, el("a", { href: line.apply_url, target: "_blank", rel: "noopener" }, line.apply_label)));
  item.dataset.verdict = line.verdict;
  item.dataset.code = line.code;
  return item;
}

function showSheetState(check) {
  ui.amounts.checked = Boolean(check?.show_amounts);
  show(ui.remove, Boolean(check?.on_sheet));
  ui.sheetState.textContent = check?.on_sheet
    ? t(check.show_amounts ? "rights_sheet_on_amounts" : "rights_sheet_on")
    : t("rights_sheet_off");
}

async function putOnSheet(onSheet) {
  ui.put.disabled = true;
  ui.remove.disabled = true;
  const { data, error } = await call(rc.urls.sheet, { on_sheet: onSheet, show_amounts: ui.amounts.checked });
  ui.put.disabled = false;
  ui.remove.disabled = false;
  if (error) {
    ui.sheetState.textContent = error.message;
    return;
  }
  showSheetState(data.check);
  announce(ui.sheetState.textContent);
}

// --- Showing the person ---------------------------------------------------------------------------

const cut = (text) => String(text ?? "").trim().slice(0, MAX_TEXT);

// The form in the person's language (rights/_form.html rendered in it), fetched once when
// the result is first shown to them; null for a French reader or if it cannot be had.
async function loadTheirs() {
  if (theirs || !rc?.urls.person_form) return;
  theirsLoading ??= (async () => {
    try {
      const response = await fetch(rc.urls.person_form, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const data = JSON.parse(doc.getElementById("vp-rights")?.textContent ?? "null");
      theirs = { doc, i18n: data?.i18n ?? {} };
    } catch {
      theirs = null; // the person then reads the volunteer's words
    } finally {
      theirsLoading = null;
    }
  })();
  await theirsLoading;
}

// Words of the form for the person: from their language's copy when there is one.
function said(key, vars = {}) {
  const text = theirs?.i18n[key];
  return text ? text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m)) : t(key, vars);
}
const textOf = (node) => node?.textContent.trim() ?? "";
function labelFor(control) {
  if (control.id.startsWith("rights-child-")) {
    return said("rights_child_age", { n: Number(control.id.slice("rights-child-".length)) + 1 });
  }
  const label = `label[for="${control.id}"]`;
  return textOf(theirs?.doc.querySelector(label)) || textOf(ui.form.querySelector(label));
}
function legendOf(fieldset) {
  return textOf(theirs?.doc.getElementById(fieldset.id)?.querySelector("legend")) || textOf(fieldset.querySelector("legend"));
}
function choiceText(fieldset, input) {
  const same = theirs?.doc.getElementById(fieldset.id)?.querySelector(`input[value="${CSS.escape(input.value)}"]`);
  return textOf(same?.parentElement) || textOf(input.parentElement);
}
function optionText(select) {
  const same = theirs?.doc.getElementById(select.id)?.querySelector(`option[value="${CSS.escape(select.value)}"]`);
  return textOf(same) || textOf(select.selectedOptions[0]);
}

// The questions shown now, in order, with their answers in words, in the person's language
// when the server gave the form in it (else as the volunteer sees them).
function formItems() {
  const items = [];
  for (const control of ui.form.querySelectorAll("[data-path]")) {
    if (control.closest("[hidden]") || items.length >= MAX_ITEMS) continue;
    let question;
    let answer;
    if (control.localName === "fieldset") {
      question = legendOf(control);
      const checked = [...control.querySelectorAll("input:checked")].map((input) => choiceText(control, input));
      answer = checked.length ? checked.join(", ") : control.id === "rights-received" ? said("rights_none") : "";
    } else {
      question = labelFor(control);
      answer = control.localName === "select"
        ? (control.value ? optionText(control) : "")
        : control.value.trim() && `${control.value.trim()}${control.closest(".rights-euros") ? " €" : ""}`;
    }
    // "La personne · Âge", "Son conjoint ou sa conjointe · Âge".
    const adult = control.closest("[id^='rights-adult-']");
    if (adult) question = `${legendOf(adult)} · ${question}`;
    items.push({ q: cut(question), a: cut(answer || "—") });
  }
  return items;
}

// The result as the person reads it: in their language when the server gave it (`person_view`).
function resultMessage() {
  const words = personView ?? view;
  return {
    t: "rights-result",
    source: cut(words.source),
    notice: String(words.notice).slice(0, 400),
    // The person sees what to ask for (or check), not the list of what is probably not due.
    lines: words.lines.filter((line) => line.verdict !== "unlikely").slice(0, 20).map((line) => ({
      label: cut(line.label),
      verdict: line.verdict,
      text: cut(line.received ? `${line.verdict_text} (${words.received_text})` : line.verdict_text),
      reason: String(line.reason).slice(0, 400),
      url: line.apply_url,
      where: cut(line.apply_label),
      received: Boolean(line.received),
    })),
  };
}

function sendAll() {
  let sent = options.share({ t: "rights-form", items: formItems() });
  if (sent && view) sent = options.share(resultMessage());
  return sent;
}

function shareSoon() {
  if (!sharing) return;
  clearTimeout(shareTimer);
  shareTimer = setTimeout(() => options.share({ t: "rights-form", items: formItems() }), 400);
}

async function toggleShare() {
  if (!options.share) return;
  if (!sharing) {
    await loadTheirs();
    if (!sendAll()) {
      ui.shareState.textContent = t("rights_not_connected");
      return;
    }
    sharing = true;
  } else {
    sharing = false;
    clearTimeout(shareTimer);
    options.share({ t: "rights-close" });
  }
  ui.share.setAttribute("aria-pressed", String(sharing));
  ui.shareState.textContent = t(sharing ? "rights_shared" : "rights_unshared");
}
