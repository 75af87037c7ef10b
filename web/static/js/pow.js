// The proof of work of a public form under pressure (templates/_pow.html): solve the challenge
// in a few Workers as soon as the page opens, put the ALTCHA payload in the hidden field, and
// hold a submission made meanwhile until it is ready (then send it by itself).
const node = document.getElementById("vp-pow");
const setup = node ? JSON.parse(node.textContent) : null;
const field = document.getElementById("pow-solution");
const status = document.getElementById("pow-status");
const form = field?.form;
let ready = false;
let waitingSubmit = false;

function say(key) {
  status.textContent = setup.i18n[key];
  status.hidden = false;
  document.body.dataset.pow = key; // browser tests read it
}

function solve(challenge) {
  const count = Math.max(1, Math.min(4, navigator.hardwareConcurrency || 2));
  const workers = Array.from({ length: count }, () => new Worker(setup.worker));
  const stop = () => workers.forEach((worker) => worker.terminate());
  return new Promise((resolve, reject) => {
    workers.forEach((worker, index) => {
      worker.onmessage = ({ data }) => {
        stop();
        if (data?.error) reject(new Error(data.error));
        else resolve(data);
      };
      worker.onerror = (event) => {
        stop();
        reject(event.error ?? new Error(event.message));
      };
      worker.postMessage({ challenge, start: index, step: count });
    });
  });
}

async function run() {
  say("working");
  try {
    const solution = await solve(setup.challenge);
    field.value = btoa(JSON.stringify({ challenge: setup.challenge, solution }));
    ready = true;
    say("done");
    if (waitingSubmit) form.requestSubmit();
  } catch (err) {
    console.error("visio-permanence: proof of work failed", err);
    say("failed");
  }
}

if (setup && field && form) {
  form.addEventListener("submit", (event) => {
    if (ready) return;
    event.preventDefault();
    waitingSubmit = true;
    say("working");
  });
  run();
}
