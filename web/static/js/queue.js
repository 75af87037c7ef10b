// The volunteer's live drop-in queue: the list is pushed over /queue; the buttons are forms
// that this script sends over the socket (acknowledged) instead of reloading the page.
import { $, config, on, show, t } from "./common.js";
import { connectQueue } from "./signaling.js";

// The page config's entry_urls ({take, transfer, gone}) hold this in place of the entry id.
const ENTRY = "ENTRY";

const ui = {
  rows: $("queue-rows"),
  template: $("row-template"),
  status: $("queue-status"),
  count: $("queue-count"),
  online: $("queue-online"),
  error: $("queue-error"),
  transferred: $("queue-transferred"),
  removed: $("queue-removed"),
};
// Ticked people stay ticked when a push redraws the list.
const picked = new Set();
// The list as last pushed: a whole `queue` on connect, then each `queue_delta` applied to it
// (their versions follow each other; after a gap the page asks for the whole list again).
let latest = null;
let syncing = false;
// When each person's waited_seconds was true (performance.now()): a delta resends only the
// people who changed, so the others keep the time of an earlier push.
const waitedAt = new Map();

function waitedText(seconds) {
  return seconds < 60 ? t("seconds") : t("minutes", { minutes: Math.floor(seconds / 60) });
}

function row(person, index) {
  const node = ui.template.content.firstElementChild.cloneNode(true);
  node.dataset.entry = person.id;
  node.querySelector(".pos").textContent = String(index + 1);
  const pick = node.querySelector(".pick");
  pick.value = person.id;
  pick.checked = picked.has(person.id);
  pick.setAttribute("aria-label", t("choose", { position: index + 1 }));
  node.querySelector(".name").textContent = person.first_name || "—";
  const motif = node.querySelector(".motif");
  motif.textContent = person.motif || t("unknown");
  if (person.language) motif.append(" ", languageBadge(person));
  if (person.reserved_for_id) {
    node.classList.add("is-reserved");
    const mine = person.reserved_for_id === config.user_id;
    const label = document.createElement("small");
    label.textContent = ` (${mine ? t("reserved_me") : t("reserved_other", { name: config.names?.[person.reserved_for_id] ?? "?" })})`;
    motif.append(label);
  }
  const waited = node.querySelector(".waited");
  waited.dataset.waited = String(person.waited_seconds);
  waited.dataset.at = String(waitedAt.get(person.id) ?? performance.now());
  waited.textContent = waitedText(waitedNow(waited));
  show(node.querySelector(".offline"), !person.connected);
  for (const form of node.querySelectorAll("form")) {
    form.dataset.entry = person.id;
    form.action = config.entry_urls[form.dataset.action].replace(ENTRY, encodeURIComponent(person.id));
    const select = form.querySelector("select");
    if (select) {
      select.id = `to-${person.id}`;
      select.previousElementSibling?.setAttribute("for", select.id);
    }
  }
  return node;
}

// "Demande un bénévole parlant arabe", marked when this volunteer speaks it (as the page
// rendered without this script: web/templates/dropin/_language_badge.html).
function languageBadge(person) {
  const mine = (config.languages ?? []).includes(person.language);
  const badge = document.createElement("span");
  badge.className = "badge language-badge";
  badge.dataset.language = person.language;
  if (mine) badge.dataset.state = "connected";
  badge.textContent = t("language", { language: person.language_name ?? person.language }) + (mine ? ` · ${t("language_mine")}` : "");
  return badge;
}

function waitedNow(cell) {
  return Number(cell.dataset.waited) + Math.floor((performance.now() - Number(cell.dataset.at)) / 1000);
}

function stamp(people) {
  const now = performance.now();
  for (const person of people) waitedAt.set(person.id, now);
}

// A whole list: it replaces what the page had, whatever its version.
function onQueue(queue) {
  syncing = false;
  waitedAt.clear();
  stamp(queue.waiting);
  render(queue);
}

// What changed since version `base` (PROTOCOL.md; server/dropin/board.py apply_queue_delta).
function onDelta(delta) {
  if (!latest || delta.version <= latest.version) return; // before the whole list, or already in
  if (delta.base !== latest.version) {
    resync();
    return;
  }
  const gone = new Set(delta.removed);
  const people = new Map(latest.waiting.filter((p) => !gone.has(p.id)).map((p) => [p.id, p]));
  for (const id of gone) waitedAt.delete(id);
  let order = [...people.keys()];
  for (const person of delta.upserted) {
    if (!people.has(person.id)) order.push(person.id);
    people.set(person.id, person);
  }
  stamp(delta.upserted);
  if (delta.order) order = delta.order;
  const next = { ...latest, waiting: order.map((id) => people.get(id)) };
  for (const key of ["version", "server_time", "total", "open", "next_change", "handling_minutes", "volunteers"]) {
    if (key in delta) next[key] = delta[key];
  }
  render(next);
}

