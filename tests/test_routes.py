"""URLs come from route names: the links the domain sends in messages are routed exactly as
declared, and ids are constrained in the route patterns."""

from __future__ import annotations

import ast
from pathlib import Path

import aiohttp
import pytest

from server import links
from tests.conftest import Running, login, make_account


async def test_every_public_link_is_the_route_of_its_name(running: Running) -> None:
    router = running.app.router
    for link in links.ALL:
        parts = {piece.split("}")[0]: "42" for piece in link.path.split("{")[1:]}
        assert link.name in router, f"{link.name} is not routed"
        assert str(router[link.name].url_for(**parts)) == link.path.format(**parts), link
        expected = running.settings.url(link.path.format(**parts))
        assert link.url(running.settings, **parts) == expected


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_malformed_ids_never_reach_a_view(
    running: Running, http: aiohttp.ClientSession
) -> None:
    account = await make_account(running, "camille@example.org")
    await login(http, running, account)
    for path in (
        "/assistance/not-a-uuid",
        "/assistance/" + "a" * 300,
        "/rappels/123",
        "/fiches/x",
        "/benevoles/12345678901/desactiver",
    ):
        async with http.post(running.url(path), allow_redirects=False) as resp:
            assert resp.status == 404, path
            assert "Cette page n&#39;existe pas" in await resp.text()


ROOT = Path(__file__).resolve().parent.parent


def _route_literals(tree: ast.Module) -> set[int]:
    """ids of the string nodes that declare routes: decorator arguments, module constants."""
    declared: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                declared.update(id(n) for n in ast.walk(decorator))
    for node in tree.body:  # module-level constants such as ROOM = "/assistance/{…}"
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.For):
            declared.update(id(n) for n in ast.walk(node))
    return declared


def _literal_paths(path: Path, prefixes: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    declared = _route_literals(tree)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    # Testing which route a request came by is not building a URL: `path.startswith("/api/")`.
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) or (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("startswith", "removeprefix")
        ):
            declared.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in declared or id(node) in docstrings:
            continue
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                text = first.value
        if text and text.startswith("/") and text.split("/")[1].split("?")[0] in prefixes:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text[:50]!r}")
    return found


async def test_no_internal_path_is_typed_by_hand_in_python(running: Running) -> None:
    """Redirects and links come from route names: no literal path of one of our routes in the
    Python code, except where routes are declared (route tables, their constants, links.py)."""
    prefixes = set()
    for resource in running.app.router.resources():
        canonical = resource.canonical
        first = canonical.split("/")[1] if canonical.startswith("/") else ""
        if first and not first.startswith("{") and first not in ("static", "socket.io"):
            prefixes.add(first)
    assert {"assistance", "rendez-vous", "aide", "rappels"} <= prefixes
    found = []
    for folder in ("server", "signaling"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "migrations" in path.parts or path.name == "links.py":
                continue
            found += _literal_paths(path, prefixes)
    assert not found, "build these from route names:\n" + "\n".join(found)
