"""Logs that never write secrets: join, manage, invitation, sheet and call-back links, codes.

The redaction is derived from the route table, not written by hand: every path parameter of
every route is either a known secret (``SECRET_PARAMETERS``: the URL is the credential) or a
known identifier (``PUBLIC_PARAMETERS``: an id whose page checks the login); a parameter in
neither list is treated as a secret, and tests/test_accesslog.py fails until it is classified.
Query strings are always redacted (``?c=`` carries a code, ``?next=`` a path).

Three outputs use it: the access log (``RedactingAccessLogger``), the error log (the 500
handler and aiohttp's own messages, through ``RedactingFilter``) and the nginx ``map`` shipped
in deploy/nginx/ (``nginx_map``, checked against the route table by the tests).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_urldispatcher import MatchInfoError

from server.web.request import Handler

REDACTED = "<redacted>"

# Path parameters whose value is a credential: whoever reads it can act on it.
SECRET_PARAMETERS: dict[str, str] = {
    "token": "a link's secret: join (/j/), appointment manage, invitation, handoff sheet, "
    "call-back cancel",
    # Not a credential (the vault's capability is a header), but the one thing in a vault
    # request's URL that links it to a vault: kept out of the logs with the client's address.
    "document_id": "vault document id (/coffre/api/documents/…): would tie an address to a vault",
    "grant_id": "a trustee's grant (/coffre/api/trustees/…): would tie an address to a vault",
    "request_id": "a new device's recovery request: would tie its address to a vault",
    "pairing_code": "the 6 digits a person reads to their personne de confiance (live 15 minutes)",
}
# Path parameters kept in the logs: ids that grant nothing by themselves (every page behind them
# checks the login and the association), and public names.
PUBLIC_PARAMETERS: dict[str, str] = {
    "session_id": "assistance id: staff pages check the login; the beneficiary's pass is signed",
    "appointment_id": "appointment id: staff and referrer pages, login checked",
    "callback_id": "call-back request id: staff pages, login checked",
    "entry_id": "queue entry id: staff pages, login checked (the person's token is a cookie)",
    "sheet_id": "handoff sheet id: staff page, login checked (the beneficiary's link is a token)",
    "booking_id": "appointment id in the partner API, bearer token checked",
    "motif_id": "public motif number on the booking pages",
    "code": "a language code of the switch (server/i18n.py)",
    "user_id": "account number on coordinator pages, login checked",
    "token_id": "API token number (not the token) on the referrer's page, login checked",
    "availability_id": "availability number on coordinator pages, login checked",
    "exception_id": "absence number on coordinator pages, login checked",
    "message_id": "outbox message number on the coordinator page, login and association checked",
    "filename": "static file name",
    "name": "file name of a vendored npm package under /static/vendor/",
}

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_QUERY = "?" + REDACTED
_ORIGIN = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*")  # absolute-form targets


def is_secret(parameter: str) -> bool:
    """Whether a path parameter's value must stay out of logs (unknown ones must too)."""
    return parameter in SECRET_PARAMETERS or parameter not in PUBLIC_PARAMETERS


@dataclass(frozen=True)
class SecretRoute:
    """A route with at least one secret parameter."""

    formatter: str  # "/j/{token}": static parts percent-encoded as on the wire
    pattern: re.Pattern[str]  # the router's own pattern: a full match names every part
    prefixes: tuple[re.Pattern[str], ...]  # per secret part: the path up to it, it in group 1


def _prefix(formatter: str, secret_index: int) -> re.Pattern[str]:
    """``^static/[^/]+/…/(secret)``: matches any path that starts like the route up to its
    ``secret_index``-th placeholder (paths that go on, or that the router refused)."""
    pieces = _PLACEHOLDER.split(formatter)  # static, name, static, name, …
    regex = "^"
    for index, piece in enumerate(pieces):
        if index % 2 == 0:
            regex += re.escape(piece)
        elif index // 2 == secret_index:
            return re.compile(regex + "([^/?]+)")
        else:
            regex += "[^/?]+"
    raise ValueError(f"{formatter} has no placeholder number {secret_index}")


