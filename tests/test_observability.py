"""What operators see: /metrics (local scraper or token; gauges read at scrape time, still
answering when the database cannot be read), request ids, JSON logs, /readyz, the worker's
heartbeat, and Sentry reports scrubbed like the logs."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp_jinja2
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from sqlalchemy import update

from server.logs import JsonFormatter
from server.readiness import (
    BEAT_EVERY,
    record_beat,
    stale_after,
    worker_problem,
)
from server.settings import Settings
from server.store.models import Role, WorkerHeartbeat, utcnow
from server.web.accesslog import REDACTED, RedactingAccessLogger, Redactor
from server.web.app import create_app, warm_up
from server.web.error_reports import init_sentry, scrub
from server.web.observability import SCRAPE_KEY
from tests.conftest import Running, free_port, login, make_account
from tests.peers import connect_peer, login_cookie

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def backend() -> str:
    """SQLite only: nothing here depends on the database engine but the SQL of the gauges,
    which test_failed_notifications and the scrape's own queries run on both elsewhere."""
    return "sqlite"


def _sample(text: str, name: str) -> float:
    """The value of one sample (``name`` with its labels) in an exposition."""
    for line in text.splitlines():
        if line.startswith(name + " ") or (line.startswith(name + "{") and " " in line):
            head, _sep, value = line.rpartition(" ")
            if head == name or name.endswith("}") or head.startswith(name + "{"):
                return float(value)
    raise AssertionError(f"no {name} in the exposition")


async def test_metrics_answer_a_local_scraper_with_gauges_read_now(
    running: Running, http: aiohttp.ClientSession
) -> None:
    coordinator = await make_account(running, "nadia@example.org", Role.COORDINATOR)
    await login(http, running, coordinator)
    queue_page = await connect_peer(
        running, cookie=login_cookie(http, running), namespace="/queue", welcome=False
    )
    try:
        async with http.get(running.url("/healthz")) as resp:
            assert resp.status == 200
        async with http.get(running.url("/metrics")) as resp:
            assert resp.status == 200
            text = await resp.text()
    finally:
        await queue_page.close()
    node = re.search(r'permanence_sockets\{namespace="/queue",node="([^"]+)"\}', text)
    assert node, text[:2000]
    assert _sample(text, f'permanence_sockets{{namespace="/queue",node="{node[1]}"}}') >= 1
    # The volunteer joined their association's room.
    assert _sample(text, f'permanence_socket_rooms{{namespace="/queue",node="{node[1]}"}}') >= 1
    assert _sample(text, f'permanence_sockets{{namespace="/assist",node="{node[1]}"}}') == 0
    assert _sample(text, "permanence_queue_waiting") == 0
    assert _sample(text, "permanence_outbox_failed") == 0
    assert _sample(text, f'permanence_database_pool_size{{node="{node[1]}"}}') > 0
    assert 'permanence_http_request_duration_seconds_count{route="healthz"}' in text
    assert "permanence_event_loop_lag_seconds_count" in text
    # Labels never carry a path: only route names.
    assert "/healthz" not in re.findall(r'route="([^"]*)"', text)


def _over(text: str, metric: str, bound: str) -> float:
    """How many samples of a histogram exceed ``bound`` (seconds, as its ``le`` label)."""
    return _sample(text, f"{metric}_count") - _sample(text, f'{metric}_bucket{{le="{bound}"}}')


async def test_loop_lag_counts_every_stall_and_its_busy_part_only_the_loops_own_work(
    running: Running, http: aiohttp.ClientSession
) -> None:
    lag, busy = "permanence_event_loop_lag_seconds", "permanence_event_loop_lag_busy_seconds"
    async with http.get(running.url("/metrics")) as resp:
        before = await resp.text()
    # Two stalls of the loop this test shares with the server: 60 ms of CPU (a long callback),
    # then 60 ms asleep in a blocking call (like a machine whose CPUs are taken by others).
    spin_until = time.thread_time() + 0.06
    while time.thread_time() < spin_until:
        pass
    await asyncio.sleep(0.03)  # the sampler records the first stall before the second
    time.sleep(0.06)  # noqa: ASYNC251 - the stall under test
    async with asyncio.timeout(5):
        while True:  # the sampler runs every 10 ms: read until it has seen both
            await asyncio.sleep(0.03)
            async with http.get(running.url("/metrics")) as resp:
                after = await resp.text()
            if _over(after, lag, "0.025") - _over(before, lag, "0.025") >= 2:
                break
    late = _over(after, lag, "0.025") - _over(before, lag, "0.025")
    late_busy = _over(after, busy, "0.025") - _over(before, busy, "0.025")
    assert late_busy >= 1  # the CPU stall
    assert late >= late_busy + 1  # the sleep: late, but the loop did not run
    assert _sample(after, f"{lag}_count") - _sample(before, f"{lag}_count") >= 5


