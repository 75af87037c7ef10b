"""The vault (coffre-fort numérique): a person's documents, encrypted in their browser.

The server stores ciphertext and the hashes of capabilities only; ``DESIGN.md`` beside this file
is the contract with the browser (keys, wire format, HTTP API)."""
