"""Hypothesis-generated submissions to every public form of the real server, each with a valid
CSRF token: arbitrary fields and values (Unicode digits, NUL, huge numbers, far timestamps, real
ids, slots and tokens), urlencoded, multipart or raw bodies in any Content-Type. Whatever
arrives, the answer is never a server error and the server keeps answering. SQLite and
PostgreSQL.

As in tests/test_signaling_fuzz.py, Hypothesis only draws the requests (its generate phase,
with an explicit seed: replay a failing run with FUZZ_SEED=<seed>); the async test sends them.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from server import callback_requests
from server.callback_requests import CallbackForm
from server.ratelimit import RATELIMIT_KEY
from server.settings import Settings, load_settings
from server.store.models import Association, utcnow
from tests.conftest import Running, browser_session, csrf_from, free_port
from tests.test_bad_input import post_paths
from tests.test_booking_pages import book, make_place, slot_times

MAX_EXAMPLES = 150
BOUNDARY = "fuzz7MA4YWxkTrZu0gW"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The test settings behind a trusted proxy: each request comes from its own address
    (X-Forwarded-For), so that per-address limits do not stop the fuzzer at the first form."""
    port = free_port()
    return load_settings(
        {
            "PERMANENCE_DATA_DIR": str(tmp_path / "var"),
            "PERMANENCE_DATABASE_URL": database_url,
            "PERMANENCE_SECRET_KEY": "test-secret-key-" + "x" * 32,
            "PERMANENCE_BASE_URL": f"http://127.0.0.1:{port}",
            "PERMANENCE_TRUST_PROXY": "true",
            "PERMANENCE_LOG_LEVEL": "WARNING",
            "PERMANENCE_RIGHTS_WORKERS": "0",  # as the other tests (conftest `settings`)
        }
    )


# -- strategies ---------------------------------------------------------------------------------

# Every field name of our public forms, and a few that none has.
FIELD_NAMES = st.one_of(
    st.sampled_from(
        [
            "a",
            "motif",
            "t",
            "tz",
            "type",
            "kind",
            "first_name",
            "phone",
            "email",
            "postal_code",
            "description",
            "interpreter_language",
            "hearing",
            "first_time_computer",
            "site_web",
            "code",
            "password",
            "password_confirm",
            "next",
            "windows",
            "message",
            "share",
            "volunteer_id",
        ]
    ),
    st.text(max_size=20),
)
AWKWARD = [
    "",
    " ",
    "²",
    "٣",
    "１２３",
    "0",
    "-1",
    "2147483648",
    "9" * 5000,
    "253402300799",
    "946684799",
    "1e9",
    "NaN",
    "\x00",
    "a\x00b",
    "\ud7ff",
    "Europe/Paris",
    "Pacific/Kiritimati",
    "../../etc/passwd",
    "first",
    "follow_up",
    "06 12 34 56 78",
    "+33612345678",
    "+1 202 555 0100",
    "awa@example.org",
    "75011",
    "1",
    "on",
    "//evil.example",
    "<script>alert(1)</script>",
    "x" * 70_000,
]


@dataclass(frozen=True)
class Request:
    """One drawn submission: a route (index into the public routes), how the body is sent,
    and its fields (or raw bytes)."""

    route: int
    kind: str
    fields: list[tuple[str, str]]
    raw: bytes
    content_type: str


def values(real: list[str]) -> st.SearchStrategy[str]:
    """Field values: awkward ones, the world's real ids, slots and codes, anything."""
    return st.one_of(
        st.sampled_from(AWKWARD + real),
        st.text(max_size=200),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
    )


CONTENT_TYPES = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=utf-8",
        "application/x-www-form-urlencoded; charset=latin-1",
        "multipart/form-data",
        "multipart/form-data; boundary=zz",
        "multipart/mixed; boundary=zz",
        "application/json",
        "text/plain",
        "",
    ]
)


FIELDS = [
    "a",
    "motif",
    "t",
    "tz",
    "kind",
    "first_name",
    "phone",
    "email",
    "postal_code",
    "description",
    "code",
    "password",
    "next",
    "windows",
    "message",
    "share",
]


def fixed_examples(routes: int) -> list[Request]:
    """Every run, on every public form: each field a NUL (PostgreSQL refuses it in a text), a
    superscript two, a far timestamp; urlencoded and multipart."""
    return [
        Request(route, kind, [(name, value) for name in FIELDS], b"", "")
        for route in range(routes)
        for kind in ("urlencoded", "multipart")
        for value in ("a\x00b", "²", "253402300799")
    ]


def generate(run_seed: int, routes: int, real: list[str]) -> list[Request]:
    """Draw the submissions before any is sent (see the module docstring)."""
    drawn: list[Request] = []

    @seed(run_seed)
    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(
        route=st.integers(0, routes - 1),
        kind=st.sampled_from(["urlencoded", "urlencoded", "multipart", "raw"]),
        fields=st.lists(st.tuples(FIELD_NAMES, values(real)), max_size=14),
        raw=st.one_of(
            st.binary(max_size=300),
            st.just(b"--zz\r\nContent-Disposition: form-data\r\n\r\nx\r\n--zz--\r\n"),
        ),
        content_type=CONTENT_TYPES,
    )
    def collect(
        route: int, kind: str, fields: list[tuple[str, str]], raw: bytes, content_type: str
    ) -> None:
        drawn.append(Request(route, kind, fields, raw, content_type))

    collect()
    return drawn


