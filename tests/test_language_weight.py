"""The beneficiary's first load stays within 60 KB compressed in every language: the room
opened by its link, and the home page (bench/page_weight.py counts what gzip puts on the wire)."""

from __future__ import annotations

import json

import pytest

from bench.page_weight import GZIP, TARGET_BYTES, page_first_load
from server import i18n
from tests.browser import ARTIFACTS
from tests.conftest import Running
from tests.language_pages import beneficiary_pages


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_first_load_stays_under_60_kb_compressed_in_every_language(
    running: Running,
) -> None:
    pages = await beneficiary_pages(running)
    room = pages.join_link.removeprefix(running.base_url)
    weights: dict[str, dict[str, int]] = {}
    for language in i18n.LANGUAGES:
        for name, path in (("room", room), ("home", "/"), ("dropin", "/aide")):
            loaded = await page_first_load(running.base_url, path, GZIP, language=language.code)
            assert "error" not in loaded, loaded.get("error")
            document = loaded["files"][0].text
            assert f'lang="{language.code}"' in document, (language.code, name)
            weights.setdefault(language.code, {})[name] = sum(f.wire_bytes for f in loaded["files"])
    ARTIFACTS.mkdir(exist_ok=True)  # the figures, for BENCHMARKS.md "Languages (issue 17)"
    (ARTIFACTS / "language-weights.json").write_text(json.dumps(weights, indent=1))
    heaviest = max(weight for by_page in weights.values() for weight in by_page.values())
    assert heaviest <= TARGET_BYTES, weights
    # Translations may be longer than the French, but not by a page's worth.
    for by_page in weights.values():
        assert by_page["room"] <= weights["fr"]["room"] * 1.1, weights
