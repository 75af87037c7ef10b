"""Settings as a table: every setting is a field of ``Settings`` with its type, default and help
text (``Field(default, description=...)``), read from the environment with the prefix
``PERMANENCE_`` by pydantic-settings. The README documents each one (a test checks it).

Secrets (``SECRET_KEY``, ``TURN_SECRET``, ``SMTP_PASSWORD``, ``SMS_API_KEY``) are ``SecretStr``:
a repr or a log line shows ``**********``; code that needs one calls ``.get_secret_value()``.
``load_settings()`` is the entry point: it reads the environment (the process's, or the mapping
it is given), validates it with one message per problem naming the variable and the fix, and
fills in what lives under DATA_DIR (the SQLite file, the generated secret key).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from limits import parse
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

PREFIX = "PERMANENCE_"
# The zone of metropolitan France: TIMEZONE's default, and the fallback of code that has no
# settings at hand (a model column's default, a zone this system no longer knows).
DEFAULT_TIMEZONE = "Europe/Paris"
SECRET_KEY_MIN_LENGTH = 32
# Notification backends that keep messages on this machine (for development and the demo), and
# what they do with them.
LOCAL_BACKENDS = {"file": "written under DATA_DIR and logged", "console": "logged"}


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable and the fix."""


def _variable(field_name: str) -> str:
    """The environment variable of a field: ``PERMANENCE_<NAME>``."""
    return PREFIX + field_name.upper()


# Lists are written comma-separated in the environment (NoDecode: not as JSON).
Urls = Annotated[tuple[str, ...], NoDecode]
Minutes = Annotated[tuple[int, ...], NoDecode]
Regions = Annotated[tuple[str, ...], NoDecode]
# Metropolitan France and the overseas départements and collectivités, as the numbering plan
# (phonenumbers) names their regions: +33, +590 (GP, BL, MF), +596, +594, +262 (RE, YT), +508,
# +681, +689, +687.
DEFAULT_PHONE_REGIONS = ("FR", "GP", "MQ", "GF", "RE", "YT", "PM", "BL", "MF", "WF", "PF", "NC")


