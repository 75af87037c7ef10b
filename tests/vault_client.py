"""The browser's side of the vault in Python, exactly as server/vault/DESIGN.md says
(``cryptography`` for AES-GCM, AES-KW and HKDF-SHA-256), and a small HTTP client of
``/coffre/api/``: what the vault tests, the benchmark and other tests use instead of a browser.

Nothing here talks to the server's code: only to its HTTP API, like a browser would."""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from altcha import Challenge, Payload, solve_challenge
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from server.vault.access import b64u_decode, b64u_encode

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
RECOVERY_AAD = b"vp-vault/v1/recovery"


def hkdf(secret: bytes, info: str, length: int = 32) -> bytes:
    """HKDF-SHA-256 with an empty salt (the browser's ``deriveBits``)."""
    return HKDF(algorithm=SHA256(), length=length, salt=b"", info=info.encode()).derive(secret)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """``iv ‖ AES-GCM(key, plaintext, aad)`` with a random 96-bit IV."""
    iv = os.urandom(12)
    return iv + AESGCM(key).encrypt(iv, plaintext, aad)


def unseal(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """The plaintext of ``seal`` (``InvalidTag`` when tampered)."""
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], aad)


def b64u(data: bytes) -> str:
    """Unpadded base64url."""
    return b64u_encode(data)


def unb64u(text: str) -> bytes:
    """The bytes of unpadded base64url (fails loudly on garbage)."""
    data = b64u_decode(text, 10**9)
    assert data is not None, text
    return data


