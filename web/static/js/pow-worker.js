// Solves an ALTCHA v2 challenge (PBKDF2/SHA-256, server/pow.py) off the main thread: tries the
// counters start, start + step, … until the derived key starts with the challenge's key prefix.
// The password is the nonce followed by the counter (32 bits, big-endian), the salt the salt.

const fromHex = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (pair) => parseInt(pair, 16));
const toHex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");

onmessage = async ({ data }) => {
  const { parameters } = data.challenge;
  if (parameters.algorithm !== "PBKDF2/SHA-256") {
    postMessage({ error: `unsupported algorithm ${parameters.algorithm}` });
    return;
  }
  const nonce = fromHex(parameters.nonce);
  const salt = fromHex(parameters.salt);
  const password = new Uint8Array(nonce.length + 4);
  password.set(nonce);
  const view = new DataView(password.buffer);
  const bits = (parameters.keyLength ?? 32) * 8;
  const started = performance.now();
  for (let counter = data.start; counter <= 0xffffffff; counter += data.step) {
    view.setUint32(nonce.length, counter, false);
    const key = await crypto.subtle.importKey("raw", password, "PBKDF2", false, ["deriveBits"]);
    const derived = toHex(
      await crypto.subtle.deriveBits(
        { name: "PBKDF2", hash: "SHA-256", salt, iterations: parameters.cost },
        key,
        bits,
      ),
    );
    if (derived.startsWith(parameters.keyPrefix)) {
      postMessage({ counter, derivedKey: derived, time: Math.round(performance.now() - started) });
      return;
    }
  }
  postMessage({ error: "no solution" });
};
