"""Call-back requests through the real pages and the domain module (SQLite and PostgreSQL): the
public form and its acknowledgement, French refusals that keep what was typed, duplicates, rate
limits, the cancel link, atomic claims under concurrency, attempts, visio links, expiry, access."""

from __future__ import annotations

import asyncio
import html
import re
from datetime import timedelta

import aiohttp
from sqlalchemy import func, select, update

from server import callback_requests
from server.callback_requests import CallbackError, CallbackForm
from server.motifs import ensure_default_motifs
from server.notify import Notifier
from server.ratelimit import RATELIMIT_KEY
from server.stats.events import EventKind
from server.store.models import (
    AssistanceSession,
    Association,
    CallbackAttempt,
    CallbackRequest,
    CallbackStatus,
    OutboxMessage,
    Role,
    StatEvent,
    User,
    utcnow,
)
from server.worker import Worker
from tests.conftest import Account, Running, browser_session, csrf_from, login, make_account

PHONE = "06 12 34 56 78"
E164 = "+33612345678"
CANCEL_LINK = re.compile(r"/rappel/annuler/([A-Za-z0-9_-]{20,})")


def text_of(page: str) -> str:
    """Page text with entities decoded, for French assertions."""
    return html.unescape(page)


async def place(running: Running) -> tuple[int, int]:
    """Association A with its default motifs: (association id, first motif id)."""
    account = await make_account(running, "camille@example.org")
    async with running.sessionmaker.begin() as db:
        motifs = await ensure_default_motifs(db, account.user.association_id)
    return account.user.association_id, motifs[0].id


async def ask(
    http: aiohttp.ClientSession, running: Running, association_id: int, **values: str
) -> tuple[int, str, str]:
    """Open the form, fill it as a person would, submit; (status, page text, final URL)."""
    async with http.get(running.url("/rappel"), params={"a": str(association_id)}) as resp:
        assert resp.status == 200
        token = csrf_from(await resp.text())
    data = {
        "csrf_token": token,
        "a": str(association_id),
        "phone": PHONE,
        "email": "awa@example.org",
        "first_name": "Awa",
        "motif": "",
        "postal_code": "75011",
        "windows": "morning",
        "message": "Ma déclaration CAF",
        "site_web": "",
    }
    data.update(values)
    async with http.post(running.url("/rappel"), data=data) as resp:
        return resp.status, text_of(await resp.text()), str(resp.url)


async def make_request(
    running: Running, association_id: int, phone: str = PHONE, age: timedelta | None = None
) -> CallbackRequest:
    """A request made through the domain module, `age` old."""
    form = CallbackForm(phone=phone, first_name="Awa", windows=("any",)).validated(
        "Europe/Paris", set()
    )
    now = utcnow() - (age or timedelta(0))
    async with running.sessionmaker.begin() as db:
        association = await db.get_one(Association, association_id)
        done = await callback_requests.submit(
            db, running.settings, association, form, now, sms_budget=running.app[RATELIMIT_KEY]
        )
    assert done.created
    return done.request


async def count(running: Running, model: type[object]) -> int:
    """Rows of a table."""
    async with running.sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(model)) or 0)


async def reload(running: Running, callback_id: str) -> CallbackRequest:
    """The request as stored now."""
    async with running.sessionmaker() as db:
        return await db.get_one(CallbackRequest, callback_id)


async def events(running: Running, kind: EventKind) -> list[StatEvent]:
    """Statistics events of one kind."""
    async with running.sessionmaker() as db:
        rows = await db.scalars(select(StatEvent).where(StatEvent.kind == kind.value))
        return list(rows)


async def post_form(
    http: aiohttp.ClientSession, running: Running, page: str, action: str, **data: str
) -> aiohttp.ClientResponse:
    """Read the CSRF token of `page`, then POST to `action` without following redirects."""
    async with http.get(running.url(page)) as resp:
        token = csrf_from(await resp.text())
    resp = await http.post(
        running.url(action), data={"csrf_token": token, **data}, allow_redirects=False
    )
    await resp.read()
    return resp


async def staff(running: Running, email: str, association: str = "Asso A") -> aiohttp.ClientSession:
    """A logged-in volunteer's browser."""
    account = await make_account(running, email, Role.VOLUNTEER, association)
    http = await browser_session()
    await login(http, running, account)
    return http


# -- Public side ------------------------------------------------------------------------------


