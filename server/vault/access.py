"""Capabilities of the vault: base64url values from the browser and the hashes we keep of them.

A vault is found by ``sha256(A)`` where ``A`` is the 32-byte access capability the browser derives
from the vault key (DESIGN.md, "Keys"); it is sent as ``Authorization: Vault <b64u(A)>``. No vault
id appears in a request, so guessing ids gives nothing, and a stolen database gives no ``A``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.store.models import Vault

CAPABILITY_BYTES = 32
_B64U = re.compile(r"[A-Za-z0-9_-]*")


def b64u_decode(value: object, max_chars: int) -> bytes | None:
    """The bytes of an unpadded base64url string of at most ``max_chars`` characters, or None."""
    if not isinstance(value, str) or len(value) > max_chars or not _B64U.fullmatch(value):
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None


def b64u_encode(data: bytes) -> str:
    """Unpadded base64url, as the browser writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def capability(value: object) -> bytes | None:
    """A 32-byte capability (access, recovery lookup, poll token) given as b64u, or None."""
    data = b64u_decode(value, 43)
    return data if data is not None and len(data) == CAPABILITY_BYTES else None


def capability_hash(data: bytes) -> str:
    """What we store of a capability: its SHA-256, hex (the capability has 256 bits of entropy,
    so a fast hash is enough: there is nothing to brute-force)."""
    return hashlib.sha256(data).hexdigest()


def access_from_header(header: str | None) -> bytes | None:
    """The access capability of an ``Authorization: Vault <b64u>`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme != "Vault":
        return None
    return capability(value.strip())


async def vault_for_access(db: AsyncSession, access: bytes) -> Vault | None:
    """The vault this capability opens, if any."""
    return await db.scalar(select(Vault).where(Vault.access_hash == capability_hash(access)))
