"""User-facing text goes through gettext and the catalogue template is kept up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
POT = ROOT / "server" / "locale" / "messages.pot"


def _msgids(path: Path) -> set[str]:
    with path.open("rb") as handle:
        return {str(m.id) for m in read_po(handle) if m.id}


def test_catalogue_template_holds_every_message_of_the_code(tmp_path: Path) -> None:
    fresh = tmp_path / "messages.pot"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "pybabel"),
            "extract",
            "-F",
            "babel.cfg",
            "-o",
            str(fresh),
            "--no-location",
            "--sort-output",
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    missing = _msgids(fresh) - _msgids(POT)
    assert not missing, f"run `make messages`: {sorted(missing)[:5]}"


def test_french_catalogue_covers_the_template() -> None:
    french = ROOT / "server" / "locale" / "fr" / "LC_MESSAGES" / "messages.po"
    assert _msgids(POT) <= _msgids(french), "run `make messages` to update the French catalogue"