def secret_routes(router: web.UrlDispatcher) -> list[SecretRoute]:
    """The routes of ``router`` whose path has a secret parameter."""
    found: dict[str, SecretRoute] = {}
    for resource in router.resources():
        if not isinstance(resource, web.DynamicResource):
            continue
        info = resource.get_info()
        formatter: str = info["formatter"]
        names = _PLACEHOLDER.findall(formatter)
        secret = [i for i, name in enumerate(names) if is_secret(name)]
        if secret and formatter not in found:
            prefixes = tuple(_prefix(formatter, i) for i in secret)
            found[formatter] = SecretRoute(formatter, info["pattern"], prefixes)
    return list(found.values())


def path_parameters(router: web.UrlDispatcher) -> set[str]:
    """Every parameter name of every route of ``router``."""
    names: set[str] = set()
    for resource in router.resources():
        if isinstance(resource, web.DynamicResource):
            names.update(_PLACEHOLDER.findall(resource.get_info()["formatter"]))
    return names


class Redactor:
    """Takes the secrets out of request targets, and out of any text that quotes them."""

    def __init__(self, routes: Iterable[SecretRoute]) -> None:
        self.routes = tuple(routes)

    @classmethod
    def of(cls, router: web.UrlDispatcher) -> Redactor:
        """The redactor of an application's routes."""
        return cls(secret_routes(router))

    def path(self, target: str) -> str:
        """A request target (path and query, as sent) with its secret parts and its query
        string replaced by ``<redacted>``; an absolute target keeps its origin."""
        origin = _ORIGIN.match(target)
        start = origin.end() if origin else 0
        path, sep, _query = target[start:].partition("?")
        for route in self.routes:
            match = route.pattern.fullmatch(path)
            if match:
                parts = {
                    name: REDACTED if is_secret(name) else value
                    for name, value in match.groupdict().items()
                }
                path = route.formatter.format_map(parts)
                break
        else:
            # Not a secret route as a whole (a longer path, a refused one): redact every
            # segment that sits where a secret route has its secret.
            for route in self.routes:
                for prefix in route.prefixes:
                    match = prefix.match(path)
                    if match and match.group(1) != REDACTED:
                        path = path[: match.start(1)] + REDACTED + path[match.end(1) :]
        return target[:start] + path + (_QUERY if sep else "")

    # A path in free text: up to a space, a quote, a bracket or a backslash (bytes reprs), and
    # through our own marker so that redacting twice changes nothing.
    _IN_TEXT = re.compile(
        r"(?:https?://[^/\s'\"<>]+)?(/(?:[^\s'\"<>\\]|" + re.escape(REDACTED) + r")*)"
    )

    def text(self, text: str) -> str:
        """``text`` with every path in it redacted (log messages, tracebacks, request lines)."""
        return self._IN_TEXT.sub(
            lambda m: m.group(0)[: m.start(1) - m.start(0)] + self.path(m.group(1)), text
        )


REDACTOR_KEY = web.AppKey("log_redactor", Redactor)

# The loggers that may quote a request target: our 500 handler and aiohttp's own (parse
# errors quote the raw request line; unhandled exceptions carry their message).
REDACTED_LOGGERS = ("aiohttp.access", "aiohttp.server", "aiohttp.web", "server.web.middlewares")


