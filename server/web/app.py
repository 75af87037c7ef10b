"""The application factory: settings in, a ready ``web.Application`` out. No globals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, get_args
from zoneinfo import ZoneInfo

import aiohttp_jinja2
import jinja2
from aiohttp import web
from babel.dates import format_datetime
from markupsafe import Markup

from server import geo, i18n
from server.events import Dispatcher, OutboxWritten
from server.logs import configure_logging
from server.notify import Notifier
from server.ratelimit import RATELIMIT_KEY, ratelimit_ctx
from server.runtime import (
    DISPATCHER_KEY,
    SESSIONMAKER_KEY,
    SETTINGS_KEY,
    cluster_ctx,
    database_ctx,
    passwords_ctx,
    rights_ctx,
)
from server.settings import Settings
from server.tokens import grouped_code
from server.web.accesslog import redaction, redaction_ctx
from server.web.assets import ASSETS_KEY, WEB_DIR, Assets
from server.web.error_reports import error_reports_ctx
from server.web.language import language
from server.web.middlewares import authentication, compression, error_pages, security_headers
from server.web.observability import observe, setup_observability
from server.web.routes import setup_routes
from server.worker import SHUTDOWN_GRACE_SECONDS, Worker, stop_task
from signaling.messages import (
    MAX_CHUNK_BYTES,
    MAX_DOCUMENT_NAME_CHARS,
    MAX_PHOTO_BYTES,
    MEBIBYTE,
    DocStart,
    PhotoStart,
)
from signaling.server import create_sio, socketio_ctx

MAX_REQUEST_BYTES = 256 * 1024


def local_time_filter(settings: Settings) -> Callable[[datetime | None, str], str]:
    """Jinja filter: an aware UTC datetime shown in the configured time zone, French format."""
    zone = ZoneInfo(settings.timezone)

    def local_time(value: datetime | None, pattern: str = "HH:mm") -> str:
        if value is None:
            return ""
        return format_datetime(value, pattern, tzinfo=zone, locale=i18n.babel_locale())

    return local_time


def left_to_right(value: object) -> Markup:
    """Jinja filter: a code, phone number or address kept left-to-right inside a sentence,
    whatever the page's direction (``<bdi dir="ltr">``, escaped)."""
    return Markup('<bdi dir="ltr">%s</bdi>') % value


def photo_limits() -> dict[str, Any]:
    """The data channel's photo limits for the room pages' scripts; signaling/messages.py
    validates them (its PhotoStart model holds the allowed types)."""
    return {
        "max_bytes": MAX_PHOTO_BYTES,
        "chunk_bytes": MAX_CHUNK_BYTES,
        "types": list(get_args(PhotoStart.model_fields["mime"].annotation)),
    }


def document_limits(settings: Settings) -> dict[str, Any]:
    """The data channel's limits for the documents of a vault shown in a session (issue 15):
    VAULT_MAX_DOCUMENT_MB, the chunk size of photos, the types of DocStart."""
    return {
        "max_bytes": settings.vault_max_document_mb * MEBIBYTE,
        "chunk_bytes": MAX_CHUNK_BYTES,
        "types": list(get_args(DocStart.model_fields["mime"].annotation)),
        "max_name": MAX_DOCUMENT_NAME_CHARS,
    }


def setup_templates(app: web.Application) -> None:
    """Jinja2 with autoescape, gettext (Babel catalogue), the static files' helpers
    (server/web/assets.py) and the photo and document limits."""
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(WEB_DIR / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # The current language's catalogue at each call (server/i18n.py): a helped person's page in
    # their language, every other page in French.
    env.install_gettext_callables(  # type: ignore[attr-defined]
        i18n.gettext, i18n.ngettext, newstyle=True
    )
    assets = app[ASSETS_KEY]
    env.globals["static_url"] = assets.url
    env.globals["module_tags"] = assets.module_tags
    env.globals["prefetch_tags"] = assets.prefetch_tags
    env.globals["code_digits"] = app[SETTINGS_KEY].code_digits
    env.filters["grouped_code"] = grouped_code
    env.filters["ltr"] = left_to_right
    env.globals["photo_limits"] = photo_limits()
    env.globals["doc_limits"] = document_limits(app[SETTINGS_KEY])
    env.filters["local_time"] = local_time_filter(app[SETTINGS_KEY])


def warm_up(app: web.Application) -> None:
    """Do now, before the first request, what pages do lazily once per process: compile every
    template, load Babel's French data and the map of France. On a first request each stopped
    every socket of the node (the first /stats: 90 ms of CPU, BENCHMARKS.md "Combined load"),
    and what they build is then long-lived: made before the startup heap is frozen
    (server/cli.py), the garbage collector no longer scans it."""
    env = aiohttp_jinja2.get_env(app)
    for name in env.list_templates(extensions=["html"]):
        env.get_template(name)
    for lang in i18n.LANGUAGES:
        i18n.translations(lang.catalogue)
        format_datetime(datetime.now(ZoneInfo("UTC")), "EEEE d MMMM y HH:mm", locale=lang.catalogue)
    geo.map_paths()
    geo.departements()
    app[ASSETS_KEY].script_src()  # hashes every module once


WORKER_KEY = web.AppKey("worker", Worker)


async def worker_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: run the notification worker as a task for the life of the app, woken by
    every committed ``OutboxWritten``; stop it cleanly."""
    settings = app[SETTINGS_KEY]
    notifier = Notifier.from_settings(settings)
    worker = Worker(
        app[SESSIONMAKER_KEY],
        notifier,
        poll_seconds=settings.outbox_poll_seconds,
        settings=settings,
        sms_budget=app[RATELIMIT_KEY],
    )
    app[WORKER_KEY] = worker
    dispatcher = app[DISPATCHER_KEY]
    dispatcher.subscribe(OutboxWritten, worker.woken)
    task = asyncio.create_task(worker.run(), name="outbox-worker")
    try:
        yield
    finally:
        dispatcher.unsubscribe(OutboxWritten, worker.woken)
        try:
            await stop_task(worker, task, SHUTDOWN_GRACE_SECONDS)
        finally:
            await notifier.close()


def create_app(settings: Settings) -> web.Application:
    """Build the application: templates, database, rate limits, outbox worker, Socket.IO,
    routes."""
    configure_logging(settings)
    app = web.Application(
        middlewares=[
            observe,
            redaction,
            security_headers,
            compression,
            language,
            error_pages,
            authentication,
        ],
        client_max_size=MAX_REQUEST_BYTES,
    )
    app[SETTINGS_KEY] = settings
    app[DISPATCHER_KEY] = Dispatcher()
    app[ASSETS_KEY] = Assets()
    setup_templates(app)
    # First in, last out: it reads the finished route table at startup and filters the logs
    # while everything else starts and stops.
    app.cleanup_ctx.append(redaction_ctx)
    app.cleanup_ctx.append(error_reports_ctx)  # scrubs with the redactor: after it
    app.cleanup_ctx.append(cluster_ctx)
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(ratelimit_ctx)
    app.cleanup_ctx.append(passwords_ctx)
    app.cleanup_ctx.append(worker_ctx)
    app.cleanup_ctx.append(rights_ctx)
    sio = create_sio(app)
    app.cleanup_ctx.append(socketio_ctx)
    setup_observability(app, sio)
    setup_routes(app)
    return app
