"""Optional error reports to Sentry (SENTRY_DSN), with nothing personal in them.

Without a DSN nothing here imports sentry-sdk. With one, sentry-sdk's aiohttp integration
reports unhandled errors, scrubbed by ``scrub`` before anything leaves the process, with the
same redaction as the logs (``server/web/accesslog.py``: a link's secret in a path becomes
``<redacted>``, query strings go) plus masking of e-mail addresses and phone numbers in any
text. Cookies, header values (Authorization, Cookie, X-CSRF-Token…), request bodies, local
variables and the user's address are never sent: ``send_default_pii`` keeps its default (off),
``include_local_variables=False``, ``max_request_body_size="never"``, and ``scrub`` removes
what the integration collects anyway (frames' ``vars`` included). No performance tracing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from server.notify.failures import mask_text
from server.readiness import node_name
from server.runtime import SETTINGS_KEY
from server.settings import Settings
from server.web.accesslog import REDACTOR_KEY, Redactor

log = logging.getLogger(__name__)

Event = dict[str, Any]
# Request headers whose value may be reported: they say what the client is, not who.
SAFE_HEADERS = frozenset({"accept", "accept-language", "content-type", "content-length"})


def scrub_text(redactor: Redactor, text: str) -> str:
    """Paths redacted like the logs, e-mail addresses and phone numbers masked."""
    return mask_text(redactor.text(text))


def _scrub_strings(redactor: Redactor, value: Any) -> Any:
    """Every string in a JSON-like value, scrubbed."""
    if isinstance(value, str):
        return scrub_text(redactor, value)
    if isinstance(value, list):
        return [_scrub_strings(redactor, item) for item in value]
    if isinstance(value, dict):
        return {key: _scrub_strings(redactor, item) for key, item in value.items() if key != "vars"}
    return value


def scrub(redactor: Redactor, event: Event) -> Event:
    """The event with its request reduced to method, redacted URL and safe headers, no user,
    and every message, exception value, breadcrumb and extra scrubbed."""
    request = event.get("request")
    if isinstance(request, dict):
        kept: dict[str, Any] = {}
        if "method" in request:
            kept["method"] = request["method"]
        if isinstance(request.get("url"), str):
            kept["url"] = redactor.path(request["url"].partition("?")[0])
        headers = request.get("headers")
        if isinstance(headers, dict):
            kept["headers"] = {
                name: value for name, value in headers.items() if name.lower() in SAFE_HEADERS
            }
        event["request"] = kept
    event.pop("user", None)
    for part in ("message", "logentry", "extra", "breadcrumbs", "exception", "threads"):
        if part in event:
            event[part] = _scrub_strings(redactor, event[part])
    if isinstance(event.get("transaction"), str):
        event["transaction"] = redactor.text(event["transaction"])
    return event


def make_before_send(redactor: Redactor) -> Callable[[Event, Any], Event]:
    """sentry-sdk's ``before_send`` (and ``before_send_transaction``) hook."""

    def before_send(event: Event, _hint: Any) -> Event:
        return scrub(redactor, event)

    return before_send


def init_sentry(settings: Settings, redactor: Redactor, transport: Any = None) -> bool:
    """Start sentry-sdk if SENTRY_DSN is set (``transport``: tests keep events in process);
    whether it was started. sentry-sdk is imported only here, only with a DSN."""
    dsn = settings.sentry_dsn.get_secret_value()
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.aiohttp import AioHttpIntegration

    before_send = make_before_send(redactor)
    sentry_sdk.init(
        dsn=dsn,
        transport=transport,
        integrations=[AioHttpIntegration(transaction_style="method_and_path_pattern")],
        # send_default_pii is left unset, i.e. off (sentry-sdk 2.76 warns that passing it at
        # all is deprecated in favour of data_collection, which older 2.x releases lack).
        include_local_variables=False,
        max_request_body_size="never",
        traces_sample_rate=None,
        server_name=node_name(settings),
        before_send=before_send,  # type: ignore[arg-type]
        before_send_transaction=before_send,  # type: ignore[arg-type]
    )
    log.info("error reports: Sentry on (scrubbed)")
    return True


async def error_reports_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the redactor is built): Sentry for the life of the app when
    SENTRY_DSN is set; its queue is flushed on shutdown."""
    started = init_sentry(app[SETTINGS_KEY], app[REDACTOR_KEY])
    try:
        yield
    finally:
        if started:
            import sentry_sdk

            sentry_sdk.flush(timeout=2.0)
