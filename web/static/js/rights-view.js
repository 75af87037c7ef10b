// The rights check the volunteer shows the person (issue 16), read-only, in large simple French:
// the questions with their answers, then the result. Loaded with the first `rights-*` message
// of the data channel (signaling/PROTOCOL.md); each message is checked before anything shows,
// and only as text (never as markup). It is the person's own data: nothing leaves this page.
import { $, el, show, t, announce } from "./common.js";

const MAX_ITEMS = 40;
const MAX_LINES = 20;
const MAX_TEXT = 200;
const MAX_REASON = 400;
const VERDICTS = new Set(["likely", "unlikely", "check"]);

const isText = (value, max = MAX_TEXT) => typeof value === "string" && value.length <= max;

function httpsUrl(value) {
  if (!isText(value, 300)) return null;
  try {
    const url = new URL(value);
    return url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function validItems(msg) {
  return Array.isArray(msg.items) && msg.items.length <= MAX_ITEMS
    && msg.items.every((item) => item && isText(item.q) && isText(item.a));
}

function validResult(msg) {
  return isText(msg.source) && isText(msg.notice, MAX_REASON) && Array.isArray(msg.lines)
    && msg.lines.length <= MAX_LINES
    && msg.lines.every((line) => line && isText(line.label) && VERDICTS.has(line.verdict) && isText(line.text)
      && isText(line.reason, MAX_REASON) && httpsUrl(line.url) && isText(line.where)
      && typeof line.received === "boolean");
}

let announced = false;

function open() {
  const box = $("rights-view");
  if (box.hidden) {
    show(box, true);
    if (!announced) announce(t("rights_shown"));
    announced = true;
  }
}

function showForm(msg) {
  const list = $("rights-view-answers");
  list.replaceChildren(...msg.items.flatMap(({ q, a }) => [el("dt", {}, q), el("dd", {}, a)]));
  open();
}

function showResult(msg) {
  $("rights-view-notice").textContent = msg.notice;
  $("rights-view-source").textContent = msg.source;
  $("rights-view-lines").replaceChildren(...msg.lines.map((line) => {
    const item = el("li", { className: "rights-line" },
      el("p", { className: "rights-label" }, el("strong", {}, line.label)),
      el("p", { className: "rights-verdict" }, line.text),
      el("p", {}, line.reason),
      el("p", {}, el("a", { href: httpsUrl(line.url), target: "_blank", rel: "noopener noreferrer" }, line.where)));
    item.dataset.verdict = line.verdict;
    return item;
  }));
  show($("rights-view-result"), true);
  open();
}

function close() {
  show($("rights-view"), false);
  $("rights-view-answers").replaceChildren();
  $("rights-view-lines").replaceChildren();
  show($("rights-view-result"), false);
  announced = false;
}

// One message from the volunteer: shown if well-formed, ignored otherwise.
export function receive(msg) {
  if (msg.t === "rights-form" && validItems(msg)) showForm(msg);
  else if (msg.t === "rights-result" && validResult(msg)) showResult(msg);
  else if (msg.t === "rights-close") close();
  else console.warn("visio-permanence: a rights message was refused", msg.t);
}
