// Small helpers shared by the pages' scripts.

export const config = readConfig();

function readConfig() {
  const node = document.getElementById("vp-config");
  try {
    return node ? JSON.parse(node.textContent) : {};
  } catch (err) {
    console.error("vp-config is not valid JSON", err);
    return {};
  }
}

// Translated text rendered by the template; {name} placeholders are filled from vars.
export function t(key, vars = {}) {
  const text = config.i18n?.[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (match, name) => (name in vars ? String(vars[name]) : match));
}

// The form of `key` for `count` in the page's language: `key_one`, `key_other` (and `key_few`,
// `key_many`… where a language has them), chosen by Intl.PluralRules; `count` is a variable too.
export function tn(key, count, vars = {}) {
  const form = new Intl.PluralRules(document.documentElement.lang || "fr").select(count);
  const chosen = config.i18n?.[`${key}_${form}`] !== undefined ? `${key}_${form}` : `${key}_other`;
  return t(chosen, { ...vars, count });
}

export const $ = (id) => document.getElementById(id);

// Named events for the objects pages listen to (a socket, a peer): `on(type, handler)` is
// chainable, and a failing handler is logged without stopping the others.
export class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  on(type, handler) {
    if (!this._listeners.has(type)) this._listeners.set(type, []);
    this._listeners.get(type).push(handler);
    return this;
  }

  fire(type, data) {
    for (const handler of this._listeners.get(type) ?? []) {
      try {
        handler(data);
      } catch (err) {
        console.error(`visio-permanence: ${type} handler failed`, err);
      }
    }
  }
}

export function on(node, type, handler, options) {
  if (node) node.addEventListener(type, handler, options);
}

export function show(node, visible = true) {
  if (node) node.hidden = !visible;
}

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

// Ids travel on the data channel, where they must match [A-Za-z0-9_-]{1,64}.
export function uid() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return Date.now().toString(36) + Math.random().toString(36).slice(2);
}

export const clamp01 = (value) => Math.min(1, Math.max(0, value));

export const isUnit = (value) => typeof value === "number" && value >= 0 && value <= 1;

export function announce(text) {
  const live = $("vp-live");
  if (live) live.textContent = text;
}

// One place sets the status: visible badge, screen-reader announcement, and a data
// attribute that browser tests read.
export function setStatus(key) {
  if (document.body.dataset.vpStatus === key) return;
  document.body.dataset.vpStatus = key;
  const text = t(`status_${key}`);
  const badge = $("status");
  if (badge) {
    badge.textContent = text;
    badge.dataset.state = key;
  }
  announce(text);
}

// The rectangle, in client coordinates, where the video frame is actually painted inside the
// element: object-fit letterboxes it (bands above/below or left/right).
export function frameRect(video) {
  const box = video.getBoundingClientRect();
  const vw = video.videoWidth;
  const vh = video.videoHeight;
  let { left, top, width, height } = box;
  if (!vw || !vh) return { left, top, width, height };
  const fit = getComputedStyle(video).objectFit;
  if (fit === "fill") return { left, top, width, height };
  let scale = Math.min(width / vw, height / vh);
  if (fit === "cover") scale = Math.max(width / vw, height / vh);
  else if (fit === "none") scale = 1;
  else if (fit === "scale-down") scale = Math.min(1, scale);
  const w = vw * scale;
  const h = vh * scale;
  left += (width - w) / 2;
  top += (height - h) / 2;
  return { left, top, width: w, height: h };
}

// Pixel position inside `layer` (an overlay covering the video) of a point given relative to
// the video frame.
export function toLayer(video, layer, x, y) {
  const frame = frameRect(video);
  const box = layer.getBoundingClientRect();
  return [frame.left - box.left + clamp01(x) * frame.width, frame.top - box.top + clamp01(y) * frame.height];
}
