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
# The zone of metropolitan France: TIMEZONE's default, and the fallback of code that has no
# settings at hand (a model column's default, a zone this system no longer knows).
DEFAULT_TIMEZONE = "Europe/Paris"


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


def _ints(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in value.split(",") if part.strip())


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
        DEFAULT_TIMEZONE,
        "Time zone in which pages show times (IANA name, e.g. America/Cayenne, Indian/Reunion).",
    ),
    SettingSpec(
        "BOOKING_BUFFER_MINUTES",
        "10",
        "Free minutes kept after every appointment before the volunteer's next one.",
        _int,
    ),
    SettingSpec(
        "BOOKING_HORIZON_DAYS",
        "90",
        "How far ahead appointments can be booked.",
        _int,
    ),
    SettingSpec(
        "BOOKING_MIN_NOTICE_MINUTES",
        "60",
        "Minimum delay between booking and the appointment.",
        _int,
    ),
    SettingSpec(
        "REMINDER_MINUTES",
        "1440,60",
        "When reminders are sent, in minutes before the appointment (comma-separated).",
        _ints,
    ),
    SettingSpec(
        "EMAIL_BACKEND",
        "file",
        "`file` (e-mails written as .eml files under DATA_DIR/mail, and logged), `console` (logged "
        "only) or `smtp` (sent through SMTP_HOST).",
    ),
    SettingSpec("EMAIL_FROM", "permanence@localhost", "Sender address of notification e-mails."),
    SettingSpec("SMTP_HOST", "", "SMTP server for EMAIL_BACKEND=smtp."),
    SettingSpec("SMTP_PORT", "587", "SMTP port (587 with STARTTLS, 465 with implicit TLS).", _int),
    SettingSpec("SMTP_USERNAME", "", "SMTP login, if the server requires one."),
    SettingSpec("SMTP_PASSWORD", "", "SMTP password."),
    SettingSpec(
        "SMTP_TLS",
        "starttls",
        "`starttls`, `tls` (implicit, port 465) or `none` (only for a local relay).",
    ),
    SettingSpec(
        "SMS_BACKEND",
        "file",
        "`file` (SMS written under DATA_DIR/sms, and logged), `console` (logged only) or `brevo` "
        "(Brevo transactional SMS API, needs SMS_API_KEY).",
    ),
    SettingSpec("SMS_API_KEY", "", "API key of the SMS provider (SMS_BACKEND=brevo)."),
    SettingSpec("SMS_SENDER", "Permanence", "Sender name shown on SMS (11 characters at most)."),
    SettingSpec(
        "OUTBOX_POLL_SECONDS",
        "5",
        "How often the notification worker looks for messages to send.",
        _int,
    ),
    SettingSpec(
        "QUEUE_GRACE_SECONDS",
        "120",
        "How long a person keeps their place in the drop-in queue after their page disconnects "
        "(a reload, a tunnel, a phone call).",
        _int,
    ),
    SettingSpec(
        "QUEUE_CALLBACK_MINUTES",
        "30",
        "When the estimated wait in the drop-in queue passes this, the waiting page offers a "
        "call-back instead.",
        _int,
    ),
    SettingSpec(
        "QUEUE_MAX_WAITING",
        "200",
        "Most people waiting at once in one association's queue; beyond it the page offers a "
        "call-back.",
        _int,
    ),
    SettingSpec(
        "QUEUE_HANDLING_MINUTES",
        "20",
        "Handling time per person assumed for the wait estimate until enough drop-in sessions "
        "have ended to measure it.",
        _int,
    ),
    SettingSpec(
        "CALLBACK_FLAG_HOURS",
        "24",
        "Call-back requests older than this are flagged in the volunteers' list.",
        _int,
    ),
    SettingSpec(
        "CALLBACK_EXPIRE_DAYS",
        "7",
        "Call-back requests still open after this many days expire (reason recorded).",
        _int,
    ),
    SettingSpec(
        "CALLBACK_MAX_NO_ANSWER",
        "3",
        "After this many unanswered calls a call-back request is closed as unreachable.",
        _int,
    ),
    SettingSpec(
        "RETENTION_MONTHS",
        "12",
        "Personal data (names, phones, e-mails, postal codes, free text) is purged this many "
        "months after the person's last contact; statistics events, which hold none, stay.",
        _int,
    ),
    SettingSpec(
        "STATS_SMALL_COUNT",
        "5",
        'Counts below this are shown as "< N" in statistics exports and the API, so that '
        "nobody can be re-identified.",
        _int,
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
    timezone: str = DEFAULT_TIMEZONE
    booking_buffer_minutes: int = 10
    booking_horizon_days: int = 90
    booking_min_notice_minutes: int = 60
    reminder_minutes: tuple[int, ...] = (1440, 60)
    email_backend: str = "file"
    email_from: str = "permanence@localhost"
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_tls: str = "starttls"
    sms_backend: str = "file"
    sms_api_key: str = ""
    sms_sender: str = "Permanence"
    outbox_poll_seconds: int = 5
    queue_grace_seconds: int = 120
    queue_callback_minutes: int = 30
    queue_max_waiting: int = 200
    queue_handling_minutes: int = 20
    callback_flag_hours: int = 24
    callback_expire_days: int = 7
    callback_max_no_answer: int = 3
    retention_months: int = 12
    stats_small_count: int = 5
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
    choices = {
        "email_backend": ("file", "console", "smtp"),
        "sms_backend": ("file", "console", "brevo"),
        "smtp_tls": ("starttls", "tls", "none"),
    }
    for name, allowed in choices.items():
        if values[name] not in allowed:
            raise SettingsError(f"{PREFIX}{name.upper()} must be one of {', '.join(allowed)}")
    if values["email_backend"] == "smtp" and not values["smtp_host"]:
        raise SettingsError(f"{PREFIX}SMTP_HOST is required when {PREFIX}EMAIL_BACKEND=smtp")
    if values["sms_backend"] == "brevo" and not values["sms_api_key"]:
        raise SettingsError(f"{PREFIX}SMS_API_KEY is required when {PREFIX}SMS_BACKEND=brevo")
    if len(values["sms_sender"]) > 11:
        raise SettingsError(f"{PREFIX}SMS_SENDER must be 11 characters at most")
    if any(m <= 0 for m in values["reminder_minutes"]):
        raise SettingsError(f"{PREFIX}REMINDER_MINUTES must be positive numbers of minutes")
    if values["booking_buffer_minutes"] < 0:
        raise SettingsError(f"{PREFIX}BOOKING_BUFFER_MINUTES cannot be negative")
    for name in (
        "code_ttl_minutes",
        "session_ttl_hours",
        "login_ttl_hours",
        "turn_ttl_seconds",
        "booking_horizon_days",
        "outbox_poll_seconds",
        "queue_grace_seconds",
        "queue_callback_minutes",
        "queue_max_waiting",
        "queue_handling_minutes",
        "callback_flag_hours",
        "callback_expire_days",
        "callback_max_no_answer",
        "retention_months",
        "stats_small_count",
    ):
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