# -- the world ------------------------------------------------------------------------------------


async def world(running: Running, http: aiohttp.ClientSession) -> dict[str, Any]:
    """An association open every day with motifs, one booking (its manage token) and one
    call-back request (its cancel token): the fuzzer's paths and values reach real rows."""
    place = await make_place(running, volunteers=1)
    slots = await slot_times(http, running, place)
    status, _page, url = await book(http, running, place, slots[0], phone="06 12 34 56 78")
    assert status == 200, url
    manage_token = url.split("/rendez-vous/gerer/", 1)[1].split("?", 1)[0]
    form = CallbackForm(phone="06 98 76 54 32", first_name="Awa", windows=("any",)).validated(
        "Europe/Paris", set()
    )
    async with running.sessionmaker.begin() as db:
        association = await db.get_one(Association, place.association_id)
        done = await callback_requests.submit(
            db, running.settings, association, form, utcnow(), sms_budget=running.app[RATELIMIT_KEY]
        )
    assert done.cancel_token is not None
    real = [
        str(place.association_id),
        str(place.motif_id),
        *(str(t) for t in slots[1:6]),
        manage_token,
    ]
    return {"manage": manage_token, "cancel": done.cancel_token, "real": real}


def with_tokens(path: str, tokens: dict[str, Any]) -> str:
    """A route's path with the world's real token where it takes one."""
    filler = "x" * 43
    if path.startswith("/rendez-vous/gerer/"):
        return path.replace(filler, tokens["manage"])
    if path.startswith("/rappel/annuler/"):
        return path.replace(filler, tokens["cancel"])
    return path


async def public_paths(running: Running, token: str) -> list[str]:
    """The POST routes a visitor reaches (the others send them to the login page)."""
    found = []
    async with await browser_session() as probe:
        async with probe.get(running.url("/code")) as resp:
            probe_token = csrf_from(await resp.text())
        for path in post_paths(running.app):
            async with probe.post(
                running.url(path), data={"csrf_token": probe_token}, allow_redirects=False
            ) as resp:
                location = resp.headers.get("Location", "")
                to_login = resp.status == 303 and location.startswith("/login?next=")
            if not to_login:
                found.append(path)
    assert token
    return found


def body_of(request: Request, token: str) -> tuple[Any, dict[str, str]]:
    """The request body and headers to send (the CSRF token as a field, or as the header)."""
    if request.kind == "urlencoded":
        body = urlencode([("csrf_token", token), *request.fields]).encode()
        return body, {"Content-Type": "application/x-www-form-urlencoded"}
    if request.kind == "multipart":
        # Written by hand: any name, even one a browser would escape, reaches the server.
        parts = [("csrf_token", token), *request.fields]
        body = b"".join(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode(
                "utf-8", "surrogatepass"
            )
            + value.encode("utf-8", "surrogatepass")
            + b"\r\n"
            for name, value in parts
        )
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
        return body + f"--{BOUNDARY}--\r\n".encode(), {"Content-Type": content_type}
    headers = {"X-CSRF-Token": token}
    if request.content_type:
        headers["Content-Type"] = request.content_type
    return request.raw, headers


async def test_random_submissions_to_every_public_form_never_get_a_server_error(
    running: Running, http: aiohttp.ClientSession
) -> None:
    tokens = await world(running, http)
    async with http.get(running.url("/code")) as resp:
        token = csrf_from(await resp.text())
    paths = [with_tokens(path, tokens) for path in await public_paths(running, token)]
    assert {"/code", "/login", "/rappel", "/aide", "/rendez-vous/reserver"} <= set(paths)
    run_seed = int(os.environ.get("FUZZ_SEED", random.randrange(2**32)))
    replay = f"(replay with FUZZ_SEED={run_seed})"
    statuses: dict[int, int] = {}
    requests = fixed_examples(len(paths)) + generate(run_seed, len(paths), tokens["real"])
    for number, request in enumerate(requests):
        data, headers = body_of(request, token)
        # Each request from its own address of a documentation range (RFC 5737, 3849).
        headers["X-Forwarded-For"] = f"2001:db8:{number:x}::1" if number % 2 else "192.0.2.1"
        path = paths[request.route]
        async with http.post(
            running.url(path), data=data, headers=headers, allow_redirects=False
        ) as resp:
            await resp.read()
            assert resp.status < 500, f"{resp.status} on POST {path} {request!r:.600} {replay}"
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
    # The server still answers, and a page still renders from the database.
    async with http.get(running.url("/healthz")) as resp:
        assert resp.status == 200
    async with http.get(running.url("/rendez-vous")) as resp:
        assert resp.status == 200
    # Not every answer was the same refusal: the fuzzer reached past the first check.
    assert len(statuses) > 2, (statuses, replay)