// A delta was missed: ask for the whole list (it comes as a `queue` event).
async function resync() {
  if (syncing) return;
  syncing = true;
  try {
    const answer = await signaling.request("queue_sync", {}, 10000);
    if (!answer?.ok) syncing = false;
  } catch {
    syncing = false; // no answer: the next delta tries again
  }
}

function render(queue) {
  latest = queue;
  ui.status.textContent = queue.open ? t("open") : t("closed");
  ui.status.className = queue.open ? "ok" : "muted";
  ui.count.textContent = queue.total ? t("waiting_n", { total: queue.total }) : t("nobody");
  ui.online.textContent = t("online_n", { names: queue.volunteers.map((v) => v.name).join(", ") || "—" });
  const present = new Set(queue.waiting.map((person) => person.id));
  for (const id of picked) if (!present.has(id)) picked.delete(id);
  ui.rows.replaceChildren(...queue.waiting.map(row));
}

on(document, "change", (event) => {
  const box = event.target.closest?.(".pick");
  if (!box) return;
  if (box.checked) picked.add(box.value);
  else picked.delete(box.value);
});

// The bulk "retirer": the ticked people, or everyone who joined in the last N minutes.
function removePayload(form, submitter) {
  const data = new FormData(form);
  const payload = { reason: data.get("reason") === "gone" ? "gone" : "removed" };
  if (submitter?.value === "recent") payload.since_minutes = Number(data.get("since_minutes"));
  else payload.entry_ids = [...document.querySelectorAll(".pick:checked")].map((box) => box.value);
  return payload;
}

// Wait times tick locally between pushes.
setInterval(() => {
  if (!latest) return;
  for (const cell of ui.rows.querySelectorAll(".waited")) cell.textContent = waitedText(waitedNow(cell));
}, 15000);

function showError(message) {
  ui.error.textContent = message;
  show(ui.error, Boolean(message));
}

const signaling = connectQueue()
  .on("queue", onQueue)
  .on("queue_delta", onDelta)
  .on("connect", () => showError(""))
  .on("disconnect", () => showError(t("disconnected")))
  .on("transferred", onTransferred);

function onTransferred(msg) {
  ui.transferred.replaceChildren();
  const text = document.createElement("span");
  text.textContent = t("transferred", { from: msg.from, name: msg.first_name ? ` (${msg.first_name})` : "" }) + " ";
  const link = document.createElement("a");
  link.className = "btn btn-primary";
  link.href = msg.url;
  link.textContent = t("open_room");
  ui.transferred.append(text, link);
  show(ui.transferred, true);
  link.focus();
}

// Every action form goes over the socket when it is up (the page still works without).
on(document, "submit", async (event) => {
  const form = event.target.closest("form[data-action]");
  if (!form || !signaling.connected) return;
  event.preventDefault();
  const action = form.dataset.action;
  let payload = action === "take_next" ? {} : { entry_id: form.dataset.entry };
  if (action === "transfer") payload.volunteer_id = Number(new FormData(form).get("volunteer_id"));
  if (action === "remove") {
    payload = removePayload(form, event.submitter);
    if (payload.entry_ids?.length === 0) {
      showError(t("nothing_chosen"));
      return;
    }
  }
  for (const button of form.querySelectorAll("button")) button.disabled = true;
  try {
    const answer = await signaling.request(action, payload, 10000);
    if (!answer?.ok) {
      showError(answer?.message ?? "");
      return;
    }
    showError("");
    if (action === "remove") {
      picked.clear();
      ui.removed.textContent = t("removed_n", { removed: answer.removed });
      show(ui.removed, true);
    }
    if (answer.url) location.assign(answer.url);
    else if (form.closest(".mine-list")) location.reload();
  } catch {
    if (event.submitter?.name) {
      form.append(Object.assign(document.createElement("input"), {
        type: "hidden", name: event.submitter.name, value: event.submitter.value,
      }));
    }
    form.submit(); // no answer over the socket: the plain form does it
  } finally {
    for (const button of form.querySelectorAll("button")) button.disabled = false;
  }
});
