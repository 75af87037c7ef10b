"""The settings table: documented, validated, with safe defaults, secrets kept out of logs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from server.settings import PREFIX, SETTINGS, SettingsError, load_settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = README.read_text(encoding="utf-8")
    missing = [s.name for s in SETTINGS if f"`{PREFIX}{s.name}`" not in readme]
    assert missing == [], f"undocumented settings: {missing}"


def test_every_documented_setting_exists() -> None:
    names = {s.name for s in SETTINGS}
    documented = set(re.findall(rf"`{PREFIX}([A-Z0-9_]+)`", README.read_text(encoding="utf-8")))
    documented.discard("TEST_POSTGRES_URL")  # the test suite's own variable
    assert documented <= names, f"documented but unknown: {documented - names}"


def test_the_readme_shows_each_settings_own_default_and_help() -> None:
    rows = {
        name: (default, text)
        for name, default, text in re.findall(
            rf"^\| `{PREFIX}([A-Z0-9_]+)` \| (.*?) \| (.*) \|$",
            README.read_text(encoding="utf-8"),
            re.MULTILINE,
        )
    }
    for spec in SETTINGS:
        assert spec.help, f"{spec.name} has no help text"
        shown = f"`{spec.default}`" if spec.default else "*(empty)*"
        assert rows.get(spec.name) == (shown, spec.help), spec.name


def test_secrets_never_show_in_a_repr(tmp_path: Path) -> None:
    secrets = {
        "SECRET_KEY": "k-secret-" + "k" * 40,
        "TURN_SECRET": "turn-secret-value",
        "SMTP_PASSWORD": "smtp-password-value",
        "SMS_API_KEY": "sms-api-key-value",
    }
    env = {PREFIX + name: value for name, value in secrets.items()}
    env |= {"PERMANENCE_DATA_DIR": str(tmp_path), "PERMANENCE_TURN_URLS": "turn:t.example.org"}
    settings = load_settings(env)
    for value in secrets.values():
        assert value not in repr(settings) and value not in str(settings)
    assert settings.turn_secret.get_secret_value() == "turn-secret-value"
    with pytest.raises(ValidationError):
        settings.timezone = "Indian/Reunion"  # type: ignore[misc]


def test_lists_are_comma_separated_and_overrides_win(tmp_path: Path) -> None:
    env = {
        "PERMANENCE_DATA_DIR": str(tmp_path),
        "PERMANENCE_REMINDER_MINUTES": "1440, 60,15",
        "PERMANENCE_STUN_URLS": "stun:a.example.org:3478, stuns:b.example.org",
        "PERMANENCE_TRUST_PROXY": "",
    }
    settings = load_settings(env, queue_max_waiting=7)
    assert settings.reminder_minutes == (1440, 60, 15)
    assert settings.stun_urls == ("stun:a.example.org:3478", "stuns:b.example.org")
    assert settings.trust_proxy is False and settings.queue_max_waiting == 7


def test_defaults_use_sqlite_under_data_dir_and_generate_a_kept_secret(tmp_path: Path) -> None:
    env = {"PERMANENCE_DATA_DIR": str(tmp_path)}
    first = load_settings(env)
    assert first.database_url == f"sqlite+aiosqlite:///{tmp_path / 'permanence.sqlite3'}"
    key = first.secret_key.get_secret_value()
    assert len(key) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert load_settings(env).secret_key.get_secret_value() == key


def test_https_requires_an_explicit_secret_key(tmp_path: Path) -> None:
    env = {"PERMANENCE_DATA_DIR": str(tmp_path), "PERMANENCE_BASE_URL": "https://x.example.org"}
    with pytest.raises(SettingsError, match="SECRET_KEY is required"):
        load_settings(env)
    settings = load_settings(env | {"PERMANENCE_SECRET_KEY": "k" * 40})
    assert settings.secure_cookies


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BASE_URL", "permanence.example.org", "absolute http"),
        ("TURN_URLS", "turn:turn.example.org", "TURN_SECRET is required"),
        ("STUN_URLS", "http://stun.example.org", "must start with stun:"),
        ("CODE_TTL_MINUTES", "quinze", "CODE_TTL_MINUTES"),
        ("CODE_TTL_MINUTES", "0", "positive"),
        ("TRUST_PROXY", "maybe", "TRUST_PROXY"),
        ("SECRET_KEY", "short", "at least 32"),
        ("REMINDER_MINUTES", "60,0", "REMINDER_MINUTES must be positive"),
        ("BOOKING_BUFFER_MINUTES", "-5", "BOOKING_BUFFER_MINUTES cannot be negative"),
        ("EMAIL_BACKEND", "pigeon", "EMAIL_BACKEND must be one of file, console, smtp"),
        ("SMS_SENDER", "Permanence 93", "SMS_SENDER must be 11 characters at most"),
        ("SMS_BACKEND", "brevo", "SMS_API_KEY is required"),
        ("TIMEZONE", "Mars/Olympus", "not a known IANA time zone"),
    ],
)
def test_bad_values_are_refused_with_a_precise_message(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    env = {"PERMANENCE_DATA_DIR": str(tmp_path), PREFIX + name: value}
    with pytest.raises(SettingsError, match=message):
        load_settings(env)
