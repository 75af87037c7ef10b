"""Beneficiary first load: the bytes the server actually puts on the wire for `/j/<token>` (the
room itself since issue 14; a redirect to `/b` before) and every same-origin script and
stylesheet the page pulls in (HTML ``<script src>``, ``<link rel=stylesheet|modulepreload|
preload>``, CSS ``@import``, and ES-module static ``import``/``export … from`` followed
recursively, through the page's import map as a browser resolves them).

Measured twice in the same run: with ``Accept-Encoding: gzip`` (what a phone gets) and with
``Accept-Encoding: identity`` (the baseline: the same files uncompressed). The client never
decompresses before counting (``auto_decompress=False``); it only gunzips afterwards to parse.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

import aiohttp

from bench.context import BenchEnv, Row
from server.web.assets import DYNAMIC_IMPORT, STATIC_IMPORT

TARGET_BYTES = 60_000  # "≤ 60 KB", read strictly as 60,000 bytes
GZIP = "gzip"
IDENTITY = "identity"
# Modules: static imports block the first render (followed); `import("…")` is listed apart.
CSS_IMPORT = re.compile(r"""@import\s+(?:url\()?\s*["']?([^"')\s;]+)""")
CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+)["']?\s*\)""")


@dataclass
class Fetched:
    """One response as received: body bytes on the wire, header bytes, decoded size."""

    url: str
    kind: str
    encoding: str
    status: int = 0
    content_type: str = ""
    content_encoding: str = ""
    transfer: str = ""
    wire_bytes: int = 0
    header_bytes: int = 0
    decoded_bytes: int = 0
    text: str = field(default="", repr=False)


def _header_bytes(response: aiohttp.ClientResponse) -> int:
    status_line = len(f"HTTP/1.1 {response.status} {response.reason}\r\n")
    fields = sum(len(name) + len(value) + 4 for name, value in response.raw_headers)
    return status_line + fields + 2


async def fetch(
    http: aiohttp.ClientSession,
    url: str,
    kind: str,
    encoding: str,
    redirects: bool = False,
    language: str | None = None,
) -> Fetched:
    """GET ``url`` asking for ``encoding`` (and a page in ``language``, as a browser set to it
    asks); count the body exactly as it arrived."""
    result = Fetched(url=url, kind=kind, encoding=encoding)
    headers = {"Accept-Encoding": encoding}
    if language:
        headers["Accept-Language"] = language
    async with http.get(url, headers=headers, allow_redirects=redirects) as response:
        body = await response.read()
        result.status = response.status
        result.content_type = response.headers.get("Content-Type", "")
        result.content_encoding = response.headers.get("Content-Encoding", "")
        length = response.headers.get("Content-Length")
        result.transfer = "content-length" if length is not None else "chunked"
        result.wire_bytes = len(body)
        if length is not None and int(length) != len(body):
            raise RuntimeError(f"{url}: Content-Length {length} but {len(body)} bytes read")
        result.header_bytes = _header_bytes(response)
    decoded = body
    if result.content_encoding == "gzip":
        decoded = zlib.decompress(body, 16 + zlib.MAX_WBITS)
    elif result.content_encoding:
        raise RuntimeError(f"{url}: unexpected Content-Encoding {result.content_encoding}")
    result.decoded_bytes = len(decoded)
    result.text = decoded.decode("utf-8", errors="replace")
    return result


class PageRefs(HTMLParser):
    """Scripts, stylesheets and preloads an HTML page references (and what it leaves out)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str]] = []  # (kind, url)
        self.uncounted: list[tuple[str, str]] = []
        self.import_map: dict[str, str] = {}
        self._in_import_map = False

    def handle_data(self, data: str) -> None:
        """The import map's JSON (module URL → the URL actually fetched)."""
        if self._in_import_map:
            self.import_map.update(json.loads(data).get("imports", {}))

    def handle_endtag(self, tag: str) -> None:
        """End of the import map, if in it."""
        self._in_import_map = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Collect what the browser fetches before the page is usable."""
        a = {name: value or "" for name, value in attrs}
        rel = a.get("rel", "").lower().split()
        if tag == "script" and a.get("type", "").lower() == "importmap":
            self._in_import_map = True
        elif tag == "script" and a.get("src"):
            kind = "module" if a.get("type", "").lower() == "module" else "script"
            self.refs.append((kind, a["src"]))
        elif tag == "link" and a.get("href"):
            if "stylesheet" in rel:
                self.refs.append(("stylesheet", a["href"]))
            elif "modulepreload" in rel:
                self.refs.append(("module", a["href"]))
            elif "preload" in rel and a.get("as") in {"script", "style", "font"}:
                kind = {"script": "script", "style": "stylesheet", "font": "font"}[a["as"]]
                self.refs.append((kind, a["href"]))
            else:
                self.uncounted.append((f"link rel={' '.join(rel)}", a["href"]))
        elif tag in {"img", "source", "audio", "video"} and a.get("src"):
            self.uncounted.append((tag, a["src"]))


def _mapped(import_map: dict[str, str], url: str) -> str:
    """The URL a browser fetches for a module URL, through the page's import map."""
    return import_map.get(urldefrag(url).url, url)


def _same_origin(url: str, origin: str) -> bool:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" == origin


def module_imports(source: str) -> tuple[list[str], list[str]]:
    """(static, dynamic) import specifiers of an ES module."""
    static = [m for m in STATIC_IMPORT.findall(source) if m.startswith(("/", "./", "../", "http"))]
    dynamic = DYNAMIC_IMPORT.findall(source)
    return static, dynamic


async def crawl(
    http: aiohttp.ClientSession, page: Fetched, origin: str, encoding: str
) -> dict[str, Any]:
    """Fetch everything ``page`` pulls in, recursively; same-origin only."""
    parser = PageRefs()
    parser.feed(page.text)
    mapped = {urljoin(page.url, k): urljoin(page.url, v) for k, v in parser.import_map.items()}
    queue = [(kind, urljoin(page.url, ref)) for kind, ref in parser.refs]
    seen: set[str] = set()
    fetched: list[Fetched] = []
    external: list[str] = []
    lazy: list[str] = []
    uncounted = [f"{kind}: {ref}" for kind, ref in parser.uncounted]
    while queue:
        kind, url = queue.pop(0)
        url = urldefrag(url).url
        if url in seen or url.startswith(("data:", "blob:")):
            continue
        seen.add(url)
        if not _same_origin(url, origin):
            external.append(url)
            continue
        item = await fetch(http, url, kind, encoding)
        fetched.append(item)
        if item.status != 200:
            continue
        if kind == "module":
            static, dynamic = module_imports(item.text)
            queue.extend(("module", _mapped(mapped, urljoin(url, s))) for s in static)
            lazy.extend(_mapped(mapped, urljoin(url, spec)) for spec in dynamic)
        elif kind == "stylesheet":
            queue.extend(("stylesheet", urljoin(url, s)) for s in CSS_IMPORT.findall(item.text))
            uncounted.extend(
                f"css url(): {u}"
                for u in CSS_URL.findall(item.text)
                if not u.startswith("data:") and not u.endswith(".css")
            )
    return {"fetched": fetched, "external": external, "lazy": lazy, "uncounted": uncounted}


async def first_load(
    server_url: str, join_token: str, encoding: str, language: str | None = None
) -> dict[str, Any]:
    """`/j/<token>` (the room, with the pass cookie), then its scripts and stylesheets."""
    return await page_first_load(
        server_url, f"/j/{join_token}", encoding, "/j/<token>", language=language
    )


async def page_first_load(
    server_url: str,
    path: str,
    encoding: str,
    shown: str | None = None,
    *,
    language: str | None = None,
) -> dict[str, Any]:
    """A page, then its scripts and stylesheets (`shown`: the path as errors name it), from a
    browser set to ``language`` if given."""
    jar = aiohttp.CookieJar(unsafe=True)  # unsafe: accept cookies from 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar, auto_decompress=False) as http:
        page = await fetch(http, f"{server_url}{path}", "document", encoding, language=language)
        if page.status != 200:
            snippet = " ".join(page.text.split())[:160]
            name = shown or path
            return {"error": f"{name} answered {page.status}: {snippet}", "files": [page]}
        crawled = await crawl(http, page, server_url, encoding)
    return {**crawled, "files": [page, *crawled["fetched"]]}


def _summary(files: list[Fetched]) -> dict[str, int]:
    return {
        "wire_bytes": sum(f.wire_bytes for f in files),
        "header_bytes": sum(f.header_bytes for f in files),
        "decoded_bytes": sum(f.decoded_bytes for f in files),
        "requests": len(files),
    }


def _details(gz: list[Fetched], plain: list[Fetched], server_url: str) -> list[dict[str, Any]]:
    identity = {f.url: f for f in plain}
    rows = []
    for f in gz:
        other = identity.get(f.url)
        rows.append(
            {
                "path": f.url.removeprefix(server_url).split("?")[0].replace("/j/", "/j/…", 1)[:60],
                "kind": f.kind,
                "status": f.status,
                "gzip": f.content_encoding == "gzip",
                "transfer": f.transfer,
                "body_gzip": f.wire_bytes,
                "body_identity": other.wire_bytes if other else None,
                "headers": f.header_bytes,
            }
        )
    return rows


async def run(server_url: str, env: BenchEnv) -> dict[str, Any]:
    """Both encodings, each from a fresh browser-like client, same session."""
    session = (await env.new_sessions(1))[0]
    gz = await first_load(server_url, session.join_token, GZIP)
    plain = await first_load(server_url, session.join_token, IDENTITY)
    title = "Beneficiary page first load (bytes on the wire)"
    errors = [r["error"] for r in (gz, plain) if "error" in r]
    failed = [f for r in (gz, plain) for f in r["files"] if f.status not in (200, 303)]
    errors += [f"{f.url} answered {f.status}" for f in failed if "error" not in gz]
    files = {
        GZIP: [{k: v for k, v in asdict(f).items() if k != "text"} for f in gz["files"]],
        IDENTITY: [{k: v for k, v in asdict(f).items() if k != "text"} for f in plain["files"]],
    }
    if errors:
        row = Row(
            "beneficiary first load, body bytes",
            "bytes",
            None,
            None,
            "same files uncompressed",
            f"≤ {TARGET_BYTES:,}",
            False,
            note="; ".join(errors)[:300],
        )
        return {
            "title": title,
            "status": "incomplete",
            "errors": errors,
            "files": files,
            "rows": [row.as_dict()],
        }
    ours, base = _summary(gz["files"]), _summary(plain["files"])
    # The vault page (issue 15): the same goal, before the first tap (its lazy parts apart).
    vault_gz = await page_first_load(server_url, "/coffre", GZIP)
    vault_plain = await page_first_load(server_url, "/coffre", IDENTITY)
    vault = _summary(vault_gz["files"])
    rows = [
        Row(
            "beneficiary first load, body bytes (gzip vs identity)",
            "bytes",
            ours["wire_bytes"],
            base["wire_bytes"],
            "same files uncompressed",
            f"≤ {TARGET_BYTES:,}",
            ours["wire_bytes"] <= TARGET_BYTES,
            note=f"{ours['requests']} requests",
        ),
        Row(
            "beneficiary first load, body + response headers",
            "bytes",
            ours["wire_bytes"] + ours["header_bytes"],
            base["wire_bytes"] + base["header_bytes"],
            "same files uncompressed",
        ),
        Row(
            "vault page (/coffre) first load, body bytes (gzip vs identity)",
            "bytes",
            vault["wire_bytes"],
            _summary(vault_plain["files"])["wire_bytes"],
            "same files uncompressed",
            f"≤ {TARGET_BYTES:,}",
            "error" not in vault_gz and vault["wire_bytes"] <= TARGET_BYTES,
            note=vault_gz.get("error", f"{vault['requests']} requests"),
        ),
    ]
    return {
        "title": title,
        "status": "ok",
        "gzip": ours,
        "identity": base,
        "files": files,
        "details": _details(gz["files"], plain["files"], server_url),
        "lazy_imports_not_counted": sorted(set(gz["lazy"])),
        "not_counted": sorted(set(gz["uncounted"])),
        "external_refs": sorted(set(gz["external"])),
        "rows": [row.as_dict() for row in rows],
    }
