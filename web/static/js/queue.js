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
let latest = null;
let receivedAt = 0;

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
  if (person.reserved_for_id) {
    node.classList.add("is-reserved");
    const mine = person.reserved_for_id === config.user_id;
    const label = document.createElement("small");
    label.textContent = ` (${mine ? t("reserved_me") : t("reserved_other", { name: config.names?.[person.reserved_for_id] ?? "?" })})`;
    motif.append(label);
  }
  const waited = node.querySelector(".waited");
  waited.dataset.waited = String(person.waited_seconds);
  waited.textContent = waitedText(person.waited_seconds);
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

function render(queue) {
  latest = queue;
  receivedAt = performance.now();
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
  const elapsed = Math.floor((performance.now() - receivedAt) / 1000);
  for (const cell of ui.rows.querySelectorAll(".waited")) {
    cell.textContent = waitedText(Number(cell.dataset.waited) + elapsed);
  }
}, 15000);

function showError(message) {
  ui.error.textContent = message;
  show(ui.error, Boolean(message));
}

const signaling = connectQueue()
  .on("queue", render)
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