@dataclass(frozen=True)
class VaultKeys:
    """The keys a device holds: ``Kw`` (wraps document keys), ``Km`` (metadata) and ``A``."""

    key: bytes  # K: only at creation or after recovery
    wrap: bytes
    meta: bytes
    access: bytes

    @classmethod
    def from_key(cls, key: bytes) -> VaultKeys:
        """Derive everything from the vault key ``K``."""
        return cls(
            key=key,
            wrap=hkdf(key, "vp-vault/v1/wrap"),
            meta=hkdf(key, "vp-vault/v1/meta"),
            access=hkdf(key, "vp-vault/v1/access"),
        )

    @classmethod
    def new(cls) -> VaultKeys:
        """A fresh vault key."""
        return cls.from_key(os.urandom(32))

    @property
    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header that opens the vault."""
        return {"Authorization": f"Vault {b64u(self.access)}"}


@dataclass(frozen=True)
class RecoveryCode:
    """The recovery code ``R`` (15 bytes) and what is derived from it."""

    raw: bytes

    @classmethod
    def new(cls) -> RecoveryCode:
        """A fresh random code."""
        return cls(os.urandom(15))

    @property
    def text(self) -> str:
        """24 Crockford characters and the check character, in 5 groups of 5."""
        number = int.from_bytes(self.raw, "big")
        chars = "".join(CROCKFORD[(number >> (5 * i)) & 31] for i in reversed(range(24)))
        chars += CROCKFORD[hashlib.sha256(self.raw).digest()[0] & 31]
        return "-".join(chars[i : i + 5] for i in range(0, 25, 5))

    @classmethod
    def parse(cls, text: str) -> RecoveryCode:
        """The code of a typed text (spaces and dashes ignored, O→0, I/L→1); ValueError on a
        typing mistake (wrong check character)."""
        clean = text.replace(" ", "").replace("-", "").upper()
        clean = clean.replace("O", "0").replace("I", "1").replace("L", "1")
        if len(clean) != 25 or any(c not in CROCKFORD for c in clean):
            raise ValueError("not a recovery code")
        number = 0
        for char in clean[:24]:
            number = number * 32 + CROCKFORD.index(char)
        code = cls(number.to_bytes(15, "big"))
        if code.text.replace("-", "")[24] != clean[24]:
            raise ValueError("typing mistake")
        return code

    @property
    def lookup(self) -> bytes:
        """``L``: finds the vault."""
        return hkdf(self.raw, "vp-vault/v1/recovery-lookup")

    @property
    def wrap_key(self) -> bytes:
        """``Kr``: seals the vault key in the recovery box."""
        return hkdf(self.raw, "vp-vault/v1/recovery-wrap")

    def box(self, key: bytes) -> str:
        """The recovery box of vault key ``key`` (b64u, 60 bytes)."""
        return b64u(seal(self.wrap_key, key, RECOVERY_AAD))

    def open(self, box: str) -> bytes:
        """The vault key a recovery box holds."""
        return unseal(self.wrap_key, unb64u(box), RECOVERY_AAD)


@dataclass(frozen=True)
class EncryptedDocument:
    """What the browser uploads for one document."""

    id: str
    key: str  # b64u(AES-KW(Kw, D))
    meta: str  # b64u(iv ‖ AES-GCM(Km, JSON))
    blob: bytes  # iv ‖ AES-GCM(D, file bytes)
    category: str | None = None


def encrypt_document(
    keys: VaultKeys,
    data: bytes,
    name: str = "document.pdf",
    mime: str = "application/pdf",
    category: str | None = "autre",
    document_id: str | None = None,
) -> EncryptedDocument:
    """Encrypt a file as the vault page does (a fresh document key, wrapped by ``Kw``)."""
    doc_id = document_id or str(uuid.uuid4())
    doc_key = AESGCM.generate_key(bit_length=256)
    meta = {
        "name": name,
        "mime": mime,
        "category": category,
        "expires_on": None,
        "size": len(data),
        "added_at": "2026-12-06T12:00:00Z",
    }
    return EncryptedDocument(
        id=doc_id,
        key=b64u(aes_key_wrap(keys.wrap, doc_key)),
        meta=encrypt_meta(keys, doc_id, meta),
        blob=seal(doc_key, data, f"vp-vault/v1/doc:{doc_id}".encode()),
        category=category,
    )


def encrypt_meta(keys: VaultKeys, document_id: str, meta: dict[str, Any]) -> str:
    """The ``meta`` field of a document."""
    plain = json.dumps(meta, ensure_ascii=False).encode()
    return b64u(seal(keys.meta, plain, f"vp-vault/v1/meta:{document_id}".encode()))


def decrypt_meta(keys: VaultKeys, document_id: str, meta: str) -> dict[str, Any]:
    """The metadata of a document."""
    plain = unseal(keys.meta, unb64u(meta), f"vp-vault/v1/meta:{document_id}".encode())
    value: dict[str, Any] = json.loads(plain)
    return value


def decrypt_document(keys: VaultKeys, document_id: str, wrapped_key: str, blob: bytes) -> bytes:
    """A document's file bytes (``InvalidTag`` if anything was changed)."""
    doc_key = aes_key_unwrap(keys.wrap, unb64u(wrapped_key))
    return unseal(doc_key, blob, f"vp-vault/v1/doc:{document_id}".encode())


def solved(challenge: dict[str, Any]) -> str:
    """The ALTCHA payload a browser would send for ``challenge``."""
    solution = solve_challenge(Challenge.from_dict(challenge))
    assert solution is not None
    return Payload(Challenge.from_dict(challenge), solution).to_base64()


@dataclass
class Answer:
    """An HTTP answer: status, JSON body (None without one) and headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` object of a refusal."""
        assert isinstance(self.body, dict) and "error" in self.body, (self.status, self.body)
        error: dict[str, Any] = self.body["error"]
        return error


async def _answer(resp: aiohttp.ClientResponse) -> Answer:
    text = await resp.text()
    body = json.loads(text) if text and resp.content_type == "application/json" else None
    return Answer(resp.status, body, dict(resp.headers))