async def test_request_with_a_mobile_enqueues_sms_and_email_with_the_cancel_link(
    running: Running, http: aiohttp.ClientSession
) -> None:
    association_id, _motif = await place(running)
    status, page, url = await ask(http, running, association_id)
    assert status == 200 and "/rappel/annuler/" in url and "confirme=1" in url, page
    assert "C'est noté, nous vous rappelons" in page and "Annuler ma demande" in page
    async with running.sessionmaker() as db:
        request = (await db.scalars(select(CallbackRequest))).one()
        messages = {
            m.channel: m
            for m in await db.scalars(
                select(OutboxMessage).where(
                    OutboxMessage.idempotency_key.startswith(f"callback:{request.id}:ack:")
                )
            )
        }
    assert request.phone == E164 and request.status == CallbackStatus.OPEN
    assert request.windows == ["morning"] and request.postal_code == "75011"
    token = url.split("/rappel/annuler/")[1].split("?")[0]
    assert request.cancel_token_hash != token and len(request.cancel_token_hash) == 64
    assert set(messages) == {"sms", "email"}
    link = running.settings.url(f"/rappel/annuler/{token}")
    assert messages["sms"].recipient == E164 and link in messages["sms"].body
    assert messages["email"].recipient == "awa@example.org" and link in messages["email"].body
    assert "Asso A" in messages["sms"].body and "Asso A" in messages["email"].body
    assert "Ma déclaration CAF" not in messages["email"].body  # never the free text
    [event] = await events(running, EventKind.CALLBACK_REQUESTED)
    assert event.channel == "callback" and event.association_id == association_id


async def test_invalid_phone_is_refused_in_french_and_keeps_what_was_typed(
    running: Running, http: aiohttp.ClientSession
) -> None:
    association_id, _motif = await place(running)
    status, page, _url = await ask(
        http, running, association_id, phone="06 12 AB", postal_code="750", windows=""
    )
    assert status == 400
    assert "Ce numéro de téléphone n'est pas valide" in page
    assert "Le code postal a 5 chiffres" in page
    assert "Cochez au moins un moment" in page
    assert 'value="06 12 AB"' in page and 'value="Awa"' in page and "Ma déclaration CAF" in page
    assert await count(running, CallbackRequest) == 0
    assert await count(running, OutboxMessage) == 0


async def test_overseas_number_and_landline_are_accepted_landline_gets_no_sms(
    running: Running, http: aiohttp.ClientSession
) -> None:
    association_id, _motif = await place(running)
    status, _page, _url = await ask(http, running, association_id, phone="0690 12 34 56")
    assert status == 200
    status, _page, _url = await ask(http, running, association_id, phone="01 42 27 12 34", email="")
    assert status == 200
    async with running.sessionmaker() as db:
        phones = set(await db.scalars(select(CallbackRequest.phone)))
        channels = list(await db.scalars(select(OutboxMessage.recipient)))
    assert phones == {"+590690123456", "+33142271234"}
    assert "+33142271234" not in channels


async def test_second_submission_for_the_same_phone_is_not_duplicated(
    running: Running, http: aiohttp.ClientSession
) -> None:
    association_id, _motif = await place(running)
    assert (await ask(http, running, association_id))[0] == 200
    status, page, _url = await ask(http, running, association_id, phone="+33 6 12 34 56 78")
    assert status == 200 and "Demande déjà enregistrée" in page
    assert await count(running, CallbackRequest) == 1
    assert await count(running, OutboxMessage) == 2
    assert len(await events(running, EventKind.CALLBACK_REQUESTED)) == 1


async def test_concurrent_duplicate_submissions_make_one_request(running: Running) -> None:
    association_id, _motif = await place(running)
    form = CallbackForm(phone=PHONE, windows=("any",)).validated("Europe/Paris", set())

    async def submit() -> bool:
        async with running.sessionmaker.begin() as db:
            association = await db.get_one(Association, association_id)
            done = await callback_requests.submit(
                db,
                running.settings,
                association,
                form,
                utcnow(),
                sms_budget=running.app[RATELIMIT_KEY],
            )
        return done.created

    created = await asyncio.gather(*(submit() for _ in range(10)))
    assert created.count(True) == 1
    assert await count(running, CallbackRequest) == 1


