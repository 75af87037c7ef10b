// Socket.IO connection to the /assist namespace (see signaling/PROTOCOL.md).
import { io } from "/static/vendor/socket.io.esm.min.js";
import { t } from "./common.js";

const SERVER_EVENTS = ["welcome", "peer-joined", "peer-left", "offer", "answer", "candidate", "state", "ended"];
const REFUSALS = ["unauthorized", "forbidden", "session_ended", "bad_request"];

// The refusal code of a connect_error, whether the server put {code, message} in the error's
// data or only in its message text.
function refusalCode(err) {
  const data = err?.data;
  if (typeof data?.code === "string") return data.code;
  const text = `${typeof data === "string" ? data : ""} ${err?.message ?? ""}`;
  return REFUSALS.find((code) => text.includes(code)) ?? null;
}

// Events given to listeners: the server events of PROTOCOL.md, plus
//   "connect", "disconnect" {reason, retrying}, "connect_error" {code, message, fatal}.
export function connectSignaling(auth) {
  const listeners = new Map();
  let ended = false;
  let closed = false;
  const fire = (type, data) => {
    for (const handler of listeners.get(type) ?? []) {
      try {
        handler(data);
      } catch (err) {
        console.error(`visio-permanence: ${type} handler failed`, err);
      }
    }
  };

  const socket = io("/assist", { auth, transports: ["websocket", "polling"] });
  for (const name of SERVER_EVENTS) socket.on(name, (data) => fire(name, data && typeof data === "object" ? data : {}));
  socket.on("ended", () => {
    ended = true;
  });
  socket.on("error", (err) => console.warn("visio-permanence: signalling refused an event", err));
  socket.on("connect", () => fire("connect", {}));
  socket.on("disconnect", (reason) => {
    // socket.io retries by itself except when the server closed us on purpose; a server
    // restart does that too, so try again unless the session is over.
    const retrying = socket.active || (!ended && !closed);
    if (!socket.active && retrying) setTimeout(() => closed || ended || socket.connect(), 3000);
    fire("disconnect", { reason, retrying });
  });
  socket.on("connect_error", (err) => {
    const code = refusalCode(err);
    const fatal = !socket.active && code !== null;
    if (!socket.active && code === null && !closed) setTimeout(() => closed || socket.connect(), 3000);
    fire("connect_error", { code: code ?? "network", message: t(`conn_${code ?? "network"}`), fatal });
  });

  return {
    on(type, handler) {
      if (!listeners.has(type)) listeners.set(type, []);
      listeners.get(type).push(handler);
      return this;
    },
    // Signalling is only meaningful on the current connection: never queue it for a later
    // one (socket.io would replay it to peers that no longer exist).
    emit(type, payload = {}) {
      if (!socket.connected) return false;
      socket.emit(type, payload);
      return true;
    },
    close() {
      closed = true;
      socket.disconnect();
    },
    get connected() {
      return socket.connected;
    },
  };
}
