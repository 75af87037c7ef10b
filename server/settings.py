"""Settings as a table: every setting has a name, a default and a help text, read from the
environment with the prefix ``PERMANENCE_``. The README documents each one (a test checks it)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PREFIX = "PERMANENCE_"


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable and the fix."""


@dataclass(frozen=True)
class SettingSpec:
    """One row of the settings table."""

    name: str
    default: str
    help: str
    parse: Callable[[str], Any] = str


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def _int(value: str) -> int:
    return int(value.strip())


def _urls(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "DATA_DIR",
        "./var",
        "Folder for the embedded SQLite database and the generated secret key.",
    ),
    SettingSpec(
        "DATABASE_URL",
        "",
        "SQLAlchemy async URL. Empty: a SQLite file `permanence.sqlite3` under DATA_DIR. "
        "PostgreSQL: `postgresql+asyncpg://user:pass@host/db`.",
    ),
    SettingSpec(
        "SECRET_KEY",
        "",
        "Key for signing cookies, CSRF tokens and join links (≥ 32 characters). Empty: generated "
        "once and kept in DATA_DIR/secret_key. Required when BASE_URL is https.",
    ),
    SettingSpec(
        "BASE_URL",
        "http://127.0.0.1:8080",
        "Public URL of the site, used in join links, QR codes and the Socket.IO origin check. "
        "https turns on Secure cookies and HSTS.",
    ),
    SettingSpec(
        "STUN_URLS",
        "",
        "Comma-separated STUN URLs given to browsers (e.g. `stun:turn.example.org:3478`). "
        "Empty by default so that no page contacts a third party.",
        _urls,
    ),
    SettingSpec(
        "TURN_URLS",
        "",
        "Comma-separated TURN URLs (e.g. `turn:turn.example.org:3478?transport=udp,"
        "turns:turn.example.org:5349`). See deploy/coturn/turnserver.conf.",
        _urls,
    ),
    SettingSpec(
        "TURN_SECRET",
        "",
        "coturn `static-auth-secret` used to derive time-limited TURN credentials. "
        "Required when TURN_URLS is set.",
    ),
    SettingSpec(
        "TURN_TTL_SECONDS",
        "3600",
        "Lifetime of the TURN credentials handed to a participant.",
        _int,
    ),
    SettingSpec(
        "REDIS_URL",
        "",
        "Optional Redis URL (`redis://127.0.0.1:6379/0`). When set, rate limits are shared "
        "between server processes; later, Socket.IO fan-out too.",
    ),
    SettingSpec(
        "CODE_TTL_MINUTES",
        "15",
        "How long a 6-digit join code stays valid.",
        _int,
    ),
    SettingSpec(
        "SESSION_TTL_HOURS",
        "4",
        "How long an assistance session and its join link live if nobody ends it.",
        _int,
    ),
    SettingSpec(
        "LOGIN_TTL_HOURS",
        "12",
        "How long a volunteer or coordinator stays logged in.",
        _int,
    ),
    SettingSpec(
        "TRUST_PROXY",
        "false",
        "Trust `X-Forwarded-For` / `X-Forwarded-Proto` from a reverse proxy (set true behind "
        "nginx, see deploy/). Used for per-IP rate limits.",
        _bool,
    ),
    SettingSpec(
        "TIMEZONE",
        "Europe/Paris",
        "Time zone in which pages show times (IANA name, e.g. America/Cayenne, Indian/Reunion).",
    ),
    SettingSpec(
        "LOG_LEVEL",
        "INFO",
        "Python logging level.",
    ),
)


@dataclass(frozen=True)
class Settings:
    """Resolved settings, immutable for the life of the application."""

    data_dir: Path
    database_url: str
    secret_key: str
    base_url: str
    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str = ""
    turn_ttl_seconds: int = 3600
    redis_url: str = ""
    code_ttl_minutes: int = 15
    session_ttl_hours: int = 4
    login_ttl_hours: int = 12
    trust_proxy: bool = False
    timezone: str = "Europe/Paris"
    log_level: str = "INFO"
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def secure_cookies(self) -> bool:
        """Cookies get the Secure flag when the public site is served over https."""
        return urlsplit(self.base_url).scheme == "https"

    @property
    def origin(self) -> str:
        """scheme://host[:port] of BASE_URL, for origin checks."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    def url(self, path: str) -> str:
        """Absolute public URL for a site path."""
        return self.base_url.rstrip("/") + path


def _secret_from_file(data_dir: Path) -> str:
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read every setting from ``environ`` (default: the process environment) and validate it."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in SETTINGS:
        raw = env.get(PREFIX + spec.name, spec.default)
        try:
            values[spec.name.lower()] = spec.parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{PREFIX}{spec.name}={raw!r} is invalid: {exc}") from exc
    values.update(overrides)

    data_dir = Path(values["data_dir"]).expanduser()
    values["data_dir"] = data_dir
    if not values["database_url"]:
        values["database_url"] = f"sqlite+aiosqlite:///{(data_dir / 'permanence.sqlite3')}"

    base_url = str(values["base_url"]).rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise SettingsError(
            f"{PREFIX}BASE_URL={base_url!r} must be an absolute http(s) URL such as "
            "https://permanence.example.org"
        )
    values["base_url"] = base_url

    if not values["secret_key"]:
        if parts.scheme == "https":
            raise SettingsError(
                f"{PREFIX}SECRET_KEY is required when {PREFIX}BASE_URL is https "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        values["secret_key"] = _secret_from_file(data_dir)
    if len(values["secret_key"]) < 32:
        raise SettingsError(f"{PREFIX}SECRET_KEY must be at least 32 characters long")

    if values["turn_urls"] and not values["turn_secret"]:
        raise SettingsError(f"{PREFIX}TURN_SECRET is required when {PREFIX}TURN_URLS is set")
    for name in ("code_ttl_minutes", "session_ttl_hours", "login_ttl_hours", "turn_ttl_seconds"):
        if values[name] <= 0:
            raise SettingsError(f"{PREFIX}{name.upper()} must be a positive number")
    try:
        ZoneInfo(values["timezone"])
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SettingsError(
            f"{PREFIX}TIMEZONE={values['timezone']!r} is not a known IANA time zone"
        ) from exc
    for url in values["stun_urls"]:
        if not url.startswith("stun:") and not url.startswith("stuns:"):
            raise SettingsError(f"{PREFIX}STUN_URLS entry {url!r} must start with stun: or stuns:")
    for url in values["turn_urls"]:
        if not url.startswith("turn:") and not url.startswith("turns:"):
            raise SettingsError(f"{PREFIX}TURN_URLS entry {url!r} must start with turn: or turns:")
    return Settings(**values)