def test_warm_up_compiles_every_template_before_the_first_request(settings: Settings) -> None:
    app = create_app(settings)
    env = aiohttp_jinja2.get_env(app)
    names = env.list_templates(extensions=["html"])
    assert env.cache is not None and len(names) > 10
    assert not {name for _loader, name in env.cache}
    warm_up(app)
    assert {name for _loader, name in env.cache} == set(names)


async def test_metrics_are_not_shown_through_a_proxy_without_the_token(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(
        running.url("/metrics"), headers={"X-Forwarded-For": "203.0.113.9"}
    ) as resp:
        assert resp.status == 404


async def test_metrics_still_answer_when_the_database_cannot_be_read(
    running: Running, http: aiohttp.ClientSession
) -> None:
    scrape = running.app[SCRAPE_KEY]
    async with http.get(running.url("/metrics")) as resp:
        before = _sample(await resp.text(), 'permanence_scrape_errors_total{source="database"}')
    scrape.database_timeout = 0  # the bound is reached at once: as with a stopped database
    async with http.get(running.url("/metrics")) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert "permanence_queue_waiting " not in text
    assert _sample(text, 'permanence_scrape_errors_total{source="database"}') == before + 1
    assert "permanence_sockets{" in text


async def test_a_request_gets_an_id_kept_from_the_proxy_only_if_well_formed(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(running.url("/healthz")) as resp:
        generated = resp.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", generated)
    given = "3f2a9c1e-0b7d-4c55-9a51-3a2b1c0d9e8f"
    async with http.get(running.url("/healthz"), headers={"X-Request-Id": given}) as resp:
        assert resp.headers["X-Request-Id"] == given
    async with http.get(
        running.url("/code"), headers={"X-Request-Id": "bad id\u2028<script>"}
    ) as resp:
        assert re.fullmatch(r"[0-9a-f]{16}", resp.headers["X-Request-Id"])
    async with http.get(running.url("/tableau"), allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["X-Request-Id"]  # raised redirects too


@pytest.fixture
async def access_logged(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[tuple[str, pytest.LogCaptureFixture]]:
    """The app served with the production access logger."""
    caplog.set_level(logging.INFO)
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1", port=int(settings.base_url.rsplit(":", 1)[1]))
    await server.start_server(access_log_class=RedactingAccessLogger)
    try:
        yield settings.base_url, caplog
    finally:
        await server.close()


async def test_json_access_lines_carry_request_id_route_status_duration_and_no_secret(
    access_logged: tuple[str, pytest.LogCaptureFixture],
) -> None:
    base_url, caplog = access_logged
    secret = "S3CR3T" + "a" * 30
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{base_url}/j/{secret}?c=12345678", headers={"X-Request-Id": "req-12345678"}
        ) as resp,
    ):
        await resp.read()
    records = [r for r in caplog.records if r.name == "aiohttp.access"]
    lines = [json.loads(JsonFormatter().format(r)) for r in records]
    line = next(line for line in lines if line.get("request_id") == "req-12345678")
    assert line["route"] == "join-link"
    assert line["path"] == f"/j/{REDACTED}?{REDACTED}"
    assert line["status"] == resp.status
    assert isinstance(line["duration_ms"], float)
    assert line["level"] == "INFO" and line["logger"] == "aiohttp.access"
    assert all(secret not in json.dumps(entry) for entry in lines)
    assert all('12345678"' not in entry["message"] for entry in lines)


def test_the_json_formatter_writes_one_line_per_record_with_its_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "server.x", logging.ERROR, __file__, 1, "failed: %s", ("x\ny",), sys.exc_info()
        )
    record.request_id = "abcd1234"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed: x\ny" and entry["request_id"] == "abcd1234"
    assert "ValueError: boom" in entry["exception"]


async def test_readyz_names_what_is_wrong(settings: Settings) -> None:
    """Redis configured but not answering: 503, naming Redis; the database and worker are fine."""
    redis_port = free_port()  # nothing listens there
    app = create_app(settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{redis_port}/0"}))
    server = TestServer(app, host="127.0.0.1", port=int(settings.base_url.rsplit(":", 1)[1]))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http, http.get(settings.base_url + "/readyz") as resp:
            body = await resp.json()
            assert resp.status == 503, body
    finally:
        await server.close()
    assert body["database"] == "ok" and body["worker"] == "ok"
    assert body["redis"].startswith("redis: ") and body["problems"] == [body["redis"]]


async def test_readyz_is_ready_and_warns_about_notifications_that_go_nowhere(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(running.url("/readyz")) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ok" and body["redis"] == "not configured"
    assert body["warnings"] == []  # http: a development setup
    public = running.settings.model_copy(update={"base_url": "https://permanence.example.org"})
    assert len(public.notification_backend_problems()) == 2
    smtp = public.model_copy(update={"email_backend": "smtp", "smtp_host": "mail"})
    [problem] = smtp.notification_backend_problems()
    assert "SMS_BACKEND=file" in problem


async def test_the_worker_beats_and_a_silent_worker_is_reported(running: Running) -> None:
    settings = running.settings
    now = utcnow()
    started_long_ago = now - timedelta(hours=1)
    async with running.sessionmaker.begin() as db:
        await db.execute(update(WorkerHeartbeat).values(beat_at=now - timedelta(hours=1)))
        assert await record_beat(db, "node-x", now)
        assert not await record_beat(db, "node-x", now + BEAT_EVERY / 2)  # written recently
        assert await record_beat(db, "node-x", now + BEAT_EVERY)
    assert worker_problem(now, now, settings, started_long_ago) is None
    late = now + stale_after(settings) + timedelta(seconds=1)
    assert "heartbeat" in str(worker_problem(now, late, settings, started_long_ago))
    assert "ever run" in str(worker_problem(None, now, settings, started_long_ago))
    assert worker_problem(None, now, settings, now) is None  # this node's worker is starting


# -- Sentry ------------------------------------------------------------------------------------


def _redactor() -> Redactor:
    router = web.UrlDispatcher()

    async def page(_request: web.Request) -> web.Response:
        return web.Response()

    router.add_get("/j/{token}", page)
    router.add_get("/fiche/{token}", page)
    return Redactor.of(router)


def _realistic_event(secret: str) -> dict[str, Any]:
    """An event as sentry-sdk's aiohttp integration builds it for an error on a join link."""
    return {
        "level": "error",
        "transaction": "GET /j/{token}",
        "request": {
            "method": "GET",
            "url": f"https://permanence.example.org/j/{secret}",
            "query_string": "c=12345678",
            "headers": {
                "Host": "permanence.example.org",
                "Cookie": "__Host-vp_session=SESSVAL; __Host-vp_benef=PASSVAL",
                "Authorization": "Bearer tok",
                "X-CSRF-Token": "csrf",
                "User-Agent": "Mozilla/5.0",
                "Accept": "text/html",
            },
            "cookies": {"__Host-vp_session": "SESSVAL"},
            "data": {"phone": "+33612345678", "first_name": "Josiane"},
            "env": {"REMOTE_ADDR": "203.0.113.7"},
        },
        "user": {"ip_address": "203.0.113.7"},
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": f"no session for /j/{secret} (josiane@example.org, +33612345678)",
                    "stacktrace": {"frames": [{"function": "join", "vars": {"t": secret}}]},
                }
            ]
        },
        "breadcrumbs": {"values": [{"message": f"GET /fiche/{secret}?c=1 200"}]},
        "logentry": {"message": "SMS to 0612345678 failed", "params": []},
    }


