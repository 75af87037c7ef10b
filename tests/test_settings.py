"""The settings table: documented, validated, with safe defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import PREFIX, SETTINGS, SettingsError, load_settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = README.read_text(encoding="utf-8")
    missing = [s.name for s in SETTINGS if f"`{PREFIX}{s.name}`" not in readme]
    assert missing == [], f"undocumented settings: {missing}"


def test_every_documented_setting_exists() -> None:
    import re

    names = {s.name for s in SETTINGS}
    documented = set(re.findall(rf"`{PREFIX}([A-Z_]+)`", README.read_text(encoding="utf-8")))
    documented.discard("TEST_POSTGRES_URL")  # the test suite's own variable
    assert documented <= names, f"documented but unknown: {documented - names}"


def test_defaults_use_sqlite_under_data_dir_and_generate_a_kept_secret(tmp_path: Path) -> None:
    env = {"PERMANENCE_DATA_DIR": str(tmp_path)}
    first = load_settings(env)
    assert first.database_url == f"sqlite+aiosqlite:///{tmp_path / 'permanence.sqlite3'}"
    assert len(first.secret_key) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert load_settings(env).secret_key == first.secret_key


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
    ],
)
def test_bad_values_are_refused_with_a_precise_message(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    env = {"PERMANENCE_DATA_DIR": str(tmp_path), PREFIX + name: value}
    with pytest.raises(SettingsError, match=message):
        load_settings(env)