class RedactingFilter(logging.Filter):
    """Rewrites a record's message and traceback with secrets redacted (it never drops one)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; formatters print ``exc_text`` instead of re-formatting."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler reports it, never the raw args
            message = str(record.msg)
        record.msg = self.redactor.text(message)
        record.args = None
        if record.exc_info:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.redactor.text(text)
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.redactor.text(record.stack_info)
        return True


async def redaction_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: build the redactor from the finished route table and filter the loggers
    that quote request targets, for the life of the app."""
    redactor = Redactor.of(app.router)
    app[REDACTOR_KEY] = redactor
    log_filter = RedactingFilter(redactor)
    loggers = [logging.getLogger(name) for name in REDACTED_LOGGERS]
    for logger in loggers:
        logger.addFilter(log_filter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(log_filter)


REQUEST_REDACTOR_KEY: web.RequestKey[Redactor] = web.RequestKey("log_redactor", Redactor)
# The request's id (server/web/observability.py sets it), on its access line and in its logs.
REQUEST_ID_KEY: web.RequestKey[str] = web.RequestKey("request_id", str)


@web.middleware
async def redaction(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Hand the app's redactor to the access logger, which only sees the request (outermost,
    so that 404s and 405s carry it too)."""
    request[REQUEST_REDACTOR_KEY] = request.app[REDACTOR_KEY]
    return await handler(request)


def logged_target(request: web.BaseRequest) -> str:
    """The request's target (path and query) as it may be logged."""
    redactor: Redactor | None = request.get(REQUEST_REDACTOR_KEY)
    if redactor is None:
        # The application never saw it (aiohttp could not parse it; its target is then a
        # placeholder): keep the first segment only.
        segments = request.raw_path.partition("?")[0].split("/")
        first = segments[1] if len(segments) > 1 else ""
        return f"/{first}" + (f"/{REDACTED}" if len(segments) > 2 else "")
    return redactor.path(request.raw_path)


class RedactingAccessLogger(AbstractAccessLogger):
    """One line per request: address, method, redacted target, status, size, time; the same
    facts as fields for LOG_FORMAT=json, with the request id and the route's name."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write the access line (INFO on the aiohttp.access logger)."""
        target = logged_target(request)
        duration_ms = round(time * 1000, 1)
        self.logger.info(
            '%s "%s %s" %s %s %.1fms',
            request.remote,
            request.method,
            target,
            response.status,
            response.body_length,
            duration_ms,
            extra={
                "request_id": request.get(REQUEST_ID_KEY),
                "route": route_name(request),
                "method": request.method,
                "path": target,
                "status": response.status,
                "duration_ms": duration_ms,
                "size": response.body_length,
            },
        )


def route_name(request: web.BaseRequest) -> str:
    """The matched route's name (bounded: one per route), never the path; ``unmatched`` when
    no route took the request, ``unnamed`` for Socket.IO's own route."""
    match_info = getattr(request, "match_info", None)
    route = getattr(match_info, "route", None)
    if route is None or isinstance(match_info, MatchInfoError):
        return "unmatched"
    return route.name or "unnamed"


NGINX_FORMAT = "visio_permanence"
NGINX_HEADER = """\
# nginx access log without secrets, for visio-permanence. Install as
# /etc/nginx/conf.d/visio-permanence-log.conf (http context): deploy/nginx/visio-permanence.conf
# logs with its "visio_permanence" format. GENERATED from the app's route table by
# server.web.accesslog.nginx_log_config: tests/test_accesslog.py fails when a route with a secret
# is added and this file is not regenerated (the failure prints the new text).
#
# $request_uri is logged with each link's secret replaced by <redacted> (join, manage, invitation,
# handoff sheet, call-back links: the URL is the credential) and with any query string (?c= codes,
# ?next=) replaced by ?<redacted>. The Referer is not logged.
"""


def nginx_log_config(router: web.UrlDispatcher) -> str:
    """The nginx ``map``s and ``log_format`` that redact like the app's access log."""
    lines = [NGINX_HEADER, "map $request_uri $vp_log_path {"]
    seen: set[str] = set()
    for route in secret_routes(router):
        if len(route.prefixes) != 1:
            raise ValueError(f"{route.formatter}: nginx_log_config handles one secret per route")
        keep = route.prefixes[0].pattern.removeprefix("^").removesuffix("([^/?]+)")
        regex = f"~^(?<vp_keep>{keep})[^/?]+(?<vp_rest>[^?]*)"
        if regex not in seen:
            seen.add(regex)
            lines.append(f'    "{regex}" "${{vp_keep}}{REDACTED}${{vp_rest}}";')
    lines += [
        '    "~^(?<vp_path>[^?]*)" "$vp_path";',
        "}",
        "",
        "map $request_uri $vp_log_query {",
        f'    "~\\?" "?{REDACTED}";',
        '    default "";',
        "}",
        "",
        f"log_format {NGINX_FORMAT}",
        "    '$remote_addr [$time_local] \"$request_method $vp_log_path$vp_log_query "
        "$server_protocol\" '",
        "    '$status $body_bytes_sent $request_time \"$http_user_agent\"';",
        "",
    ]
    return "\n".join(lines)
