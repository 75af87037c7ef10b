// The ALTCHA widget of a public form under pressure (templates/_pow.html). The widget solves the
// challenge and fills the form field itself; this module gives it what our pages need, before
// it mounts: its PBKDF2 Worker from our origin (the "external" build bundles none, so nothing
// runs from a blob under our CSP), our French strings, the challenge the page carries, no
// branding; then it solves at once (auto="onload"). A submission tried before the solution is
// ready is sent as soon as it is.
import "../vendor/altcha/altcha.min.js";

const node = document.getElementById("vp-pow");
const widget = document.getElementById("pow-widget");
const form = widget?.closest("form");

if (node && widget && form) {
  const setup = JSON.parse(node.textContent);
  for (const algorithm of ["PBKDF2/SHA-256", "PBKDF2/SHA-384", "PBKDF2/SHA-512"]) {
    globalThis.$altcha.algorithms.set(algorithm, () => new Worker(setup.worker));
  }
  globalThis.$altcha.i18n.set("fr", setup.strings);
  // Attributes, not configure(): the element mounts after this module has run.
  widget.setAttribute(
    "configuration",
    JSON.stringify({
      challenge: setup.challenge,
      hideFooter: true,
      hideLogo: true,
      humanInteractionSignature: false, // our server asks for none: collect nothing
      language: "fr",
      validationMessage: setup.validationMessage,
    }),
  );
  widget.setAttribute("auto", "onload");

  // While the widget works, its checkbox is required and unchecked, so the browser refuses
  // the submission ("invalid") and shows our waitAlert; remember it and send when verified.
  let held = false;
  form.addEventListener(
    "invalid",
    (event) => {
      if (widget.contains(event.target) && widget.getState?.() === "verifying") held = true;
    },
    true,
  );
  widget.addEventListener("verified", () => {
    if (!held) return;
    held = false;
    form.requestSubmit();
  });
}
