"""The `permanence` command, run as a real subprocess on a fresh data folder."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest


def _run(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERMANENCE_")}
    env["PERMANENCE_DATA_DIR"] = str(tmp_path / "var")
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def migrated(tmp_path: Path) -> Path:
    result = _run(tmp_path, "migrate")
    assert result.returncode == 0, result.stderr
    return tmp_path


def test_create_user_reads_the_password_from_stdin(migrated: Path) -> None:
    result = _run(
        migrated,
        "create-user",
        "--email",
        "Lea@Example.org",
        "--name",
        "Léa",
        "--role",
        "coordinator",
        "--password-stdin",
        stdin="a very long password\n",
    )
    assert result.returncode == 0, result.stderr
    assert "Compte créé : Lea@Example.org (coordinator)." in result.stdout
    again = _run(
        migrated,
        "create-user",
        "--email",
        "lea@example.org",
        "--name",
        "Léa",
        "--role",
        "volunteer",
        "--password-stdin",
        stdin="another long password\n",
    )
    assert again.returncode != 0
    assert "Un compte existe déjà" in again.stderr


def test_create_user_refuses_a_short_password(migrated: Path) -> None:
    result = _run(
        migrated,
        "create-user",
        "--email",
        "a@example.org",
        "--name",
        "A",
        "--role",
        "volunteer",
        "--password-stdin",
        stdin="short\n",
    )
    assert result.returncode != 0
    assert "au moins 10 caractères" in result.stderr


def test_demo_prints_logins_and_can_run_twice(migrated: Path) -> None:
    first = _run(migrated, "demo")
    assert first.returncode == 0, first.stderr
    assert "benevole@demo.invalid" in first.stdout and "coordination@demo.invalid" in first.stdout
    second = _run(migrated, "demo")
    assert second.returncode == 0, second.stderr
    # A demo volunteer speaks Arabic and English (issue 17): said, and on their profile.
    assert "observateur@demo.invalid) parle arabe et anglais" in second.stdout
    database = next((migrated / "var").glob("*.sqlite3"))
    with closing(sqlite3.connect(database)) as db:
        spoken = db.execute(
            "SELECT language FROM user_languages JOIN users ON users.id = user_id"
            " WHERE email = 'observateur@demo.invalid' ORDER BY language"
        ).fetchall()
    assert spoken == [("ar",), ("en",)]


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    env_run = subprocess.run(
        [sys.executable, "-m", "server.cli", "migrate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **os.environ,
            "PERMANENCE_DATA_DIR": str(tmp_path),
            "PERMANENCE_BASE_URL": "https://x.example.org",
            "PERMANENCE_SECRET_KEY": "",
        },
    )
    assert env_run.returncode != 0
    assert "SECRET_KEY is required" in env_run.stderr