async def test_rate_limit_per_phone_answers_429_in_french(
    running: Running, http: aiohttp.ClientSession
) -> None:
    association_id, _motif = await place(running)
    for _attempt in range(3):
        assert (await ask(http, running, association_id))[0] == 200
    status, page, _url = await ask(http, running, association_id)
    assert status == 429 and "Ce numéro a déjà fait plusieurs demandes aujourd'hui" in page
    assert 'value="Awa"' in page
    assert await count(running, CallbackRequest) == 1


async def test_honeypot_refuses_without_writing(
    running: Running, http: aiohttp.ClientSession
) -> None:
    association_id, _motif = await place(running)
    status, page, _url = await ask(http, running, association_id, site_web="http://spam")
    assert status == 400 and "n'a pas pu être enregistrée" in page
    assert await count(running, CallbackRequest) == 0


async def test_cancel_link_works_once_and_a_forged_token_is_404(
    running: Running, http: aiohttp.ClientSession
) -> None:
    association_id, motif_id = await place(running)
    _status, _page, url = await ask(http, running, association_id, motif=str(motif_id))
    path = "/rappel/annuler/" + url.split("/rappel/annuler/")[1].split("?")[0]
    async with http.get(running.url(path)) as resp:
        page = text_of(await resp.text())
    assert resp.status == 200 and "Annuler ma demande" in page and "CAF" in page
    token = csrf_from(page)
    async with http.post(
        running.url(path), data={"csrf_token": token}, allow_redirects=False
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"].endswith("?annule=1")
        location = resp.headers["Location"]
    async with http.get(running.url(location)) as resp:
        page = text_of(await resp.text())
    assert "Demande annulée" in page and "Annuler ma demande" not in page
    request = (await callbacks_all(running))[0]
    assert request.status == CallbackStatus.CANCELLED and request.outcome == "cancelled"
    # A second click (the page was open in another tab) says so without counting twice.
    async with http.post(running.url(path), data={"csrf_token": token}) as resp:
        assert resp.status == 409
        assert "Cette demande est déjà annulée" in text_of(await resp.text())
    assert len(await events(running, EventKind.CALLBACK_CANCELLED)) == 1
    forged = "/rappel/annuler/" + "A" * 43
    async with http.get(running.url(forged)) as resp:
        page = text_of(await resp.text())
    assert resp.status == 404 and "Ce lien ne marche pas" in page
    async with http.post(running.url(forged), data={"csrf_token": token}) as resp:
        assert resp.status == 404


async def callbacks_all(running: Running) -> list[CallbackRequest]:
    """Every request, oldest first."""
    async with running.sessionmaker() as db:
        return list(await db.scalars(select(CallbackRequest).order_by(CallbackRequest.created_at)))


async def test_cancel_page_of_a_resolved_request_says_it_is_over(
    running: Running, http: aiohttp.ClientSession
) -> None:
    association_id, _motif = await place(running)
    _status, _page, url = await ask(http, running, association_id)
    async with running.sessionmaker.begin() as db:
        await db.execute(update(CallbackRequest).values(status=CallbackStatus.RESOLVED))
    async with http.get(url.split("?")[0]) as resp:
        page = text_of(await resp.text())
    assert "Demande terminée" in page and "Annuler ma demande" not in page


# -- Claims under concurrency -----------------------------------------------------------------


async def test_two_volunteers_claiming_together_never_both_get_it(running: Running) -> None:
    association_id, _motif = await place(running)
    a = (await make_account(running, "a@example.org")).user
    b = (await make_account(running, "b@example.org")).user

    async def claim(volunteer: User, callback_id: str) -> int | None:
        try:
            async with running.sessionmaker.begin() as db:
                await callback_requests.claim(db, volunteer, callback_id, utcnow())
        except CallbackError as exc:
            assert exc.code == "taken" and "Un autre bénévole" in exc.message
            return None
        return volunteer.id

    for index in range(50):
        request = await make_request(running, association_id, phone=f"06 12 34 56 {index:02d}")
        winners = await asyncio.gather(claim(a, request.id), claim(b, request.id))
        assert len([w for w in winners if w is not None]) == 1, winners
        stored = await reload(running, request.id)
        assert stored.status == CallbackStatus.CLAIMED and stored.claimed_by_id in winners


async def test_claim_race_over_http_the_loser_reads_a_french_message(running: Running) -> None:
    association_id, _motif = await place(running)
    request = await make_request(running, association_id)
    first, second = await staff(running, "a@example.org"), await staff(running, "b@example.org")
    try:
        tokens = []
        for http in (first, second):
            async with http.get(running.url("/rappels")) as resp:
                tokens.append(csrf_from(await resp.text()))

        async def take(http: aiohttp.ClientSession, token: str) -> tuple[int, str]:
            async with http.post(
                running.url(f"/rappels/{request.id}/prendre"),
                data={"csrf_token": token},
                allow_redirects=False,
            ) as resp:
                return resp.status, text_of(await resp.text())

        results = await asyncio.gather(take(first, tokens[0]), take(second, tokens[1]))
    finally:
        await first.close()
        await second.close()
    statuses = sorted(status for status, _page in results)
    assert statuses == [303, 409]
    loser = next(page for status, page in results if status == 409)
    assert "Un autre bénévole vient de prendre cette demande." in loser


async def test_take_oldest_race_claims_every_request_exactly_once(running: Running) -> None:
    association_id, _motif = await place(running)
    total = 30
    for index in range(total):
        await make_request(
            running,
            association_id,
            phone=f"06 98 76 54 {index:02d}",
            age=timedelta(minutes=total - index),
        )
    a = (await make_account(running, "a@example.org")).user
    b = (await make_account(running, "b@example.org")).user

    async def drain(volunteer: User) -> list[str]:
        taken: list[str] = []
        while True:
            async with running.sessionmaker.begin() as db:
                request = await callback_requests.claim_oldest(db, volunteer, utcnow())
            if request is None:
                return taken
            assert request.claimed_by_id == volunteer.id
            taken.append(request.id)

    got_a, got_b = await asyncio.gather(drain(a), drain(b))
    stored = await callbacks_all(running)
    assert len(got_a) + len(got_b) == total
    assert set(got_a) | set(got_b) == {r.id for r in stored}
    assert not set(got_a) & set(got_b)
    assert all(r.status == CallbackStatus.CLAIMED for r in stored)
    owner = {r.id: r.claimed_by_id for r in stored}
    assert all(owner[i] == a.id for i in got_a) and all(owner[i] == b.id for i in got_b)
    # Each volunteer took its requests oldest first.
    order = [r.id for r in stored]
    assert got_a == sorted(got_a, key=order.index) and got_b == sorted(got_b, key=order.index)


# -- The volunteers' pages --------------------------------------------------------------------


async def test_list_shows_masked_phone_age_and_flags_old_requests(running: Running) -> None:
    association_id, _motif = await place(running)
    old = await make_request(running, association_id, age=timedelta(hours=30))
    await make_request(running, association_id, phone="07 81 22 33 44")
    http = await staff(running, "a@example.org")
    try:
        async with http.get(running.url("/rappels")) as resp:
            page = text_of(await resp.text())
    finally:
        await http.close()
    assert resp.status == 200 and "Prendre le plus ancien" in page
    assert "06 •• •• •• 78" in page and "06 12 34 56 78" not in page and E164 not in page
    assert f'class="card callback callback-late" id="rappel-{old.id}"' in page
    assert "En attente depuis plus de 24 h" in page and "il y a 30 h" in page
    assert page.index(old.id) < page.index("07 •• •• •• 44")


async def test_claimer_sees_full_phone_and_others_see_it_read_only(running: Running) -> None:
    association_id, _motif = await place(running)
    request = await make_request(running, association_id)
    mine, other = await staff(running, "a@example.org"), await staff(running, "b@example.org")
    try:
        resp = await post_form(mine, running, "/rappels", f"/rappels/{request.id}/prendre")
        assert resp.status == 303 and resp.headers["Location"] == f"/rappels/{request.id}"
        async with mine.get(running.url(f"/rappels/{request.id}")) as resp:
            page = text_of(await resp.text())
        assert f'href="tel:{E164}"' in page and "Après l'appel" in page
        async with other.get(running.url(f"/rappels/{request.id}")) as resp:
            page = text_of(await resp.text())
        assert "tel:" not in page and "Après l'appel" not in page
        assert "Pris par</dt><dd>a</dd>" in page
        resp = await post_form(
            other, running, "/rappels", f"/rappels/{request.id}/essai", outcome="helped"
        )
        assert resp.status == 409 and "Prenez d'abord cette demande" in text_of(await resp.text())
        resp = await post_form(mine, running, "/rappels", f"/rappels/{request.id}/relacher")
        assert resp.status == 303
        assert (await reload(running, request.id)).status == CallbackStatus.OPEN
    finally:
        await mine.close()
        await other.close()


async def test_three_no_answers_close_the_request_as_unreachable(running: Running) -> None:
    association_id, _motif = await place(running)
    request = await make_request(running, association_id)
    http = await staff(running, "a@example.org")
    try:
        for attempt in range(3):
            await post_form(http, running, "/rappels", f"/rappels/{request.id}/prendre")
            resp = await post_form(
                http,
                running,
                f"/rappels/{request.id}",
                f"/rappels/{request.id}/essai",
                outcome="no_answer",
            )
            assert resp.status == 303
            stored = await reload(running, request.id)
            assert stored.attempt_count == attempt + 1
            if attempt < 2:
                assert stored.status == CallbackStatus.OPEN and stored.claimed_by_id is None
        async with http.get(running.url(f"/rappels/{request.id}")) as resp:
            page = text_of(await resp.text())
    finally:
        await http.close()
    assert stored.status == CallbackStatus.EXPIRED and stored.outcome == "unreachable"
    assert page.count("Pas de réponse") == 3
    assert [e.reason for e in await events(running, EventKind.CALLBACK_ATTEMPTED)] == [
        "no_answer"
    ] * 3
    [expired] = await events(running, EventKind.CALLBACK_EXPIRED)
    assert expired.reason == "unreachable" and expired.channel == "callback"


async def test_helped_resolves_and_statistics_hold_no_personal_data(running: Running) -> None:
    association_id, motif_id = await place(running)
    http = await browser_session()
    try:
        await ask(http, running, association_id, motif=str(motif_id))
    finally:
        await http.close()
    [request] = await callbacks_all(running)
    http = await staff(running, "a@example.org")
    try:
        await post_form(http, running, "/rappels", "/rappels/prendre")
        resp = await post_form(
            http,
            running,
            f"/rappels/{request.id}",
            f"/rappels/{request.id}/essai",
            outcome="helped",
        )
        assert resp.status == 303 and resp.headers["Location"] == f"/rappels/{request.id}"
    finally:
        await http.close()
    stored = await reload(running, request.id)
    assert stored.status == CallbackStatus.RESOLVED and stored.outcome == "helped"
    [resolved] = await events(running, EventKind.CALLBACK_RESOLVED)
    assert resolved.reason == "helped" and resolved.motif_id == motif_id
    assert resolved.duration_seconds is not None and resolved.duration_seconds >= 0
    async with running.sessionmaker() as db:
        rows = (await db.execute(select(StatEvent.__table__))).all()
    dump = repr(rows)
    for secret in (E164, "0612345678", "12 34 56 78", "Awa", "awa@example.org", "75011", "CAF"):
        assert secret not in dump, secret
    assert all(row.channel == "callback" for row in rows if row.kind.startswith("callback"))


async def test_appointment_outcome_offers_the_booking_pages(running: Running) -> None:
    association_id, _motif = await place(running)
    request = await make_request(running, association_id)
    http = await staff(running, "a@example.org")
    try:
        await post_form(http, running, "/rappels", f"/rappels/{request.id}/prendre")
        await post_form(
            http,
            running,
            f"/rappels/{request.id}",
            f"/rappels/{request.id}/essai",
            outcome="appointment",
        )
        async with http.get(running.url(f"/rappels/{request.id}")) as resp:
            page = text_of(await resp.text())
        bad = await post_form(
            http, running, "/rappels", f"/rappels/{request.id}/essai", outcome="visio_link"
        )
    finally:
        await http.close()
    assert f'href="/rendez-vous?a={association_id}"' in page
    assert (await reload(running, request.id)).outcome == "appointment"
    assert bad.status == 400


async def test_visio_link_opens_an_assistance_and_sends_the_join_link(running: Running) -> None:
    association_id, _motif = await place(running)
    http = await browser_session()
    try:
        await ask(http, running, association_id)
    finally:
        await http.close()
    [request] = await callbacks_all(running)
    http = await staff(running, "a@example.org")
    try:
        await post_form(http, running, "/rappels", f"/rappels/{request.id}/prendre")
        resp = await post_form(
            http, running, f"/rappels/{request.id}", f"/rappels/{request.id}/visio"
        )
        assert resp.status == 303 and resp.headers["Location"].startswith("/assistance/")
        async with http.get(running.url(resp.headers["Location"])) as room:
            assert room.status == 200
    finally:
        await http.close()
    session_id = resp.headers["Location"].rsplit("/", 1)[1]
    stored = await reload(running, request.id)
    assert stored.assistance_session_id == session_id
    assert stored.status == CallbackStatus.RESOLVED and stored.outcome == "visio_link"
    async with running.sessionmaker() as db:
        session = await db.get_one(AssistanceSession, session_id)
        sent = list(
            await db.scalars(
                select(OutboxMessage).where(
                    OutboxMessage.idempotency_key.startswith(f"callback:{request.id}:visio:")
                )
            )
        )
        tries = list(await db.scalars(select(CallbackAttempt.outcome)))
    assert session.channel == "callback"
    assert {m.channel for m in sent} == {"sms", "email"}
    assert all("/j/" in m.body and re.search(r"\b\d{4} \d{4}\b", m.body) for m in sent)
    assert tries == ["visio_link"]


# -- Expiry -----------------------------------------------------------------------------------


async def test_old_requests_expire_with_their_reason(running: Running) -> None:
    association_id, _motif = await place(running)
    old = await make_request(running, association_id, age=timedelta(days=8))
    fresh = await make_request(running, association_id, phone="07 81 22 33 44")
    # The worker's housekeeping runs the expiry (at most once a minute).
    now = utcnow()
    notifier = Notifier.from_settings(running.settings)
    worker = Worker(
        running.sessionmaker,
        notifier,
        poll_seconds=60,
        settings=running.settings,
        clock=lambda: now,
    )
    try:
        assert await worker.housekeeping() == 1
        assert await worker.housekeeping() == 0  # not again within the minute
    finally:
        await notifier.close()
    assert (await reload(running, old.id)).status == CallbackStatus.EXPIRED
    assert (await reload(running, old.id)).outcome == "too_old"
    assert (await reload(running, fresh.id)).status == CallbackStatus.OPEN
    [expired] = await events(running, EventKind.CALLBACK_EXPIRED)
    assert expired.reason == "too_old" and expired.duration_seconds >= 8 * 86400
    async with running.sessionmaker.begin() as db:
        assert await callback_requests.expire_old(db, running.settings, utcnow()) == 0


async def test_expiry_at_a_chosen_time(running: Running) -> None:
    association_id, _motif = await place(running)
    request = await make_request(running, association_id)
    later = utcnow() + timedelta(days=running.settings.callback_expire_days, minutes=1)
    async with running.sessionmaker.begin() as db:
        assert await callback_requests.expire_old(db, running.settings, later) == 1
    assert (await reload(running, request.id)).status == CallbackStatus.EXPIRED


# -- Access -----------------------------------------------------------------------------------


async def test_access_other_association_404_referrer_refused_anonymous_to_login(
    running: Running, http: aiohttp.ClientSession
) -> None:
    association_id, _motif = await place(running)
    request = await make_request(running, association_id)
    outsider = await staff(running, "b@example.org", association="Asso B")
    referrer: Account = await make_account(running, "ref@example.org", Role.REFERRER)
    try:
        async with outsider.get(running.url(f"/rappels/{request.id}")) as resp:
            assert resp.status == 404
        async with outsider.get(running.url("/rappels")) as resp:
            assert request.id not in await resp.text()
        resp = await post_form(outsider, running, "/rappels", f"/rappels/{request.id}/prendre")
        assert resp.status == 404
        resp = await post_form(outsider, running, "/rappels", "/rappels/prendre")
        assert resp.headers["Location"] == "/rappels?info=aucune"
        async with outsider.get(running.url("/rappels/" + "x" * 500)) as resp:
            assert resp.status == 404
    finally:
        await outsider.close()
    assert (await reload(running, request.id)).status == CallbackStatus.OPEN
    ref = await browser_session()
    try:
        await login(ref, running, referrer)
        async with ref.get(running.url("/rappels")) as resp:
            assert resp.status == 403
    finally:
        await ref.close()
    async with http.get(running.url("/rappels"), allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"].startswith("/login")


async def test_nav_link_for_volunteers(running: Running) -> None:
    await place(running)
    http = await staff(running, "a@example.org")
    try:
        async with http.get(running.url("/tableau")) as resp:
            assert 'href="/rappels"' in await resp.text()
    finally:
        await http.close()
