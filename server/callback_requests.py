"""Call-back requests ("Être rappelé"): left at any hour without an account, taken by one
volunteer at a time, tried until the person is helped, unreachable or the request too old.

Claims are conditional UPDATEs (``… WHERE status = 'open' RETURNING id``), so two volunteers
clicking "Prendre" together never both get a request; "take the oldest" picks its row in a
subquery with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite serialises writers anyway).
Every write starts with ``begin_write`` so that SQLite writers queue instead of failing.

The phone, e-mail, first name and message are personal data: they never reach the statistics
events, which carry only the association, the motif and outcome codes.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server import assist, links
from server.contact import (
    ContactError,
    check_phone_region,
    clean_description,
    clean_first_name,
    clean_postal_code,
    normalize_email,
    normalize_phone,
    proven_link,
)
from server.errors import DomainError, Kind
from server.i18n import DEFAULT_LOCALE, N_, _, stored_language, use_language
from server.notify.deliver import SmsBudget, SmsGate, deliver
from server.notify.outbox import Channel
from server.settings import DEFAULT_PHONE_REGIONS, Settings
from server.stats.events import EventKind, record
from server.store.engine import begin_write
from server.store.models import (
    AssistanceSession,
    Association,
    CallbackAttempt,
    CallbackRequest,
    CallbackStatus,
    Motif,
    User,
)
from server.tokens import grouped_code, sha256_hex

CHANNEL = "callback"
ANY = "any"
# Preferred times to be called, as (code, French label); codes are stored on the request.
WINDOWS: tuple[tuple[str, str], ...] = (
    ("morning", N_("Le matin (9 h – 12 h)")),
    ("midday", N_("Le midi (12 h – 14 h)")),
    ("afternoon", N_("L'après-midi (14 h – 18 h)")),
    ("evening", N_("En fin de journée (18 h – 20 h)")),
    ("saturday", N_("Le samedi matin")),
    (ANY, N_("N'importe quand")),
)
WINDOW_CODES = frozenset(code for code, _label in WINDOWS)
# What a volunteer can say after a call (the visio link has its own button).
ATTEMPT_OUTCOMES: tuple[tuple[str, str], ...] = (
    ("no_answer", N_("Pas de réponse (un autre essai plus tard)")),
    ("wrong_number", N_("Mauvais numéro")),
    ("helped", N_("Aidé(e) au téléphone")),
    ("appointment", N_("Rendez-vous à prendre")),
)
OUTCOME_LABELS: dict[str, str] = {
    **dict(ATTEMPT_OUTCOMES),
    "visio_link": N_("Lien visio envoyé"),
    "unreachable": N_("Injoignable"),
    "too_old": N_("Trop ancienne"),
    "cancelled": N_("Annulée par la personne"),
}
CLOSING = {"wrong_number", "helped", "appointment", "visio_link"}
PENDING = (CallbackStatus.OPEN, CallbackStatus.CLAIMED)
MESSAGE_MAX = 500
TOKEN_MAX = 128
ID_MAX = 36
CLAIM_RETRIES = 5
EXPIRE_BATCH = 500


class CallbackError(DomainError):
    """A call-back action refused: the request changed (taken, closed) or is not there."""

    default_kind = Kind.CONFLICT


class InvalidRequest(DomainError):
    """The form has mistakes: one French message per field name (``errors``)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(
            "invalid", _("Corrigez les champs indiqués en rouge."), kind=Kind.INVALID, errors=errors
        )


@dataclass(frozen=True)
class CallbackForm:
    """What the person typed; ``validated()`` checks and normalises it."""

    phone: str
    email: str = ""
    first_name: str = ""
    motif_id: int | None = None
    postal_code: str = ""
    windows: tuple[str, ...] = ()
    message: str = ""

    def validated(
        self,
        timezone: str,
        motif_ids: set[int],
        regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS,
    ) -> CallbackForm:
        """A clean copy (E.164 phone of an allowed region, known window codes), or
        InvalidRequest naming each field."""
        errors: dict[str, str] = {}
        phone = email = first_name = postal_code = message = ""
        try:
            phone = check_phone_region(normalize_phone(self.phone, timezone), regions)
        except ContactError as exc:
            errors["phone"] = exc.message
        if self.email.strip():
            try:
                email = normalize_email(self.email)
            except ContactError as exc:
                errors["email"] = exc.message
        if self.first_name.strip():  # optional here: "Bonjour," does without it
            try:
                first_name = clean_first_name(self.first_name)
            except ContactError as exc:
                errors["first_name"] = exc.message
        if self.motif_id is not None and self.motif_id not in motif_ids:
            errors["motif"] = _("Ce motif n'est plus proposé. Choisissez-en un autre.")
        try:
            postal_code = clean_postal_code(self.postal_code) or ""
        except ContactError as exc:
            errors["postal_code"] = exc.message
        wanted = [w for w in dict.fromkeys(self.windows) if w in WINDOW_CODES]
        if not wanted or len(wanted) != len(set(self.windows)):
            errors["windows"] = _("Cochez au moins un moment, ou « N'importe quand ».")
        windows = (ANY,) if ANY in wanted else tuple(wanted)
        try:
            message = clean_description(self.message, MESSAGE_MAX, "message") or ""
        except ContactError as exc:
            errors["message"] = exc.message
        if errors:
            raise InvalidRequest(errors)
        return CallbackForm(
            phone=phone,
            email=email,
            first_name=first_name,
            motif_id=self.motif_id,
            postal_code=postal_code,
            windows=windows,
            message=message,
        )