async def _stream(data: bytes, piece: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


def document_form(
    document: EncryptedDocument, *, stream: bool = False, piece: int = 64 * 1024
) -> aiohttp.MultipartWriter:
    """The multipart body of an upload: fields, then the blob part last. ``stream``: the blob
    is sent as it is produced (chunked, no Content-Length), as a slow phone would."""
    writer = aiohttp.MultipartWriter("form-data")
    fields = {"id": document.id, "key": document.key, "meta": document.meta}
    if document.category is not None:
        fields["category"] = document.category
    for name, value in fields.items():
        part = writer.append(value)
        part.set_content_disposition("form-data", name=name)
    blob: Any = _stream(document.blob, piece) if stream else io.BytesIO(document.blob)
    part = writer.append(blob, {"Content-Type": "application/octet-stream"})
    part.set_content_disposition("form-data", name="blob", filename="blob")
    return writer


class VaultHttp:
    """The vault API of a running server, as one device (``keys``) sees it."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, keys: VaultKeys) -> None:
        self.http = http
        self.base_url = base_url
        self.keys = keys

    def url(self, path: str) -> str:
        """Absolute URL of a path."""
        return self.base_url + path

    async def request(self, method: str, path: str, **kwargs: Any) -> Answer:
        """One request with this device's capability."""
        headers = {**self.keys.headers, **kwargs.pop("headers", {})}
        async with self.http.request(method, self.url(path), headers=headers, **kwargs) as resp:
            return await _answer(resp)

    async def overview(self) -> Answer:
        """``GET /coffre/api/vault``."""
        return await self.request("GET", "/coffre/api/vault")

    async def upload(self, document: EncryptedDocument, *, stream: bool = False) -> Answer:
        """``POST /coffre/api/documents``."""
        return await self.request(
            "POST", "/coffre/api/documents", data=document_form(document, stream=stream)
        )

    async def blob(self, document_id: str) -> tuple[int, bytes]:
        """``GET /coffre/api/documents/{id}/blob``: status and bytes."""
        async with self.http.get(
            self.url(f"/coffre/api/documents/{document_id}/blob"), headers=self.keys.headers
        ) as resp:
            return resp.status, await resp.read()

    async def read(self, document_id: str) -> bytes:
        """A document, downloaded and decrypted here."""
        listing = await self.overview()
        assert listing.status == 200, listing
        [document] = [d for d in listing.body["documents"] if d["id"] == document_id]
        status, blob = await self.blob(document_id)
        assert status == 200
        return decrypt_document(self.keys, document_id, document["key"], blob)


@dataclass(frozen=True)
class NewVault:
    """A vault made through the API: its device keys and its recovery code."""

    keys: VaultKeys
    code: RecoveryCode
    answer: Answer


async def challenge(http: aiohttp.ClientSession, base_url: str) -> dict[str, Any]:
    """A fresh creation challenge."""
    async with http.get(base_url + "/coffre/api/challenge") as resp:
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


def creation_body(keys: VaultKeys, code: RecoveryCode, share_facts: bool) -> dict[str, Any]:
    """What the page posts to create a vault, without its proof of work."""
    return {
        "access": b64u(keys.access),
        "recovery_lookup": b64u(code.lookup),
        "recovery_box": code.box(keys.key),
        "share_facts": share_facts,
    }


async def create_vault(
    http: aiohttp.ClientSession,
    base_url: str,
    *,
    share_facts: bool = True,
    context: str | None = None,
    headers: dict[str, str] | None = None,
) -> NewVault:
    """Make a vault as the page does: keys, recovery code and box, a solved proof of work."""
    keys = VaultKeys.new()
    code = RecoveryCode.new()
    body = creation_body(keys, code, share_facts)
    body["altcha"] = solved(await challenge(http, base_url))
    if context is not None:
        body["context"] = context
    async with http.post(base_url + "/coffre/api/vault", json=body, headers=headers) as resp:
        answer = await _answer(resp)
    return NewVault(keys, code, answer)


async def recover(
    http: aiohttp.ClientSession,
    base_url: str,
    typed: str,
    headers: dict[str, str] | None = None,
) -> tuple[Answer, VaultKeys | None]:
    """Restore a device from a typed recovery code: the answer and, on success, the keys."""
    code = RecoveryCode.parse(typed)
    async with http.post(
        base_url + "/coffre/api/recover",
        json={"recovery_lookup": b64u(code.lookup)},
        headers=headers,
    ) as resp:
        answer = await _answer(resp)
    if answer.status != 200:
        return answer, None
    return answer, VaultKeys.from_key(code.open(answer.body["recovery_box"]))
