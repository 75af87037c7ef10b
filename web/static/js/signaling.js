// The one place that opens Socket.IO connections: the rooms' /assist namespace and the drop-in
// queue's /queue namespace (see signaling/PROTOCOL.md), both with the same reconnection rules.
import { Manager } from "../vendor/socket.io.esm.min.js";
import { Emitter, t } from "./common.js";

const RETRY_MS = 3000;

// One Engine.IO connection per page, shared by its namespaces. WebSocket first; where a proxy
// breaks it, socket.io-client only falls back to long polling when told to try every
// transport (nginx keeps a polling session on its node). Not opened until asked.
let manager = null;

function sharedManager() {
  manager ??= new Manager({ transports: ["websocket", "polling"], tryAllTransports: true, autoConnect: false });
  return manager;
}

// Opens the page's Engine.IO connection now, without joining any namespace: on a slow network
// the WebSocket handshake (a round trip or two) is then done by the time the page needs it.
export function preconnect() {
  sharedManager().open();
}

const ASSIST = {
  namespace: "/assist",
  events: ["welcome", "peer-joined", "peer-left", "offer", "answer", "candidate", "state", "ended"],
  refusals: ["unauthorized", "forbidden", "session_ended", "bad_request"],
  // After this event the server closes the connection for good: do not come back.
  final: "ended",
};

const QUEUE = {
  namespace: "/queue",
  events: ["queue", "queue_delta", "transferred", "position", "turn", "removed"],
  refusals: ["unauthorized", "forbidden", "rate_limited"],
  final: null,
};

// The refusal code of a connect_error, whether the server put {code, message} in the error's
// data or only in its message text.
function refusalCode(err, refusals) {
  const data = err?.data;
  if (typeof data?.code === "string") return data.code;
  const text = `${typeof data === "string" ? data : ""} ${err?.message ?? ""}`;
  return refusals.find((code) => text.includes(code)) ?? null;
}

// A Socket.IO connection to one namespace. Events given to listeners: the namespace's server
// events, plus "connect", "disconnect" {reason, retrying} and
// "connect_error" {code, message, fatal} (fatal: the server refused us; no retry).
class Signaling extends Emitter {
  constructor({ namespace, events, refusals, final }, auth) {
    super();
    this._ended = false;
    this._closed = false;
    const socket = sharedManager().socket(namespace, auth ? { auth } : {});
    this._socket = socket;
    for (const name of events) socket.on(name, (data) => this.fire(name, data && typeof data === "object" ? data : {}));
    if (final) {
      socket.on(final, () => {
        this._ended = true;
      });
    }
    socket.on("error", (err) => console.warn("visio-permanence: signalling refused an event", err));
    socket.on("connect", () => this.fire("connect", {}));
    socket.on("disconnect", (reason) => {
      // socket.io retries by itself except when the server closed us on purpose; a server
      // restart does that too, so try again unless the session is over.
      const retrying = socket.active || (!this._ended && !this._closed);
      if (!socket.active && retrying) setTimeout(() => this._closed || this._ended || socket.connect(), RETRY_MS);
      this.fire("disconnect", { reason, retrying });
    });
    socket.on("connect_error", (err) => {
      // Only the namespace's own refusals are final; anything else (the network, a server
      // restarting, "unavailable" while its database is down) is tried again.
      const code = refusalCode(err, refusals);
      const refused = refusals.includes(code);
      const fatal = !socket.active && refused;
      if (!socket.active && !refused && !this._closed) setTimeout(() => this._closed || socket.connect(), RETRY_MS);
      const shown = refused ? code : "network";
      this.fire("connect_error", { code: shown, message: t(`conn_${shown}`), fatal });
    });
    socket.connect();
  }

  // Signalling is only meaningful on the current connection: never queue it for a later
  // one (socket.io would replay it to peers that no longer exist).
  emit(type, payload = {}) {
    if (!this._socket.connected) return false;
    this._socket.emit(type, payload);
    return true;
  }

  // An event the server acknowledges: its answer, or a rejection after `timeoutMs`.
  request(type, payload, timeoutMs) {
    return this._socket.timeout(timeoutMs).emitWithAck(type, payload);
  }

  close() {
    this._closed = true;
    this._socket.disconnect();
  }

  get connected() {
    return this._socket.connected;
  }
}

// The /assist connection of a room: `auth` as PROTOCOL.md says for each side.
export function connectAssist(auth) {
  return new Signaling(ASSIST, auth);
}

// The /queue connection of a volunteer's queue page or a waiting page (cookies authenticate).
export function connectQueue() {
  return new Signaling(QUEUE, null);
}
