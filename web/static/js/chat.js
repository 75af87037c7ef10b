// The chat both pages share: `chat` messages on the data channel, shown in the log.
import { el, on, t, uid } from "./common.js";

const MAX_CHARS = 1000; // PROTOCOL.md: chat text ≤ 1000 chars

// The log keeps the last lines only, so that a flood of messages cannot exhaust memory.
const MAX_LINES = 300;

function addChatLine(log, who, text, mine) {
  const item = el("li", { className: mine ? "mine" : "theirs" }, el("strong", { textContent: `${who} : ` }), text);
  log.append(item);
  while (log.children.length > MAX_LINES) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
}

export const isChat = (msg) => msg.t === "chat" && typeof msg.text === "string";

// An incoming chat message (checked with isChat), signed `who`.
export function showChat(log, who, msg) {
  addChatLine(log, who, msg.text.slice(0, MAX_CHARS), false);
}

// The chat form. `send(message)` says whether anyone could receive it; if no one could,
// `notify` says so and the text stays in the input. `clearNotice`: a sent message also
// clears the page's notice.
export function setupChatForm({ form, input, log, send, notify, clearNotice = false }) {
  on(form, "submit", (event) => {
    event.preventDefault();
    const text = input.value.trim().slice(0, MAX_CHARS);
    if (!text) return;
    if (!send({ t: "chat", id: uid(), text })) {
      notify(t("not_connected"));
      return;
    }
    if (clearNotice) notify("");
    addChatLine(log, t("you"), text, true);
    input.value = "";
  });
  const button = form?.querySelector("button[type=submit]");
  if (button) button.disabled = false;
}
