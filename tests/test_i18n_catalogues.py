"""Every language's catalogue holds every message a helped person may read, with the same
placeholders as the French; each says whether a native speaker reviewed it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.pofile import read_po

from server import i18n

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "server" / "locale"
BENEFICIARY_POT = LOCALE / "beneficiary.pot"
TRANSLATED = [language for language in i18n.LANGUAGES if language.code != i18n.DEFAULT_LOCALE]

# Placeholders a translation must keep: %-style (named or not), str.format and HTML tags.
PLACEHOLDER = re.compile(r"%\(\w+\)[#0 +-]?\d*(?:\.\d+)?[sdifr]|%[sd]|\{\w*\}|</?[a-z][^>]*>")


def _catalogue(language: i18n.Language) -> Catalog:
    path = LOCALE / language.catalogue / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as handle:
        return read_po(handle, locale=language.catalogue)


def _beneficiary_ids() -> set[str | tuple[str, ...]]:
    with BENEFICIARY_POT.open("rb") as handle:
        return {message.id for message in read_po(handle) if message.id}


def _strings(message: Message) -> tuple[str, ...]:
    string = message.string
    return tuple(string) if isinstance(string, (tuple, list)) else (str(string or ""),)


def test_the_beneficiary_template_holds_every_message_of_their_pages(tmp_path: Path) -> None:
    fresh = tmp_path / "beneficiary.pot"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "pybabel"),
            "extract",
            "-F",
            "babel-beneficiary.cfg",
            "-o",
            str(fresh),
            "--no-location",
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    with fresh.open("rb") as handle:
        extracted = {message.id for message in read_po(handle) if message.id}
    assert len(extracted) > 700
    missing = extracted - _beneficiary_ids()
    assert not missing, f"run `make messages`: {sorted(map(str, missing))[:5]}"


@pytest.mark.parametrize("language", TRANSLATED, ids=lambda language: language.code)
def test_every_message_of_the_beneficiary_pages_is_translated(language: i18n.Language) -> None:
    catalogue = _catalogue(language)
    missing = []
    for msgid in _beneficiary_ids():
        message = catalogue.get(msgid)
        if (
            message is None
            or message.fuzzy
            or not all(s.strip() for s in _strings(message))
            or len(_strings(message)) != (catalogue.num_plurals if message.pluralizable else 1)
        ):
            missing.append(msgid)
    assert not missing, (
        f"{len(missing)} messages of the beneficiary's pages untranslated in {language.catalogue}:"
        f" {sorted(map(str, missing))[:5]}"
    )


@pytest.mark.parametrize("language", TRANSLATED, ids=lambda language: language.code)
def test_a_translation_keeps_every_placeholder_of_the_french(language: i18n.Language) -> None:
    lost = []
    for message in _catalogue(language):
        if not message.id or not any(_strings(message)):
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        wanted = [sorted(PLACEHOLDER.findall(text)) for text in ids]
        for string in _strings(message):
            # A plural form keeps the singular's placeholders or the plural's.
            if string and sorted(PLACEHOLDER.findall(string)) not in wanted:
                lost.append((ids[0], string))
    assert not lost, f"placeholders changed in {language.catalogue}: {lost[:3]}"


@pytest.mark.parametrize("language", TRANSLATED, ids=lambda language: language.code)
def test_a_catalogue_passes_babels_checks_and_says_who_reviewed_it(
    language: i18n.Language,
) -> None:
    catalogue = _catalogue(language)
    problems = [(message.id, errors) for message, errors in catalogue.check() if errors]
    assert not problems, problems[:3]
    header = catalogue.header_comment
    assert "NOT YET REVIEWED BY A NATIVE SPEAKER" in header or "reviewed by" in header, header


def test_the_compiled_catalogues_are_the_ones_the_app_reads(tmp_path: Path) -> None:
    """Compiling every catalogue succeeds (a broken one would silently fall back to French),
    and the app's own gettext finds a translation in each. Compiled in a copy: other test
    processes read the tree's."""
    copy = tmp_path / "locale"
    shutil.copytree(LOCALE, copy, ignore=shutil.ignore_patterns("*.mo"))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "pybabel"),
            "compile",
            "-d",
            str(copy),
            "-D",
            "messages",
            "--statistics",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for language in TRANSLATED:
        with i18n.use_language(language):
            assert i18n.gettext("Aller au contenu") != "Aller au contenu", language.code


def test_no_message_is_written_inside_an_f_string() -> None:
    """Babel extracts nothing from inside an f-string (Python 3.11 reads one as a single
    token): a `_()` there is never translated. Two e-mails were French in every language so."""
    found = []
    for path in [*(ROOT / "server").rglob("*.py"), *(ROOT / "signaling").rglob("*.py")]:
        with path.open("rb") as handle:
            for token in tokenize.tokenize(handle.readline):
                prefix = token.string[:2].lower()
                is_f = token.type == tokenize.STRING and ("f" in prefix.split('"')[0].split("'")[0])
                if is_f and re.search(r"\{\s*(?:_|gettext|ngettext)\(", token.string):
                    found.append(f"{path.relative_to(ROOT)}:{token.start[0]}")
    assert not found, found