def test_sentry_events_are_scrubbed_like_the_logs() -> None:
    secret = "S3CR3T" + "b" * 30
    event = scrub(_redactor(), _realistic_event(secret))
    text = json.dumps(event)
    for leaked in (
        secret,
        "12345678",
        "SESSVAL",
        "PASSVAL",
        "Bearer",
        "csrf",
        "Josiane",
        "josiane@",
        "203.0",
    ):
        assert leaked not in text, leaked
    assert event["request"] == {
        "method": "GET",
        "url": f"https://permanence.example.org/j/{REDACTED}",
        "headers": {"Accept": "text/html"},
    }
    assert "user" not in event
    assert event["exception"]["values"][0]["type"] == "ValueError"


def test_without_a_dsn_sentry_is_not_even_imported(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from server.settings import load_settings\n"
        "from server.web.app import create_app\n"
        f"create_app(load_settings({{'PERMANENCE_DATA_DIR': {str(tmp_path)!r}}}))\n"
        "assert 'sentry_sdk' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_with_a_dsn_errors_are_reported_scrubbed(settings: Settings) -> None:
    import sentry_sdk
    from sentry_sdk.transport import Transport

    sent: list[dict[str, Any]] = []

    class Captured(Transport):
        def capture_envelope(self, envelope: Any) -> None:
            sent.extend(item.payload.json for item in envelope.items if item.payload.json)

    assert not init_sentry(settings, _redactor(), transport=Captured)
    with_dsn = settings.model_copy(
        update={"sentry_dsn": SecretStr("https://key@sentry.example.org/1")}
    )
    assert init_sentry(with_dsn, _redactor(), transport=Captured)
    try:
        secret = "S3CR3T" + "c" * 30
        try:
            raise RuntimeError(f"lost /j/{secret} for josiane@example.org")
        except RuntimeError:
            sentry_sdk.capture_exception()
        sentry_sdk.flush(timeout=2)
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)
    assert sent, "no event captured"
    text = json.dumps(sent)
    assert secret not in text and "josiane" not in text
    assert f"/j/{REDACTED}" in text