@dataclass(frozen=True)
class Submitted:
    """The request behind a submission; `cancel_token` is None when it already existed."""

    request: CallbackRequest
    cancel_token: str | None

    @property
    def created(self) -> bool:
        """Whether this submission created the request (else it was a duplicate)."""
        return self.cancel_token is not None


def window_labels(codes: list[str]) -> list[str]:
    """The French labels of stored window codes, in the order of WINDOWS."""
    return [_(label) for code, label in WINDOWS if code in codes]


def cancel_url(settings: Settings, token: str) -> str:
    """The absolute link that lets the person cancel their request."""
    return links.CALLBACK_MANAGE.url(settings, token=token)


def _age_seconds(request: CallbackRequest, now: datetime) -> int:
    return max(0, int((now - request.created_at).total_seconds()))


async def _lock_pair(db: AsyncSession, association_id: int, phone: str) -> None:
    """Serialise submissions for one phone and association (duplicates are looked up first)."""
    await begin_write(db)  # SQLite: the write lock, held until commit
    if db.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(f"callback:{association_id}:{phone}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        await db.execute(select(func.pg_advisory_xact_lock(key)))


async def submit(
    db: AsyncSession,
    settings: Settings,
    association: Association,
    form: CallbackForm,
    now: datetime,
    *,
    sms_budget: SmsBudget | None,
    language: str = DEFAULT_LOCALE,
) -> Submitted:
    """Record a validated request and its acknowledgement, or return the pending one for this
    phone (a second click or a second visit never makes two requests). ``language``: the
    person's page's, in which every message to them is written."""
    await _lock_pair(db, association.id, form.phone)
    existing = await db.scalar(
        select(CallbackRequest)
        .where(
            CallbackRequest.association_id == association.id,
            CallbackRequest.phone == form.phone,
            CallbackRequest.status.in_(PENDING),
        )
        .order_by(CallbackRequest.created_at)
        .limit(1)
    )
    if existing is not None:
        return Submitted(existing, None)
    token = secrets.token_urlsafe(32)
    request = CallbackRequest(
        association_id=association.id,
        motif_id=form.motif_id,
        first_name=form.first_name or None,
        phone=form.phone,
        email=form.email or None,
        postal_code=form.postal_code or None,
        windows=list(form.windows),
        message=form.message or None,
        display_timezone=settings.timezone,
        language=stored_language(language).code,
        cancel_token_hash=sha256_hex(token),
        status=CallbackStatus.OPEN,
        created_at=now,
    )
    db.add(request)
    await db.flush()
    await _count(db, EventKind.CALLBACK_REQUESTED, request)
    with use_language(request.language):
        await _acknowledge(
            db, SmsGate.of(settings, sms_budget), settings, request, association, token, now
        )
    return Submitted(request, token)


def _keys(request: CallbackRequest, kind: str) -> Callable[[Channel], str]:
    """The idempotency keys of one notice about a request: ``callback:<id>:<kind>:<channel>``."""
    return lambda channel: f"callback:{request.id}:{kind}:{channel.value}"


def _hello(request: CallbackRequest) -> str:
    if request.first_name:
        return _("Bonjour %(name)s,") % {"name": request.first_name}
    return _("Bonjour,")


async def _acknowledge(
    db: AsyncSession,
    gate: SmsGate,
    settings: Settings,
    request: CallbackRequest,
    association: Association,
    token: str,
    now: datetime,
) -> None:
    """ "We will call you back", with the cancel link (never the person's message)."""
    link = cancel_url(settings, token)
    windows = ", ".join(window_labels(request.windows))
    await deliver(
        db,
        gate=gate,
        phone=request.phone,
        email=request.email,
        key=_keys(request, "ack"),
        subject=_("Votre demande de rappel"),
        body=(
            f"{_hello(request)}\n\n"
            + _(
                "Votre demande est bien enregistrée. Un bénévole de %(association)s vous "
                "rappellera au %(phone)s.\n"
                "Moments choisis : %(windows)s\n\n"
                "Vous n'avez plus besoin d'être rappelé ? Annulez ici :\n%(link)s\n\n"
                "%(association)s"
            )
            % {
                "association": association.name,
                "phone": request.phone,
                "windows": windows,
                "link": link,
            }
            + "\n"
        ),
        sms=_(
            "%(association)s : demande de rappel enregistrée, un bénévole vous appellera. "
            "Pour annuler : %(link)s"
        )
        % {"association": association.name, "link": link},
        send_after=now,
    )


# -- The person's cancel link -----------------------------------------------------------------


async def find_by_token(db: AsyncSession, token: str) -> CallbackRequest | None:
    """The request behind a cancel link, whatever its status, or None."""
    if not token or len(token) > TOKEN_MAX:
        return None
    return await db.scalar(
        select(CallbackRequest).where(CallbackRequest.cancel_token_hash == sha256_hex(token))
    )


async def cancel(db: AsyncSession, token: str, now: datetime) -> CallbackRequest:
    """Cancel through the link; CallbackError if unknown, already cancelled or already closed."""
    await begin_write(db)
    request = (
        await db.scalar(
            select(CallbackRequest)
            .where(CallbackRequest.cancel_token_hash == sha256_hex(token))
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if token and len(token) <= TOKEN_MAX
        else None
    )
    if request is None:
        raise CallbackError(
            "not_found", _("Ce lien ne marche pas. Vérifiez le lien reçu."), kind=Kind.NOT_FOUND
        )
    if request.status == CallbackStatus.CANCELLED:
        raise CallbackError("already_cancelled", _("Cette demande est déjà annulée."))
    if request.status not in PENDING:
        raise CallbackError("closed", _("Cette demande est déjà terminée."))
    _close(request, CallbackStatus.CANCELLED, "cancelled", now)
    await _count(
        db, EventKind.CALLBACK_CANCELLED, request, duration_seconds=_age_seconds(request, now)
    )
    return request


# -- Volunteers: list, claim, attempts --------------------------------------------------------


async def pending(db: AsyncSession, association_id: int) -> list[CallbackRequest]:
    """Open and claimed requests of an association, oldest first."""
    rows = await db.scalars(
        select(CallbackRequest)
        .where(
            CallbackRequest.association_id == association_id,
            CallbackRequest.status.in_(PENDING),
        )
        .order_by(CallbackRequest.created_at, CallbackRequest.id)
    )
    return list(rows)


async def get(db: AsyncSession, association_id: int, callback_id: str) -> CallbackRequest | None:
    """A request of this association (any status), or None."""
    if not callback_id or len(callback_id) > ID_MAX:
        return None
    return await db.scalar(
        select(CallbackRequest).where(
            CallbackRequest.id == callback_id, CallbackRequest.association_id == association_id
        )
    )


async def attempts(db: AsyncSession, callback_id: str) -> list[tuple[CallbackAttempt, str]]:
    """The attempts on a request with the volunteer's name, oldest first."""
    rows = await db.execute(
        select(CallbackAttempt, User.name)
        .join(User, User.id == CallbackAttempt.volunteer_id)
        .where(CallbackAttempt.callback_id == callback_id)
        .order_by(CallbackAttempt.created_at, CallbackAttempt.id)
    )
    return [(attempt, name) for attempt, name in rows.all()]


def _taken_by_other() -> CallbackError:
    return CallbackError("taken", _("Un autre bénévole vient de prendre cette demande."))


async def claim(
    db: AsyncSession, volunteer: User, callback_id: str, now: datetime
) -> CallbackRequest:
    """Take one open request; CallbackError("taken") if someone else was faster."""
    await begin_write(db)
    request = await get(db, volunteer.association_id, callback_id)
    if request is None:
        raise CallbackError("not_found", _("Demande introuvable."), kind=Kind.NOT_FOUND)
    claimed = await db.scalar(
        update(CallbackRequest)
        .where(CallbackRequest.id == request.id, CallbackRequest.status == CallbackStatus.OPEN)
        .values(status=CallbackStatus.CLAIMED, claimed_by_id=volunteer.id, claimed_at=now)
        .returning(CallbackRequest.id)
        .execution_options(synchronize_session=False)
    )
    await db.refresh(request)
    if claimed is None:
        if request.status == CallbackStatus.CLAIMED and request.claimed_by_id == volunteer.id:
            return request  # a double click
        if request.status not in PENDING:
            raise CallbackError("closed", _("Cette demande est déjà terminée."))
        raise _taken_by_other()
    return request


async def claim_oldest(db: AsyncSession, volunteer: User, now: datetime) -> CallbackRequest | None:
    """Take the oldest open request of the volunteer's association; None when none is left."""
    await begin_write(db)
    oldest = (
        select(CallbackRequest.id)
        .where(
            CallbackRequest.association_id == volunteer.association_id,
            CallbackRequest.status == CallbackStatus.OPEN,
        )
        .order_by(CallbackRequest.created_at, CallbackRequest.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    for _attempt in range(CLAIM_RETRIES):
        claimed = await db.scalar(
            update(CallbackRequest)
            .where(CallbackRequest.id == oldest, CallbackRequest.status == CallbackStatus.OPEN)
            .values(status=CallbackStatus.CLAIMED, claimed_by_id=volunteer.id, claimed_at=now)
            .returning(CallbackRequest.id)
            .execution_options(synchronize_session=False)
        )
        if claimed is not None:
            return await db.get_one(CallbackRequest, claimed, populate_existing=True)
        # Nothing claimed: either none is open, or every open one was locked by another claim
        # in flight (SKIP LOCKED), which is now committed or rolled back. Look again.
        still_open = await db.scalar(
            select(func.count())
            .select_from(CallbackRequest)
            .where(
                CallbackRequest.association_id == volunteer.association_id,
                CallbackRequest.status == CallbackStatus.OPEN,
            )
        )
        if not still_open:
            return None
    return None


async def _held(db: AsyncSession, volunteer: User, callback_id: str) -> CallbackRequest:
    """The request, locked, if this volunteer holds it; else the French reason."""
    await begin_write(db)
    if not callback_id or len(callback_id) > ID_MAX:
        raise CallbackError("not_found", _("Demande introuvable."), kind=Kind.NOT_FOUND)
    request = await db.scalar(
        select(CallbackRequest)
        .where(
            CallbackRequest.id == callback_id,
            CallbackRequest.association_id == volunteer.association_id,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if request is None:
        raise CallbackError("not_found", _("Demande introuvable."), kind=Kind.NOT_FOUND)
    if request.status not in PENDING:
        raise CallbackError("closed", _("Cette demande est déjà terminée."))
    if request.status != CallbackStatus.CLAIMED or request.claimed_by_id != volunteer.id:
        raise CallbackError(
            "not_yours", _("Prenez d'abord cette demande : un seul bénévole appelle à la fois.")
        )
    return request


def _close(request: CallbackRequest, status: CallbackStatus, outcome: str, now: datetime) -> None:
    request.status = status
    request.outcome = outcome
    request.closed_at = now


def _reopen(request: CallbackRequest) -> None:
    request.status = CallbackStatus.OPEN
    request.claimed_by_id = None
    request.claimed_at = None


async def release(db: AsyncSession, volunteer: User, callback_id: str) -> CallbackRequest:
    """Give a claimed request back to the list, for someone else."""
    request = await _held(db, volunteer, callback_id)
    _reopen(request)
    await db.flush()
    return request


async def _log(
    db: AsyncSession, request: CallbackRequest, volunteer: User, outcome: str, now: datetime
) -> None:
    db.add(
        CallbackAttempt(
            callback_id=request.id, volunteer_id=volunteer.id, outcome=outcome, created_at=now
        )
    )
    await _count(db, EventKind.CALLBACK_ATTEMPTED, request, reason=outcome)


async def _count(db: AsyncSession, kind: EventKind, request: CallbackRequest, **facts: Any) -> None:
    """One statistics event about a request: motif and département, never who asked."""
    await record(
        db,
        kind,
        association_id=request.association_id,
        channel=CHANNEL,
        motif_id=request.motif_id,
        postal_code=request.postal_code,
        language=request.language,
        **facts,
    )


async def _finish(
    db: AsyncSession,
    request: CallbackRequest,
    status: CallbackStatus,
    kind: EventKind,
    outcome: str,
    now: datetime,
) -> None:
    """Close the request with its outcome code and count it with its age."""
    _close(request, status, outcome, now)
    await _count(db, kind, request, reason=outcome, duration_seconds=_age_seconds(request, now))


async def _resolve(db: AsyncSession, request: CallbackRequest, outcome: str, now: datetime) -> None:
    await _finish(db, request, CallbackStatus.RESOLVED, EventKind.CALLBACK_RESOLVED, outcome, now)


async def _expire(db: AsyncSession, request: CallbackRequest, reason: str, now: datetime) -> None:
    await _finish(db, request, CallbackStatus.EXPIRED, EventKind.CALLBACK_EXPIRED, reason, now)


async def log_attempt(
    db: AsyncSession,
    settings: Settings,
    volunteer: User,
    callback_id: str,
    outcome: str,
    now: datetime,
) -> CallbackRequest:
    """Record a call and its outcome: no answer puts the request back in the list (closed as
    unreachable after CALLBACK_MAX_NO_ANSWER), the other outcomes close it."""
    if outcome not in dict(ATTEMPT_OUTCOMES):
        raise CallbackError(
            "invalid_outcome", _("Choisissez le résultat de l'appel."), kind=Kind.INVALID
        )
    request = await _held(db, volunteer, callback_id)
    await _log(db, request, volunteer, outcome, now)
    if outcome == "no_answer":
        request.attempt_count += 1
        if request.attempt_count >= settings.callback_max_no_answer:
            await _expire(db, request, "unreachable", now)
        else:
            _reopen(request)
    else:
        request.attempt_count += 1
        await _resolve(db, request, outcome, now)
    await db.flush()
    return request


async def send_visio_link(
    db: AsyncSession,
    settings: Settings,
    volunteer: User,
    callback_id: str,
    now: datetime,
    *,
    sms_budget: SmsBudget | None,
) -> AssistanceSession:
    """Open an assistance for the person, send them its link and code, and close the request.
    Each link is marked for the contact it goes to (coming through it proves the person reads
    that phone or address: server/handoff.py)."""
    request = await _held(db, volunteer, callback_id)
    session = await assist.create_session(db, settings, volunteer, channel=CHANNEL)
    session.language = request.language
    request.assistance_session_id = session.id
    with use_language(request.language):
        await _send_visio_link(db, settings, request, session, sms_budget=sms_budget, now=now)
    await _log(db, request, volunteer, "visio_link", now)
    request.attempt_count += 1
    await _resolve(db, request, "visio_link", now)
    await db.flush()
    return session


async def _send_visio_link(
    db: AsyncSession,
    settings: Settings,
    request: CallbackRequest,
    session: AssistanceSession,
    *,
    sms_budget: SmsBudget | None,
    now: datetime,
) -> None:
    link = assist.link_for(settings, session)
    secret = settings.secret_key.get_secret_value()
    email_link = proven_link(link, secret, session.id, "email", request.email)
    sms_link = proven_link(link, secret, session.id, "phone", request.phone)
    code = grouped_code(assist.current_code(settings, session) or "")
    association = await db.get_one(Association, request.association_id)
    await deliver(
        db,
        gate=SmsGate.of(settings, sms_budget),
        phone=request.phone,
        email=request.email,
        key=_keys(request, f"visio:{session.id}"),
        subject=_("Votre lien pour l'assistance en visio"),
        body=(
            f"{_hello(request)}\n\n"
            + _(
                "Un bénévole de %(association)s vous attend en visio.\n"
                "Ouvrez ce lien :\n%(link)s\n\n"
                "Ou allez sur %(code_url)s et tapez le code : %(code)s\n"
            )
            % {
                "association": association.name,
                "link": email_link,
                "code_url": links.CODE.url(settings),
                "code": code,
            }
        ),
        sms=_(
            "%(association)s : votre bénévole vous attend en visio. Lien : %(link)s Code : %(code)s"
        )
        % {"association": association.name, "link": sms_link, "code": code},
        send_after=now,
    )


# -- Expiry -----------------------------------------------------------------------------------


async def expire_old(db: AsyncSession, settings: Settings, now: datetime) -> int:
    """Close requests still open or claimed after CALLBACK_EXPIRE_DAYS ('too_old'); how many."""
    await begin_write(db)
    limit = now - timedelta(days=settings.callback_expire_days)
    rows = await db.scalars(
        select(CallbackRequest)
        .where(CallbackRequest.status.in_(PENDING), CallbackRequest.created_at < limit)
        .order_by(CallbackRequest.created_at)
        .limit(EXPIRE_BATCH)  # the rest at the next round: a round stays short
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    expired = list(rows)
    for request in expired:
        await _expire(db, request, "too_old", now)
    await db.flush()
    return len(expired)


async def motif_names(db: AsyncSession, association_id: int) -> dict[int, str]:
    """Motif names by id (inactive ones too: old requests may point to them)."""
    rows = await db.execute(
        select(Motif.id, Motif.name).where(Motif.association_id == association_id)
    )
    return {motif_id: name for motif_id, name in rows.all()}
