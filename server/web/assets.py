"""Static files as pages reference them: content-versioned URLs a browser may keep for a year,
and, for each page script, the modules it imports, so that the page asks for all of them at once.

On a slow mobile link every round trip costs 150–400 ms. Two kinds cost the most on a first
visit: a chain of imports (the page script, then the modules it imports, then theirs: one round
trip per level) and, on every later visit, one revalidation per file. So a page that runs a
module gets, in its ``<head>``:

- an import map (``<script type="importmap">``) that turns every module's plain URL into its
  versioned one, so that the modules' own relative ``import`` statements fetch versioned URLs;
- a ``<link rel="modulepreload">`` for every module the entry imports, however deep, so that
  they are all requested with the page's first wave of requests;
- the entry's ``<script type="module">``.

A versioned URL (``?v=`` the first 16 hex digits of the file's SHA-256) is served with
``Cache-Control: immutable`` only when ``v`` is the version of the file served
(server/web/middlewares.py): a page rendered by another version of the code never pins a
file that doesn't match it. Browsers without import maps still work: they fetch the plain URLs,
which are revalidated on every use.

The import map is an inline script: the Content-Security-Policy of pages allows exactly it by
its hash (``script_src``). Versions are read again when a file changed (checked at most once a
second), so editing a file under ``make run`` needs no restart.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from markupsafe import Markup, escape

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
STATIC_DIR = WEB_DIR / "static"
NODE_MODULES = WEB_DIR / "node_modules"
# Browser files of npm packages (web/package.json, installed by `npm ci`), served from our own
# origin under /static/vendor/ (never from a CDN): name under /static/vendor/ → file.
VENDORED = {
    "socket.io.esm.min.js": NODE_MODULES / "socket.io-client" / "dist" / "socket.io.esm.min.js",
    # ALTCHA's "external" build: no inline styles (its CSS is a file) and no Worker built from
    # a blob (the PBKDF2 Worker is a file), so it runs under our CSP. Loaded only on a public
    # form under pressure (templates/_pow.html).
    "altcha/altcha.min.js": NODE_MODULES / "altcha" / "dist" / "external" / "altcha.min.js",
    "altcha/altcha.css": NODE_MODULES / "altcha" / "dist" / "external" / "altcha.css",
    "altcha/pbkdf2.js": NODE_MODULES / "altcha" / "dist" / "workers" / "pbkdf2.js",
    # The vault page's lazily imported parts (never on its first load): the recovery sheet's
    # QR code, drawn in the browser because the code must not reach the server, and the export
    # of every document as one zip, made in the browser from the decrypted documents.
    "uqr.esm.js": NODE_MODULES / "uqr" / "dist" / "index.mjs",
    "fflate.esm.js": NODE_MODULES / "fflate" / "esm" / "browser.js",
}
# Vendored files that are ES modules: they go in the import map like ours.
ES_MODULE_SUFFIXES = (".esm.min.js", ".esm.js")


def static_file(path: str) -> Path:
    """The file served at /static/<path>: a vendored npm file or one under web/static."""
    vendored = VENDORED.get(path.removeprefix("vendor/")) if path.startswith("vendor/") else None
    return vendored or STATIC_DIR / path


# Static imports and re-exports (`import x from "./a.js"`, `import "./a.js"`, `export … from`):
# they are fetched before the importing module runs. `import("…")` is lazy: not followed.
STATIC_IMPORT = re.compile(
    r"""(?:^|[;\s}])(?:import|export)\s*(?:[\w$*{}\s,]+?\s*from\s*)?["']([^"'\n]+)["']""",
    re.MULTILINE,
)
DYNAMIC_IMPORT = re.compile(r"""\bimport\(\s*["']([^"'\n]+)["']\s*\)""")
# Modules a page script imports dynamically as soon as it runs: not needed to read and use the
# page's first screen (the beneficiary's consent), so they must not delay it, but needed right
# after. They are preloaded at low priority (and prefetched with the script by pages before).
# tests/test_page_load.py checks that each is a dynamic import of its script.
SOON = {"js/beneficiary.js": ("js/signaling.js", "js/rtc.js", "js/usage.js")}
VERSION_CHARS = 16
CHECK_EVERY_SECONDS = 1.0


@dataclass(frozen=True)
class _Stamp:
    mtime_ns: int
    size: int


def _stamp(file: Path) -> _Stamp | None:
    try:
        stat = file.stat()
    except OSError:
        return None
    return _Stamp(stat.st_mtime_ns, stat.st_size)


class Assets:
    """Versions, import graph and import map of the files under /static/."""

    def __init__(self) -> None:
        self._versions: dict[str, tuple[_Stamp | None, str]] = {}
        self._imports: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._map: tuple[Markup, str] | None = None
        self._module_list: list[str] = []
        self._checked = 0.0

    # -- versions ---------------------------------------------------------------------------

    def _fresh(self) -> None:
        """Forget what changed on disk since the last look (at most once a second)."""
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY_SECONDS:
            return
        self._checked = now
        for path, (stamp, _version) in list(self._versions.items()):
            if _stamp(static_file(path)) != stamp:
                del self._versions[path]
                self._map = None
        modules = self._modules()
        if modules != self._module_list:
            self._module_list = modules
            self._map = None

    def version(self, path: str) -> str:
        """The version of the file served at /static/<path> ("" if there is none)."""
        self._fresh()
        known = self._versions.get(path)
        if known is not None:
            return known[1]
        file = static_file(path)
        stamp = _stamp(file)
        version = ""
        if stamp is not None and file.is_file():
            version = hashlib.sha256(file.read_bytes()).hexdigest()[:VERSION_CHARS]
        self._versions[path] = (stamp, version)
        return version

    def url(self, path: str) -> str:
        """The versioned URL of a static file."""
        version = self.version(path)
        return f"/static/{path}?v={version}" if version else f"/static/{path}"

    # -- modules ----------------------------------------------------------------------------

    def _direct_imports(self, path: str) -> tuple[str, ...]:
        version = self.version(path)
        known = self._imports.get(path)
        if known is not None and known[0] == version:
            return known[1]
        file = static_file(path)
        found: list[str] = []
        if version:
            base = f"/static/{path}"
            for specifier in STATIC_IMPORT.findall(file.read_text(encoding="utf-8")):
                target = _resolve(base, specifier)
                if target is not None and target not in found:
                    found.append(target)
        self._imports[path] = (version, tuple(found))
        return tuple(found)

    def module_graph(self, entry: str) -> list[str]:
        """Every module `entry` imports statically, however deep, deepest first, without it."""
        seen: list[str] = []

        def visit(path: str) -> None:
            for child in self._direct_imports(path):
                if child not in seen and child != entry:
                    seen.append(child)
                    visit(child)

        visit(entry)
        return seen

    def _modules(self) -> list[str]:
        """Every module a page may import: our scripts and the vendored ES modules."""
        ours = sorted(
            str(file.relative_to(STATIC_DIR)) for file in (STATIC_DIR / "js").glob("*.js")
        )
        vendored = [f"vendor/{name}" for name in VENDORED if name.endswith(ES_MODULE_SUFFIXES)]
        return ours + vendored

    def _import_map(self) -> tuple[Markup, str]:
        """The import map and its CSP source, built again only when a module changed (every
        page response asks for the CSP source: no file is read or listed for it)."""
        self._fresh()
        if self._map is None:
            imports = {f"/static/{p}": self.url(p) for p in self._module_list if self.version(p)}
            text = json.dumps({"imports": imports}, separators=(",", ":"))
            digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
            # JSON of our own paths (no "<"): safe inside <script>.
            self._map = (Markup(text), f"'sha256-{digest}'")  # noqa: S704
        return self._map

    def script_src(self) -> str:
        """The CSP source that allows the import map, and nothing else inline."""
        return self._import_map()[1]

    def soon_graph(self, entry: str) -> list[str]:
        """The modules `entry` imports dynamically at once (SOON), with their own imports,
        less those it imports statically."""
        first = set(self.module_graph(entry))
        paths: list[str] = []
        for module in SOON.get(entry, ()):
            for path in [module, *self.module_graph(module)]:
                if path not in first and path not in paths and path != entry:
                    paths.append(path)
        return paths

    def module_tags(self, entry: str) -> Markup:
        """The <head> tags that load the page script `entry` (e.g. "js/beneficiary.js")."""
        text, _source = self._import_map()
        lines = [f'<script type="importmap">{text}</script>']
        for path in self.module_graph(entry):
            lines.append(f'<link rel="modulepreload" href="{escape(self.url(path))}">')
        for path in self.soon_graph(entry):
            url = escape(self.url(path))
            lines.append(f'<link rel="modulepreload" href="{url}" fetchpriority="low">')
        lines.append(f'<script type="module" src="{escape(self.url(entry))}"></script>')
        return Markup("\n".join(lines))  # noqa: S704 (every URL escaped)

    def prefetch_tags(self, *entries: str) -> Markup:
        """<link rel=prefetch> for the files the NEXT page will need (its stylesheet is the
        same), fetched at low priority while the person reads or types on this one."""
        paths: list[str] = []
        for entry in entries:
            for path in [entry, *self.module_graph(entry), *self.soon_graph(entry)]:
                if path not in paths:
                    paths.append(path)
        tags = [f'<link rel="prefetch" href="{escape(self.url(p))}">' for p in paths]
        return Markup("\n".join(tags))  # noqa: S704 (every URL escaped)


ASSETS_KEY = web.AppKey("assets", Assets)


def _resolve(base: str, specifier: str) -> str | None:
    """The /static/ path (without the prefix) a relative specifier of module `base` names."""
    if not specifier.startswith(("./", "../", "/static/")):
        return None  # bare specifiers and full URLs: not ours
    parts = base.strip("/").split("/")[:-1]
    if specifier.startswith("/"):
        parts, specifier = [], specifier.lstrip("/")
    for part in specifier.split("?")[0].split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    path = "/".join(parts)
    return path.removeprefix("static/") if path.startswith("static/") else None
