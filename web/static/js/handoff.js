// Handoff sheet pages: the "Imprimer" button and the character counters of the form's text
// areas (CSP forbids inline scripts, so both live here).

// Hidden until now: a button that did nothing when pressed before the script arrived.
const printButton = document.getElementById("print-sheet");
if (printButton) {
  printButton.addEventListener("click", () => window.print());
  printButton.hidden = false;
}

for (const area of document.querySelectorAll("textarea[data-counter]")) {
  const counter = document.getElementById(area.dataset.counter);
  const max = Number(area.getAttribute("maxlength")) || 0;
  if (!counter || !max) continue;
  const update = () => {
    counter.textContent = `${area.value.length} / ${max}`;
    counter.classList.toggle("error", area.value.length >= max);
  };
  area.addEventListener("input", update);
  update();
}
