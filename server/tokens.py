"""Secrets derived from the secret key: join tokens, join codes, CSRF tokens, token hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


def sha256_hex(value: str) -> str:
    """Hash for storing a high-entropy token (the raw token never reaches the database)."""
    return hashlib.sha256(value.encode()).hexdigest()


def _mac(secret_key: str, *parts: str) -> bytes:
    message = "\x1f".join(parts).encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).digest()


def new_salt() -> str:
    """A fresh random salt for deriving a session's link token or code."""
    return secrets.token_hex(16)


def join_token(secret_key: str, session_id: str, salt: str) -> str:
    """The `/j/<token>` secret: 192 bits from HMAC-SHA256, URL-safe."""
    digest = _mac(secret_key, "join", session_id, salt)[:24]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def join_code(secret_key: str, session_id: str, salt: str, digits: int) -> str:
    """A code of ``digits`` digits derived from the session and a salt (retried with a new salt
    on collision)."""
    number = int.from_bytes(_mac(secret_key, "code", session_id, salt)[:8], "big") % 10**digits
    return f"{number:0{digits}d}"


def grouped_code(code: str | None) -> str:
    """A join code as people read it out: groups of four digits ("4521 8930"); "" for none."""
    code = code or ""
    return " ".join(code[i : i + 4] for i in range(0, len(code), 4))


def code_hash(secret_key: str, code: str) -> str:
    """Keyed hash of a join code: a plain hash of so few values would be reversible."""
    return _mac(secret_key, "code-lookup", code).hex()


def csrf_token(secret_key: str, login_token: str) -> str:
    """CSRF token bound to one login session (synchroniser token pattern, no extra storage)."""
    return _mac(secret_key, "csrf", login_token).hex()[:48]


def constant_time_equal(a: str, b: str) -> bool:
    """Compare secrets without leaking timing."""
    return hmac.compare_digest(a.encode(), b.encode())