class Settings(BaseSettings):
    """Resolved settings, immutable for the life of the application."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="forbid")

    data_dir: Path = Field(
        Path("./var"),
        description="Folder for the embedded SQLite database and the generated secret key.",
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy async URL. Empty: a SQLite file `permanence.sqlite3` under "
        "DATA_DIR. PostgreSQL: `postgresql+asyncpg://user:pass@host/db`.",
    )
    secret_key: SecretStr = Field(
        SecretStr(""),
        description="Key for signing cookies, CSRF tokens and join links (≥ 32 characters). "
        "Empty: generated once and kept in DATA_DIR/secret_key. Required when BASE_URL is https.",
    )
    base_url: str = Field(
        "http://127.0.0.1:8080",
        description="Public URL of the site, used in join links, QR codes and the Socket.IO "
        "origin check. https turns on Secure cookies and HSTS.",
    )
    stun_urls: Urls = Field(
        (),
        description="Comma-separated STUN URLs given to browsers (e.g. "
        "`stun:turn.example.org:3478`). Empty by default so that no page contacts a third party.",
    )
    turn_urls: Urls = Field(
        (),
        description="Comma-separated TURN URLs (e.g. `turn:turn.example.org:3478?transport=udp,"
        "turns:turn.example.org:5349`). See deploy/coturn/turnserver.conf.",
    )
    turn_secret: SecretStr = Field(
        SecretStr(""),
        description="coturn `static-auth-secret` used to derive time-limited TURN credentials. "
        "Required when TURN_URLS is set.",
    )
    turn_ttl_seconds: int = Field(
        3600, gt=0, description="Lifetime of the TURN credentials handed to a participant."
    )
    redis_url: str = Field(
        "",
        description="Optional Redis URL (`redis://127.0.0.1:6379/0`). When set, this process is "
        "one node of a cluster: rate limits, Socket.IO fan-out, committed events and presence "
        "are shared through it (several nodes need PostgreSQL too).",
    )
    database_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=120,
        description="How long a request waits for a database connection (opening one, or a free "
        "one in the pool) before it is answered 503 with Retry-After: a stopped database never "
        "makes pages hang.",
    )
    code_ttl_minutes: int = Field(15, gt=0, description="How long a join code stays valid.")
    code_digits: int = Field(
        8,
        ge=6,
        le=10,
        description="Digits of a join code. 8 keeps guessing impractical with 1,000 live codes "
        "(SECURITY.md: the time to a first hit); 6 does not.",
    )
    session_ttl_hours: int = Field(
        4,
        gt=0,
        description="How long an assistance session and its join link live if nobody ends it.",
    )
    login_ttl_hours: int = Field(
        12, gt=0, description="How long a volunteer or coordinator stays logged in."
    )
    password_hash_threads: int = Field(
        1,
        ge=1,
        le=16,
        description="Threads that check and compute argon2 password hashes, off the event loop "
        "(each needs 64 MiB and tens of milliseconds of CPU while it works, at a lower priority "
        "than the sockets). More threads let more logins through a flood and use more memory.",
    )
    login_max_concurrent: int = Field(
        8,
        ge=1,
        le=1000,
        description="Most logins checked at once (waiting for a hashing thread or in it). Beyond "
        "it the login page answers 503 with Retry-After and computes nothing, so that a login "
        "flood queues no unbounded work.",
    )
    trust_proxy: bool = Field(
        False,
        description="Trust `X-Forwarded-For` / `X-Forwarded-Proto` from a reverse proxy (set "
        "true behind nginx, see deploy/). Used for per-IP rate limits.",
    )
    ipv6_prefix_length: int = Field(
        64,
        ge=32,
        le=128,
        description="Per-client rate limits count an IPv6 client by this prefix (one host or "
        "home usually owns a whole /64; IPv4 counts by address).",
    )
    budget_wrong_codes: str = Field(
        "12/hour",
        description="Global budget of wrong join codes (all clients together). Past it each "
        "client gets 2 tries a day and an alert is raised (SECURITY.md: the time to a first hit).",
    )
    budget_bookings: str = Field(
        "300/hour",
        description="Global budget of public bookings; past it the booking form asks for a "
        "proof of work and an alert is raised.",
    )
    budget_callback_requests: str = Field(
        "200/hour",
        description="Global budget of call-back requests; past it the form asks for a proof "
        "of work and an alert is raised.",
    )
    budget_queue_joins: str = Field(
        "600/hour",
        description="Global budget of drop-in queue joins; past it joining asks for a proof of "
        "work and an alert is raised.",
    )
    budget_sms: str = Field(
        "2000/day",
        description="Global budget of SMS sent, counted in the parts the provider bills (160 "
        "GSM characters, or 70 in Unicode: Arabic, Dari, Ukrainian, Romanian; a longer message is "
        "several parts); past it no SMS leaves, e-mail is used where given, and an alert is "
        "raised.",
    )
    budget_vault_upload_mb: str = Field(
        "20000/day",
        description="Global budget of MB uploaded to vaults (all clients); past it new documents "
        "are refused for a while (the person is told to try again later) and an alert is raised.",
    )
    metrics_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token for `/metrics` (Prometheus). Empty: the endpoint answers only "
        "a scraper on the same machine (a loopback connection with no proxy header), 404 to "
        "anyone else.",
    )
    node_name: str = Field(
        "",
        max_length=100,
        description="Name of this server process in metrics (`node` label) and in the worker's "
        "heartbeat. Empty: the host name. Give each process its own when several run on one "
        "host.",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`text` (one plain line per record) or `json` (one JSON object per line, "
        "with the request id, route name, status and duration on access lines). Both are "
        "redacted the same way (SECURITY.md).",
    )
    sentry_dsn: SecretStr = Field(
        SecretStr(""),
        description="Optional Sentry DSN for error reports (sentry-sdk, aiohttp integration), "
        "scrubbed like the logs: no URL secret, query string, cookie, header value, request "
        "body, local variable or personal data. Empty: Sentry is not even imported.",
    )
    timezone: str = Field(
        DEFAULT_TIMEZONE,
        description="Time zone in which pages show times (IANA name, e.g. America/Cayenne, "
        "Indian/Reunion).",
    )
    booking_buffer_minutes: int = Field(
        10,
        ge=0,
        description="Free minutes kept after every appointment before the volunteer's next one.",
    )
    booking_horizon_days: int = Field(
        90, gt=0, description="How far ahead appointments can be booked."
    )
    booking_min_notice_minutes: int = Field(
        60, description="Minimum delay between booking and the appointment."
    )
    reminder_minutes: Minutes = Field(
        (1440, 60),
        description="When reminders are sent, in minutes before the appointment (comma-separated).",
    )
    email_backend: Literal["file", "console", "smtp"] = Field(
        "file",
        description="`file` (e-mails written as .eml files under DATA_DIR/mail, and logged), "
        "`console` (logged only) or `smtp` (sent through SMTP_HOST).",
    )
    email_from: str = Field(
        "permanence@localhost", description="Sender address of notification e-mails."
    )
    smtp_host: str = Field("", description="SMTP server for EMAIL_BACKEND=smtp.")
    smtp_port: int = Field(587, description="SMTP port (587 with STARTTLS, 465 with implicit TLS).")
    smtp_username: str = Field("", description="SMTP login, if the server requires one.")
    smtp_password: SecretStr = Field(SecretStr(""), description="SMTP password.")
    smtp_tls: Literal["starttls", "tls", "none"] = Field(
        "starttls",
        description="`starttls`, `tls` (implicit, port 465) or `none` (only for a local relay).",
    )
    sms_backend: Literal["file", "console", "brevo"] = Field(
        "file",
        description="`file` (SMS written under DATA_DIR/sms, and logged), `console` (logged "
        "only) or `brevo` (Brevo transactional SMS API, needs SMS_API_KEY).",
    )
    sms_api_key: SecretStr = Field(
        SecretStr(""), description="API key of the SMS provider (SMS_BACKEND=brevo)."
    )
    sms_sender: str = Field(
        "Permanence",
        max_length=11,
        description="Sender name shown on SMS (11 characters at most).",
    )
    phone_regions: Regions = Field(
        DEFAULT_PHONE_REGIONS,
        description="Where the phone numbers we accept (and send SMS to) may come from: "
        "comma-separated region codes of the numbering plan. Default: metropolitan France and "
        "the overseas départements and collectivités. Other numbers are refused on the forms.",
    )
    sms_per_recipient_per_day: int = Field(
        6,
        ge=1,
        description="At most this many SMS to one number per day (all messages together, "
        "counted in the outbox by the day they are sent, in TIMEZONE). Past it, the person is "
        "told, and e-mail is used where given.",
    )
    outbox_poll_seconds: int = Field(
        5, gt=0, description="How often the notification worker looks for messages to send."
    )
    queue_grace_seconds: int = Field(
        120,
        gt=0,
        description="How long a person keeps their place in the drop-in queue after their page "
        "disconnects (a reload, a tunnel, a phone call).",
    )
    queue_callback_minutes: int = Field(
        30,
        gt=0,
        description="When the estimated wait in the drop-in queue passes this, the waiting page "
        "offers a call-back instead.",
    )
    queue_max_waiting: int = Field(
        200,
        gt=0,
        description="Most people waiting at once in one association's queue; beyond it the page "
        "offers a call-back.",
    )
    queue_max_per_client: int = Field(
        2,
        gt=0,
        description="Most places one client holds waiting at once in one association's queue, "
        "counted by its IPv4 address or IPv6 prefix (a keyed hash is stored, never the "
        "address).",
    )
    booking_max_per_client: int = Field(
        6,
        gt=0,
        description="Most appointments to come that one client (IPv4 address or IPv6 prefix) "
        "may hold through the public booking form in one association; referrers are not "
        "counted.",
    )
    booking_max_per_phone: int = Field(
        3,
        gt=0,
        description="Most appointments to come booked through the public form for one phone "
        "number in one association.",
    )
    pow_max_counter: int = Field(
        3000,
        ge=10,
        le=1_000_000,
        description="Proof of work asked on the public forms while their global budget is "
        "spent: the browser derives up to this many PBKDF2-SHA-256 keys (1,000 iterations "
        "each), three quarters of it on average: about 0.6 s in desktop Chromium, about 2 s "
        "of CPU for a Python script (SECURITY.md).",
    )
    queue_handling_minutes: int = Field(
        20,
        gt=0,
        description="Handling time per person assumed for the wait estimate until enough "
        "drop-in sessions have ended to measure it.",
    )
    queue_language_minutes: int = Field(
        10,
        ge=0,
        le=24 * 60,
        description="During their first N minutes in the drop-in queue, a person who asked for "
        'a volunteer speaking their language is given by "Prendre le suivant" only to '
        "volunteers who speak it; after N minutes, to anyone, and before everyone who waited "
        "less (nobody waits more than N minutes behind people matched by language). 0: first "
        "come, first served (the ask is only shown).",
    )
    callback_flag_hours: int = Field(
        24,
        gt=0,
        description="Call-back requests older than this are flagged in the volunteers' list.",
    )
    callback_expire_days: int = Field(
        7,
        gt=0,
        description="Call-back requests still open after this many days expire (reason recorded).",
    )
    callback_max_no_answer: int = Field(
        3,
        gt=0,
        description="After this many unanswered calls a call-back request is closed as "
        "unreachable.",
    )
    retention_months: int = Field(
        12,
        gt=0,
        description="Personal data (names, phones, e-mails, postal codes, free text) is purged "
        "this many months after the person's last contact; statistics events, which hold none, "
        "stay.",
    )
    stats_small_count: int = Field(
        5,
        gt=0,
        description='Counts below this are shown as "< N" in statistics exports and the API, so '
        "that nobody can be re-identified.",
    )
    rights_workers: int = Field(
        2,
        ge=0,
        le=16,
        description="Worker processes of the rights check (OpenFisca-France, server/rights/), "
        "started and warmed with each server process; about 250 MB each. 0 turns the rights "
        "check off on this node.",
    )
    rights_timeout_seconds: int = Field(
        30,
        gt=0,
        le=300,
        description="A rights check taking longer fails with a French message and its pool is "
        "restarted.",
    )
    rights_queue_max: int = Field(
        16,
        gt=0,
        description="Rights checks in flight at once on one node; past that a check is refused "
        'with "réessayez dans une minute" rather than queued.',
    )
    vault_max_document_mb: int = Field(
        10,
        gt=0,
        le=100,
        description="Largest document (encrypted) a person can put in their vault, in MB.",
    )
    vault_max_mb: int = Field(
        200, gt=0, description="Space of one vault (all its encrypted documents), in MB."
    )
    vault_max_documents: int = Field(100, gt=0, description="Documents one vault can hold.")
    vault_retention_months: int = Field(
        24,
        gt=0,
        description="A vault nobody opened for this many months is deleted, documents and all, "
        "after notices 30 and 7 days before (when the person left a phone or an e-mail).",
    )
    vault_storage: Literal["auto", "files", "database"] = Field(
        "auto",
        description="Where encrypted documents are stored: `files` under DATA_DIR/vault, "
        "`database` (table `vault_blobs`, shared by every node), `auto`: `database` on "
        "PostgreSQL, `files` on SQLite.",
    )
    vault_trustee_code_minutes: int = Field(
        60,
        gt=0,
        description="How long the code a personne de confiance gives a person stays valid.",
    )
    vault_recovery_request_minutes: int = Field(
        15,
        gt=0,
        description="How long a new device waits for its personne de confiance to answer.",
    )
    log_level: str = Field("INFO", description="Python logging level.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the values given: `load_settings` reads the environment (through
        `Environment`), so that tests can hand it a mapping instead of os.environ."""
        return (init_settings,)

    # -- Reading the environment's forms ----------------------------------------------------

    @field_validator("stun_urls", "turn_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("reminder_minutes", mode="before")
    @classmethod
    def _split_minutes(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("phone_regions", mode="before")
    @classmethod
    def _split_regions(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().upper() for part in value.split(",") if part.strip())
        return value

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [region for region in value if region not in phonenumbers.SUPPORTED_REGIONS]
        if unknown or not value:
            raise SettingsError(
                f"{PREFIX}PHONE_REGIONS must list region codes of the numbering plan such as "
                f"FR,RE,GP; unknown: {', '.join(unknown) or '(none given)'}"
            )
        return value

    @field_validator("trust_proxy", mode="before")
    @classmethod
    def _yes_or_no(cls, value: object) -> object:
        # Narrower than pydantic's booleans, and an empty variable means false.
        if not isinstance(value, str):
            return value
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
        raise ValueError(f"expected true/false, got {value!r}")

    # -- Rules of one setting ---------------------------------------------------------------

    @field_validator("data_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("base_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        base_url = value.rstrip("/")
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise SettingsError(
                f"{PREFIX}BASE_URL={base_url!r} must be an absolute http(s) URL such as "
                "https://permanence.example.org"
            )
        return base_url

    @field_validator("reminder_minutes")
    @classmethod
    def _positive_minutes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(minutes <= 0 for minutes in value):
            raise SettingsError(f"{PREFIX}REMINDER_MINUTES must be positive numbers of minutes")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SettingsError(
                f"{PREFIX}TIMEZONE={value!r} is not a known IANA time zone"
            ) from exc
        return value

    @field_validator(
        "budget_wrong_codes",
        "budget_bookings",
        "budget_callback_requests",
        "budget_queue_joins",
        "budget_sms",
        "budget_vault_upload_mb",
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"expected an amount per period such as 300/hour: {exc}") from exc
        return value

    @field_validator("stun_urls", "turn_urls")
    @classmethod
    def _ice_schemes(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        scheme = "stun" if info.field_name == "stun_urls" else "turn"
        for url in value:
            if not url.startswith((f"{scheme}:", f"{scheme}s:")):
                raise SettingsError(
                    f"{_variable(str(info.field_name))} entry {url!r} must start with "
                    f"{scheme}: or {scheme}s:"
                )
        return value

    # -- Rules between settings -------------------------------------------------------------

    @model_validator(mode="after")
    def _required_together(self) -> Settings:
        if not self.secret_key.get_secret_value() and self.secure_cookies:
            raise SettingsError(
                f"{PREFIX}SECRET_KEY is required when {PREFIX}BASE_URL is https "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        if self.turn_urls and not self.turn_secret.get_secret_value():
            raise SettingsError(f"{PREFIX}TURN_SECRET is required when {PREFIX}TURN_URLS is set")
        if self.email_backend == "smtp" and not self.smtp_host:
            raise SettingsError(f"{PREFIX}SMTP_HOST is required when {PREFIX}EMAIL_BACKEND=smtp")
        if self.sms_backend == "brevo" and not self.sms_api_key.get_secret_value():
            raise SettingsError(f"{PREFIX}SMS_API_KEY is required when {PREFIX}SMS_BACKEND=brevo")
        return self

    # -- Derived values -----------------------------------------------------------------------

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

    def notification_backend_problems(self) -> list[str]:
        """Why notifications would not reach people on a public (https) site: one English
        sentence per backend that only writes files or logs, for the operator (the serve
        warning, /readyz). Empty on http, where `file` and `console` are the expected choice."""
        if not self.secure_cookies:
            return []
        problems = []
        if self.email_backend in LOCAL_BACKENDS:
            problems.append(
                f"{PREFIX}EMAIL_BACKEND={self.email_backend}: e-mails are not sent, only "
                f"{LOCAL_BACKENDS[self.email_backend]}; set {PREFIX}EMAIL_BACKEND=smtp and "
                f"{PREFIX}SMTP_* (deploy/env.example)"
            )
        if self.sms_backend in LOCAL_BACKENDS:
            problems.append(
                f"{PREFIX}SMS_BACKEND={self.sms_backend}: text messages are not sent, only "
                f"{LOCAL_BACKENDS[self.sms_backend]}; set {PREFIX}SMS_BACKEND=brevo and "
                f"{PREFIX}SMS_API_KEY (deploy/env.example)"
            )
        return problems


class Environment(EnvSettingsSource):
    """pydantic-settings' reading of ``PERMANENCE_*`` variables, over a given mapping."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        # Names are matched without regard to case, as pydantic-settings does by default.
        self.env_vars = {
            name.lower(): value for name, value in environ.items() if name.startswith(PREFIX)
        }


@dataclass(frozen=True)
class SettingSpec:
    """One row of the settings table, as the README shows it."""

    name: str
    default: str
    help: str


def _shown(value: object) -> str:
    """A default as written in the environment."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value}"  # Path("./var") prints as "var"
    return str(value)


SETTINGS: tuple[SettingSpec, ...] = tuple(
    SettingSpec(name.upper(), _shown(field.default), field.description or "")
    for name, field in Settings.model_fields.items()
)


def _message(error: ValidationError, values: Mapping[str, Any]) -> str:
    """The first problem, naming the variable and what it accepts."""
    problem = error.errors(include_url=False)[0]
    cause = problem.get("ctx", {}).get("error")
    if isinstance(cause, SettingsError):
        return str(cause)
    name = str(problem["loc"][0]) if problem["loc"] else ""
    variable = _variable(name)
    kind = problem["type"]
    if kind == "greater_than" and problem["ctx"]["gt"] == 0:
        return f"{variable} must be a positive number"
    if kind == "greater_than_equal" and problem["ctx"]["ge"] == 0:
        return f"{variable} cannot be negative"
    if kind == "string_too_long":
        return f"{variable} must be {problem['ctx']['max_length']} characters at most"
    if kind == "literal_error":
        allowed = get_args(Settings.model_fields[name].annotation)
        return f"{variable} must be one of {', '.join(allowed)}"
    raw = values.get(name, problem.get("input"))
    detail = str(cause) if cause is not None else problem["msg"]
    return f"{variable}={raw!r} is invalid: {detail}"


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
    """Read every setting from ``environ`` (default: the process environment) and validate it;
    ``overrides`` (field names) win over the environment."""
    values = {**Environment(Settings, os.environ if environ is None else environ)(), **overrides}
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise SettingsError(_message(exc, values)) from None
    # What lives under DATA_DIR, filled in once the rest is known to be valid.
    changes: dict[str, Any] = {}
    if not settings.database_url:
        changes["database_url"] = (
            f"sqlite+aiosqlite:///{(settings.data_dir / 'permanence.sqlite3')}"
        )
    secret_key = settings.secret_key.get_secret_value() or _secret_from_file(settings.data_dir)
    if len(secret_key) < SECRET_KEY_MIN_LENGTH:
        raise SettingsError(
            f"{PREFIX}SECRET_KEY must be at least {SECRET_KEY_MIN_LENGTH} characters long"
        )
    changes["secret_key"] = SecretStr(secret_key)
    return settings.model_copy(update=changes)
