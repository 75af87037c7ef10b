"""The coordinator's page of failed notifications: their association's only, recipients masked,
and a retry that hands the message back to the worker (which sends it)."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
import pytest
from sqlalchemy import select

from server import accounts
from server.notify import failures
from server.notify.outbox import Channel, enqueue
from server.store.models import CallbackRequest, OutboxMessage, OutboxStatus, Role, utcnow
from tests.conftest import Running, csrf_from, login, make_account

PHONE = "+33612345678"
EMAIL = "josiane.martin@example.org"


async def _failed_callback_notice(
    running: Running, association: str, channel: Channel, recipient: str, error: str
) -> int:
    """A call-back request of ``association`` whose acknowledgement was given up as failed."""
    async with running.sessionmaker.begin() as db:
        assoc = await accounts.get_or_create_association(db, association)
        request = CallbackRequest(
            association_id=assoc.id, phone=PHONE, cancel_token_hash=secrets.token_hex(32)
        )
        db.add(request)
        await db.flush()
        message = await enqueue(
            db,
            key=f"callback:{request.id}:ack:{channel.value}",
            channel=channel,
            recipient=recipient,
            subject="Votre demande" if channel is Channel.EMAIL else None,
            body="Bonjour",
            send_after=utcnow(),
        )
        assert message is not None
        message.status = OutboxStatus.FAILED
        message.attempts = 8
        message.last_error = error
        return message.id


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_coordinator_sees_and_retries_only_their_associations_failures(
    running: Running, http: aiohttp.ClientSession
) -> None:
    ours = await _failed_callback_notice(
        running, "Asso A", Channel.SMS, PHONE, f"Brevo refused {PHONE}: invalid number"
    )
    mail = await _failed_callback_notice(
        running,
        "Asso A",
        Channel.EMAIL,
        EMAIL,
        f"550 5.1.1 <{EMAIL}>: Recipient address rejected",
    )
    theirs = await _failed_callback_notice(
        running, "Asso B", Channel.SMS, "+33698765432", "timeout"
    )
    coordinator = await make_account(running, "nadia@example.org", Role.COORDINATOR)
    await login(http, running, coordinator)

    async with http.get(running.url("/tableau")) as resp:
        assert 'href="/envois-en-echec"' in await resp.text()  # in the coordinator's menu
    async with http.get(running.url("/envois-en-echec")) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert f"/envois-en-echec/{ours}/renvoyer" in page
    assert f"/envois-en-echec/{mail}/renvoyer" in page
    assert f"/envois-en-echec/{theirs}/renvoyer" not in page
    # Masked: the last two digits of a phone, the first letter and domain of an address.
    assert PHONE not in page and "12345678" not in page and "•• •• •• •• 78" in page
    assert EMAIL not in page and "josiane" not in page and "j•••@example.org" in page
    assert "Accusé de réception d&#39;une demande de rappel" in page
    assert '<th scope="col">Destinataire</th>' in page

    # Another association's message: not found, and left as it was.
    token = csrf_from(page)
    async with http.post(
        running.url(f"/envois-en-echec/{theirs}/renvoyer"),
        data={"csrf_token": token},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 404
    # Without the CSRF token: refused.
    async with http.post(
        running.url(f"/envois-en-echec/{ours}/renvoyer"), allow_redirects=False
    ) as resp:
        assert resp.status == 403

    async with http.post(
        running.url(f"/envois-en-echec/{ours}/renvoyer"),
        data={"csrf_token": token},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/envois-en-echec?renvoi=1"
    # The worker is woken (OutboxWritten) and sends it with the file backend.
    for _ in range(200):
        async with running.sessionmaker() as db:
            status = await db.scalar(select(OutboxMessage.status).where(OutboxMessage.id == ours))
        if status is OutboxStatus.SENT:
            break
        await asyncio.sleep(0.05)
    assert status is OutboxStatus.SENT
    async with running.sessionmaker() as db:
        other = await db.get_one(OutboxMessage, theirs)
    assert other.status is OutboxStatus.FAILED

    async with http.get(running.url("/envois-en-echec?renvoi=1")) as resp:
        page = await resp.text()
    assert "Le message repart" in page
    assert f"/envois-en-echec/{ours}/renvoyer" not in page


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_volunteers_do_not_reach_the_page(
    running: Running, http: aiohttp.ClientSession
) -> None:
    volunteer = await make_account(running, "camille@example.org")
    await login(http, running, volunteer)
    async with http.get(running.url("/envois-en-echec")) as resp:
        assert resp.status == 403


async def test_the_owner_is_read_from_the_key_in_sql(running: Running) -> None:
    """On both databases: a call-back's message belongs to its association, and a retry of
    another association's message changes nothing."""
    ours = await _failed_callback_notice(running, "Asso A", Channel.SMS, PHONE, "x")
    async with running.sessionmaker.begin() as db:
        a = await accounts.get_or_create_association(db, "Asso A")
        b = await accounts.get_or_create_association(db, "Asso B")
        assert [n.id for n in await failures.list_failed(db, a.id)] == [ours]
        assert await failures.list_failed(db, b.id) == []
        assert not await failures.retry(db, b.id, ours, utcnow())
        assert await failures.retry(db, a.id, ours, utcnow())
        message = await db.get_one(OutboxMessage, ours, populate_existing=True)
    assert (message.status, message.attempts) == (OutboxStatus.PENDING, 0)


def test_masks_keep_too_little_to_reach_anyone() -> None:
    assert failures.mask_recipient("sms", "+262692123456") == "•• •• •• •• 56"
    assert failures.mask_recipient("email", "a.b@asso.fr") == "a•••@asso.fr"
    assert "0612345678" not in failures.mask_text("refused 0612345678 today")
    assert failures.mask_text("550 <x.y@z.org> rejected") == "550 <•••@z.org> rejected"
    assert failures.kind_label("appointment:abc:reminder:1440:x:sms") == "Rappel de rendez-vous"
    assert failures.kind_label("sheet:abc:email") == "Lien vers la fiche navette"
