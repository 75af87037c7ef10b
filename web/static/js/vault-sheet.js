// The recovery sheet's QR code, drawn here (npm `uqr`): the recovery code must never reach the
// server, so the server cannot draw it. Loaded only when a vault has just been created.
import { encode } from "../vendor/uqr.esm.js";

const SVG = "http://www.w3.org/2000/svg";

// Draws `text` as an SVG QR code in `container` (one path: small, crisp when printed).
export function drawQr(container, text, label) {
  const { data, size } = encode(text, { ecc: "M", border: 4 });
  let path = "";
  data.forEach((row, y) => {
    row.forEach((dark, x) => {
      if (dark) path += `M${x} ${y}h1v1h-1z`;
    });
  });
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.setAttribute("shape-rendering", "crispEdges");
  const background = document.createElementNS(SVG, "rect");
  background.setAttribute("width", String(size));
  background.setAttribute("height", String(size));
  background.setAttribute("fill", "#fff");
  const modules = document.createElementNS(SVG, "path");
  modules.setAttribute("d", path);
  modules.setAttribute("fill", "#000");
  svg.append(background, modules);
  container.replaceChildren(svg);
  container.dataset.text = text.replace(/#.*$/, ""); // what tests may read: never the code
}
