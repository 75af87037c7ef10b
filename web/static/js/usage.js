// Data used by the beneficiary's device during a session (issue 14: prepaid mobile data).
// The beneficiary's page measures every RTCPeerConnection it had (getStats), reports the
// running total to the server (`usage`, signaling/PROTOCOL.md), which keeps it on the session
// row; the volunteer's page shows the stored figure once the session is over.

// How often the counters are read, and the total reported (the server takes one report per
// socket every 10 s; each is a database write).
const READ_MS = 10000;
const REPORT_MS = 30000;
const MIN_REPORT_MS = 10000;
// The first report, soon after a connection is up: a short session still leaves a figure.
const FIRST_REPORT_MS = 3000;
const ACK_MS = 5000;
// Carriers count whole IP packets: the stats count what is inside UDP, so add the IP and UDP
// headers of each packet (IPv4 20 + 8 bytes, IPv6 40 + 8).
const HEADER_BYTES = { v4: 28, v6: 48 };

// Bytes through one connection so far, both ways. Chromium and Safari count them on the
// transport (with BUNDLE one per connection, kept across ICE restarts); Firefox has no
// transport stats, only its candidate pairs.
export async function connectionBytes(pc) {
  const stats = await pc.getStats();
  let transport = null;
  let pairs = 0;
  let pairPackets = 0;
  let family = "v4";
  stats.forEach((report) => {
    if (report.type === "transport" && typeof report.bytesSent === "number") {
      const packets = (report.packetsSent ?? 0) + (report.packetsReceived ?? 0);
      transport ??= { bytes: 0, packets: 0, pair: report.selectedCandidatePairId };
      transport.bytes += report.bytesSent + (report.bytesReceived ?? 0);
      transport.packets += packets;
    } else if (report.type === "candidate-pair") {
      pairs += (report.bytesSent ?? 0) + (report.bytesReceived ?? 0);
      pairPackets += (report.packetsSent ?? 0) + (report.packetsReceived ?? 0);
    }
  });
  const pair = transport?.pair && stats.get(transport.pair);
  const local = pair && stats.get(pair.localCandidateId);
  if (String(local?.address ?? local?.ip ?? "").includes(":")) family = "v6";
  const [bytes, packets] = transport ? [transport.bytes, transport.packets] : [pairs, pairPackets];
  return bytes + packets * HEADER_BYTES[family];
}

// The running total of a page: connections closed (their last reading) plus the open ones.
// A counter never goes back, so each connection keeps its highest reading.
export class DataMeter {
  constructor() {
    this._done = 0;
    this._open = new Map(); // pc -> bytes, last reading
    this._closing = new Set();
  }

  watch(pc) {
    if (!this._open.has(pc)) this._open.set(pc, 0);
  }

  // What earlier pages of the same session counted.
  addEarlier(bytes) {
    this._done += bytes;
  }

  // A connection about to close: its stats can still be read now, not after close(). The
  // promise settles once its last reading is counted.
  closing(pc) {
    if (!this._open.has(pc) || this._closing.has(pc)) return Promise.resolve();
    this._closing.add(pc);
    return this._read(pc).finally(() => this._fold(pc));
  }

  async read() {
    const pcs = [...this._open.keys()].filter((pc) => !this._closing.has(pc));
    await Promise.all(pcs.map((pc) => this._read(pc)));
    for (const pc of pcs) if (pc.signalingState === "closed") this._fold(pc);
    return this.total;
  }

  get total() {
    let total = this._done;
    for (const bytes of this._open.values()) total += bytes;
    return total;
  }

  async _read(pc) {
    if (pc.signalingState === "closed") return; // its stats are gone: keep the last reading
    try {
      const bytes = await connectionBytes(pc);
      if (this._open.has(pc) && bytes > this._open.get(pc)) this._open.set(pc, bytes);
    } catch (err) {
      console.debug("stats unavailable", err);
    }
  }

  _fold(pc) {
    if (!this._open.has(pc)) return;
    this._done += this._open.get(pc);
    this._open.delete(pc);
    this._closing.delete(pc);
  }
}

// Reads a DataMeter and reports its total over `signaling` (the /assist connection) every
// 30 s, soon after the first connection is up, and when the page is hidden or left. The total
// is kept in sessionStorage too, so that a reload of the page in the same tab goes on counting
// from it (the new page's connections start again from zero).
export class UsageReporter {
  constructor(signaling) {
    this._signaling = signaling;
    this._key = null;
    this._meter = new DataMeter();
    this._sent = 0; // the last total reported
    this._sentAt = -Infinity;
    this._timer = setInterval(() => this.tick(), READ_MS);
    this._first = 0;
    this._onHide = () => {
      if (document.visibilityState === "hidden") this.flush();
    };
    this._onLeave = () => this._report(true);
    document.addEventListener("visibilitychange", this._onHide);
    addEventListener("pagehide", this._onLeave);
  }

  // The session is known (welcome): earlier pages of this tab count too.
  session(id) {
    if (this._key) return;
    this._key = `vp-data-used:${id}`;
    const earlier = Number(sessionStorage.getItem(this._key));
    if (Number.isSafeInteger(earlier) && earlier > 0) this._meter.addEarlier(earlier);
  }

  // A Peer (rtc.js) of this page: each of its connections is counted.
  watch(peer) {
    peer
      .on("connection", (pc) => this._meter.watch(pc))
      .on("closing", (pc) => this._meter.closing(pc))
      .on("change", () => {
        if (peer.connectionState === "connected" && !this._first && this._sent === 0) {
          this._first = setTimeout(() => this.flush(), FIRST_REPORT_MS);
        }
      });
  }

  async tick() {
    await this._meter.read();
    this._save();
    if (performance.now() - this._sentAt >= REPORT_MS || this._sent === 0) this._report(false);
  }

  // Read now and report (the page is being hidden: it may never come back).
  async flush() {
    await this._meter.read();
    this._save();
    this._report(false);
  }

  stop() {
    clearInterval(this._timer);
    clearTimeout(this._first);
    document.removeEventListener("visibilitychange", this._onHide);
    removeEventListener("pagehide", this._onLeave);
  }

  _save() {
    try {
      if (this._key) sessionStorage.setItem(this._key, String(Math.round(this._meter.total)));
    } catch {
      // Storage full or refused: only a reload would count less.
    }
  }

  // `leaving`: the page is going away, report the last reading without waiting for an answer.
  _report(leaving) {
    const bytes = Math.round(this._meter.total);
    if (bytes <= this._sent || !this._signaling.connected) return;
    if (performance.now() - this._sentAt < MIN_REPORT_MS) return;
    this._sent = bytes;
    this._sentAt = performance.now();
    if (leaving) {
      this._save();
      this._signaling.emit("usage", { bytes });
      return;
    }
    this._signaling.request("usage", { bytes }, ACK_MS)
      .then((ack) => {
        // What the server stored (tests wait for it).
        if (ack?.ok) document.body.dataset.vpDataUsed = String(ack.bytes);
      })
      .catch((err) => console.debug("usage report unanswered", err));
  }
}

// Volunteer's side: the stored figure, as the server words it, in `node` (ended panel).
export async function showDataUsed(url, node) {
  if (!url || !node) return;
  try {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    if (typeof data.text !== "string") return;
    node.textContent = data.text;
    node.hidden = false;
  } catch (err) {
    console.debug("data used unavailable", err);
  }
}
