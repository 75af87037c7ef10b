// Handoff sheet pages: the "Imprimer" button, the character counters of the form's text
// areas (CSP forbids inline scripts, so both live here) and the form's "Vérifier les droits",
// whose script (rights.js) comes on the first press.

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

// Hidden until the script is here, like "Imprimer".
const rightsOpen = document.getElementById("rights-open");
const rightsBox = document.getElementById("rights-box");
if (rightsOpen && rightsBox) {
  rightsOpen.addEventListener("click", async () => {
    rightsOpen.disabled = true;
    try {
      const rights = await import("./rights.js");
      await rights.openRights({
        partsUrl: rightsBox.dataset.partsUrl,
        container: document.getElementById("rights-parts"),
        share: null,
        onOpen: () => {
          rightsOpen.hidden = true;
        },
        onClose: () => {
          rightsOpen.hidden = false;
          rightsOpen.focus();
        },
      });
    } catch (err) {
      console.warn("visio-permanence: the rights check did not load", err);
    } finally {
      rightsOpen.disabled = false;
    }
  });
  rightsOpen.hidden = false;
}
