"""Account access against the real server (issue 11, defects 5-7): every loss of access closes
the account's sockets on `/assist` and `/queue` and pushes re-check the login behind a socket;
logins lock on failures only, per account and client, and hash off the event loop under a cap.
Real HTTP clients, real Socket.IO clients, the real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import html
import inspect
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import aiohttp
import pytest
from sqlalchemy import delete, select, update

from server import ratelimit
from server.dropin import places
from server.metrics import REGISTRY
from server.ratelimit import RATELIMIT_KEY
from server.runtime import BOARD_KEY
from server.settings import Settings
from server.store.models import LoginSession, Role, User, utcnow
from signaling.assist import LOGIN_RECHECK_SECONDS
from tests.conftest import (
    PASSWORD,
    Account,
    Running,
    browser_session,
    create_assistance,
    csrf_from,
    login,
    make_account,
)
from tests.peers import (
    PeerSet,
    SignalPeer,
    connect_beneficiary,
    connect_peer,
    connect_volunteer,
    login_cookie,
    refusal,
)
from tests.test_dropin import add_motif, open_all_week, until, waiting_peer

QUEUE = "/queue"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Behind a trusted proxy: each test client chooses its address with X-Forwarded-For."""
    return settings.model_copy(update={"trust_proxy": True})


@dataclass
class Desk:
    """A logged-in volunteer's browser with the queue page and an assistance room open."""

    http: aiohttp.ClientSession
    queue: SignalPeer
    room: SignalPeer
    session_id: str


async def open_desk(running: Running, account: Account, peers: PeerSet) -> Desk:
    """Log in, open the queue page's socket and a new assistance's room socket."""
    http = await browser_session()
    await login(http, running, account)
    queue = peers.add(
        await connect_peer(
            running, cookie=login_cookie(http, running), welcome=False, namespace=QUEUE
        )
    )
    await queue.expect("queue")
    session_id = await create_assistance(http, running)
    room = peers.add(await connect_volunteer(running, http, session_id))
    return Desk(http, queue, room, session_id)


async def join_from(
    running: Running, http: aiohttp.ClientSession, address: str, **fields: str
) -> None:
    """Join the drop-in queue through the /aide form from ``address``."""
    async with http.get(running.url("/aide")) as resp:
        token = csrf_from(await resp.text())
    data = {"csrf_token": token, "motif": "", "first_name": "", "postal_code": "", **fields}
    async with http.post(
        running.url("/aide"),
        data=data,
        headers={"X-Forwarded-For": address},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303, await resp.text()


async def eventually(check: Callable[[], bool | Awaitable[bool]]) -> None:
    """Wait until a server-side effect the test cannot await is visible (5 s at most)."""
    for _ in range(100):
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("never happened")


async def coordinator_posts(running: Running, coordinator: Account, path: str, **data: str) -> int:
    """A coordinator sends one form of the /benevoles page; the HTTP status."""
    http = await browser_session()
    try:
        await login(http, running, coordinator)
        async with http.get(running.url("/benevoles")) as resp:
            token = csrf_from(await resp.text())
        async with http.post(
            running.url(path), data={"csrf_token": token, **data}, allow_redirects=False
        ) as resp:
            return resp.status
    finally:
        await http.close()


async def assert_cut_off(desk: Desk, reason: str) -> None:
    """Both sockets of the desk were told and disconnected by the server."""
    assert await desk.queue.expect("revoked") == {"reason": reason}
    await desk.queue.expect_disconnected()
    assert await desk.room.expect("ended") == {"reason": "revoked"}
    await desk.room.expect_disconnected()


# -- Defect 5: sockets outlive access --------------------------------------------------------------


async def test_deactivation_disconnects_queue_and_room_and_the_estimate_stops_counting_them(
    running: Running, volunteer: Account, coordinator: Account, peers: PeerSet
) -> None:
    colleague = await make_account(running, "sami@example.org")
    for account in (volunteer, colleague):
        await open_all_week(running, account)
    motif = await add_motif(running, volunteer, "Impôts")
    colleague_http = await browser_session()
    await login(colleague_http, running, colleague)
    other = peers.add(
        await connect_peer(
            running, cookie=login_cookie(colleague_http, running), welcome=False, namespace=QUEUE
        )
    )
    desk = await open_desk(running, volunteer, peers)
    first, second = await browser_session(), await browser_session()
    handling = running.settings.queue_handling_minutes
    try:
        await join_from(running, first, "192.0.2.1", first_name="Fatou", motif=str(motif))
        await join_from(running, second, "192.0.2.2", first_name="Ali", motif=str(motif))
        page = peers.add(await waiting_peer(running, second))
        two = places.estimate_minutes(2, 2, handling)
        await until(page, "position", lambda p: p["estimate_minutes"] == two)
        association_id = volunteer.user.association_id
        presence = running.app[BOARD_KEY].presence
        assert len(await presence.volunteers(association_id)) == 2

        status = await coordinator_posts(
            running, coordinator, f"/benevoles/{volunteer.user.id}/desactiver"
        )
        assert status == 303
        await assert_cut_off(desk, "deactivated")

        # The colleague who stays sees them gone; the waiting page's estimate counts one.
        pushed = await until(other, "queue", lambda q: len(q["volunteers"]) == 1)
        assert pushed["volunteers"] == [{"id": colleague.user.id, "name": "sami"}]
        assert len(await presence.volunteers(association_id)) == 1
        one = places.estimate_minutes(2, 1, handling)
        assert one > two
        await until(page, "position", lambda p: p["estimate_minutes"] == one)
        # A newcomer's first name and motif reach the colleague only.
        newcomer = await browser_session()
        try:
            await join_from(running, newcomer, "192.0.2.3", first_name="Karim", motif=str(motif))
        finally:
            await newcomer.close()
        await until(other, "queue", lambda q: q["total"] == 3)
        assert "Karim" not in repr(desk.queue.received)
        # And the deactivated account cannot come back on either namespace.
        cookie = login_cookie(desk.http, running)
        assert (await refusal(running, cookie=cookie, namespace=QUEUE))["code"] == "unauthorized"
        refused = await refusal(running, auth={"session_id": desk.session_id}, cookie=cookie)
        assert refused["code"] == "unauthorized"
    finally:
        for http in (first, second, desk.http, colleague_http):
            await http.close()


async def test_logout_disconnects_the_sockets_of_that_login_and_keeps_the_other_browser(
    running: Running, volunteer: Account, peers: PeerSet
) -> None:
    await open_all_week(running, volunteer)
    desk = await open_desk(running, volunteer, peers)
    phone = await browser_session()
    try:
        await login(phone, running, volunteer)
        on_phone = peers.add(
            await connect_peer(
                running, cookie=login_cookie(phone, running), welcome=False, namespace=QUEUE
            )
        )
        await on_phone.expect("queue")
        async with desk.http.get(running.url("/tableau")) as resp:
            token = csrf_from(await resp.text())
        async with desk.http.post(
            running.url("/logout"), data={"csrf_token": token}, allow_redirects=False
        ) as resp:
            assert resp.status == 303
        await assert_cut_off(desk, "logout")
        # The phone's login is another login session: it keeps its queue page.
        person = await browser_session()
        try:
            await join_from(running, person, "192.0.2.7", first_name="Fatou")
        finally:
            await person.close()
        pushed = await until(on_phone, "queue", lambda q: q["total"] == 1)
        assert pushed["waiting"][0]["first_name"] == "Fatou"
        assert on_phone.client.connected
    finally:
        await phone.close()
        await desk.http.close()


async def test_a_new_role_disconnects_every_socket_and_ends_every_login_of_the_account(
    running: Running, volunteer: Account, coordinator: Account, peers: PeerSet
) -> None:
    await open_all_week(running, volunteer)
    desk = await open_desk(running, volunteer, peers)
    try:
        status = await coordinator_posts(
            running, coordinator, f"/benevoles/{volunteer.user.id}/role", role="coordinator"
        )
        assert status == 303
        await assert_cut_off(desk, "role_changed")
        async with running.sessionmaker() as db:
            user = await db.get_one(User, volunteer.user.id)
            logins = (
                await db.scalars(select(LoginSession).where(LoginSession.user_id == user.id))
            ).all()
        assert user.role is Role.COORDINATOR and logins == []
        async with desk.http.get(running.url("/tableau"), allow_redirects=False) as resp:
            assert resp.status == 303  # back to the login page
    finally:
        await desk.http.close()


async def test_a_new_password_disconnects_every_socket_and_logs_out_the_other_browsers(
    running: Running, volunteer: Account, peers: PeerSet
) -> None:
    await open_all_week(running, volunteer)
    desk = await open_desk(running, volunteer, peers)
    phone = await browser_session()
    try:
        await login(phone, running, volunteer)
        async with desk.http.get(running.url("/mot-de-passe")) as resp:
            token = csrf_from(await resp.text())
        new = "a brand new passphrase"
        form = {"csrf_token": token, "current": "wrong one!!", "password": new}
        async with desk.http.post(
            running.url("/mot-de-passe"), data={**form, "password_confirm": new}
        ) as resp:
            assert resp.status == 400
            assert "actuel n'est pas le bon" in html.unescape(await resp.text())
        await desk.queue.expect_nothing("revoked")
        form["current"] = PASSWORD
        async with desk.http.post(
            running.url("/mot-de-passe"), data={**form, "password_confirm": new}
        ) as resp:
            assert resp.status == 200
            assert "mot de passe est changé" in html.unescape(await resp.text())
        await assert_cut_off(desk, "password_changed")
        # This browser got a new login; the phone's is gone; the new password logs in.
        async with desk.http.get(running.url("/tableau"), allow_redirects=False) as resp:
            assert resp.status == 200
        async with phone.get(running.url("/tableau"), allow_redirects=False) as resp:
            assert resp.status == 303
        renewed = Account(volunteer.user, volunteer.email, new)
        await login(phone, running, renewed)
    finally:
        await phone.close()
        await desk.http.close()


async def test_a_coordinator_cannot_change_roles_outside_their_association_or_to_referrer(
    running: Running, volunteer: Account, coordinator: Account
) -> None:
    stranger = await make_account(running, "x@example.org", association="Asso B")
    path = f"/benevoles/{stranger.user.id}/role"
    assert await coordinator_posts(running, coordinator, path, role="coordinator") == 404
    path = f"/benevoles/{volunteer.user.id}/role"
    assert await coordinator_posts(running, coordinator, path, role="referrer") == 400
    assert await coordinator_posts(running, coordinator, path, role="boss") == 400
    async with running.sessionmaker() as db:
        roles = {u.email: u.role for u in await db.scalars(select(User))}
    assert roles[stranger.email] is Role.VOLUNTEER and roles[volunteer.email] is Role.VOLUNTEER


async def test_a_queue_push_rechecks_the_login_when_the_revocation_event_was_lost(
    running: Running, volunteer: Account, peers: PeerSet
) -> None:
    """The login session disappears without any event (a lost event, another node, an
    expiry): the next push does not carry the newcomer's name to that socket."""
    await open_all_week(running, volunteer)
    desk = await open_desk(running, volunteer, peers)
    try:
        async with running.sessionmaker.begin() as db:  # no dispatcher: nothing is published
            await db.execute(
                update(LoginSession)
                .where(LoginSession.user_id == volunteer.user.id)
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
        person = await browser_session()
        try:
            await join_from(running, person, "192.0.2.8", first_name="Fatou")
        finally:
            await person.close()
        assert await desk.queue.expect("revoked") == {"reason": "revoked"}
        await desk.queue.expect_disconnected()
        assert "Fatou" not in repr(desk.queue.received)
        presence = running.app[BOARD_KEY].presence
        association_id = volunteer.user.association_id

        async def nobody() -> bool:
            return not await presence.volunteers(association_id)

        await eventually(nobody)
    finally:
        await desk.http.close()


async def test_a_room_rechecks_the_login_before_telling_a_volunteer_who_joined(
    running: Running, volunteer: Account, peers: PeerSet
) -> None:
    desk = await open_desk(running, volunteer, peers)
    try:
        async with running.sessionmaker.begin() as db:  # deactivated behind our back
            await db.execute(
                update(User).where(User.id == volunteer.user.id).values(is_active=False)
            )
        beneficiary = peers.add(await connect_beneficiary(running, desk.session_id, "Josette"))
        assert await desk.room.expect("ended") == {"reason": "revoked"}
        await desk.room.expect_disconnected()
        assert "Josette" not in repr(desk.room.received)
        assert beneficiary.client.connected
    finally:
        await desk.http.close()


async def test_a_room_socket_whose_login_was_closed_behind_its_back_is_retired_within_seconds(
    running: Running, volunteer: Account, peers: PeerSet
) -> None:
    """No AccountRevoked (a lost event, a login closed in the database by hand): the node's
    background sweep re-reads every login behind its volunteer sockets every 5 s, so the
    volunteer's room socket is retired without anything being relayed through it."""
    desk = await open_desk(running, volunteer, peers)
    try:
        beneficiary = peers.add(await connect_beneficiary(running, desk.session_id))
        await desk.room.expect("peer-joined")
        async with running.sessionmaker.begin() as db:
            await db.execute(
                update(User).where(User.id == volunteer.user.id).values(is_active=False)
            )
        assert await desk.room.expect("ended", LOGIN_RECHECK_SECONDS + 3) == {"reason": "revoked"}
        await desk.room.expect_disconnected()
        assert (await beneficiary.expect("peer-left"))["reason"] == "left"
    finally:
        await desk.http.close()


async def test_queue_actions_recheck_the_login(
    running: Running, volunteer: Account, peers: PeerSet
) -> None:
    await open_all_week(running, volunteer)
    desk = await open_desk(running, volunteer, peers)
    try:
        async with running.sessionmaker.begin() as db:
            await db.execute(delete(LoginSession).where(LoginSession.user_id == volunteer.user.id))
        answer = await desk.queue.call("take_next", {})
        assert answer["ok"] is False and answer["code"] == "forbidden"
        await desk.queue.expect_disconnected()
    finally:
        await desk.http.close()


# -- Defect 7: login lockout by a stranger ---------------------------------------------------------


async def post_login(
    http: aiohttp.ClientSession, running: Running, email: str, password: str, address: str
) -> aiohttp.ClientResponse:
    """One login attempt from ``address`` (through the trusted proxy header)."""
    async with http.get(running.url("/login")) as resp:
        token = csrf_from(await resp.text())
    async with http.post(
        running.url("/login"),
        data={"csrf_token": token, "email": email, "password": password},
        headers={"X-Forwarded-For": address},
        allow_redirects=False,
    ) as resp:
        await resp.read()
        return resp


async def test_successful_logins_never_lock_the_account(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    statuses = [
        (await post_login(http, running, volunteer.email, PASSWORD, "198.51.100.7")).status
        for _ in range(8)
    ]
    assert statuses == [303] * 8


async def test_a_strangers_failures_never_lock_the_owner_out_from_elsewhere(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    for _ in range(5):
        wrong = await post_login(http, running, volunteer.email, "not the password", "203.0.113.9")
        assert wrong.status == 401
    locked = await post_login(http, running, volunteer.email, PASSWORD, "203.0.113.9")
    assert locked.status == 429
    owner = await post_login(http, running, volunteer.email, PASSWORD, "2001:db8:1::5")
    assert owner.status == 303


async def test_failures_lock_the_account_from_that_client_with_a_growing_wait(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    address = "192.0.2.44"
    for _ in range(5):
        assert (
            await post_login(http, running, volunteer.email, "nope nope", address)
        ).status == 401
    locked = await post_login(http, running, volunteer.email, "nope nope", address)
    assert locked.status == 429
    wait = int(locked.headers["Retry-After"])
    assert 240 <= wait <= 301  # the 5-minute tier, not a flat minute
    # The next tiers are there: 10 failures an hour, 20 a day, for this account from here.
    tiers = [rule.item for rule in ratelimit.LOGIN_FAILURES_PER_ACCOUNT]
    assert [(t.amount, t.get_expiry()) for t in tiers] == [(5, 300), (10, 3600), (20, 86400)]


async def test_a_success_forgets_the_failures_of_that_client(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    address = "192.0.2.45"
    for _round in range(3):
        for _ in range(4):
            wrong = await post_login(http, running, volunteer.email, "typo typo", address)
            assert wrong.status == 401
        assert (await post_login(http, running, volunteer.email, PASSWORD, address)).status == 303


async def test_credential_stuffing_from_one_client_is_capped_across_accounts(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    address = "2001:db8:77::1"
    limiter = running.app[RATELIMIT_KEY]
    for index in range(30):
        if index == 20:  # a minute passes: the per-minute cap of all attempts is not the point
            await limiter.forget(ratelimit.LOGIN_PER_IP, "2001:db8:77::/64")
        resp = await post_login(http, running, f"victim{index}@example.org", "123456", address)
        assert resp.status == 401, index
    await limiter.forget(ratelimit.LOGIN_PER_IP, "2001:db8:77::/64")
    # Another address of the same /64 is the same client.
    stuffed = await post_login(http, running, volunteer.email, PASSWORD, "2001:db8:77::2")
    assert stuffed.status == 429
    assert "Trop d" in html.unescape(await stuffed.text())
    elsewhere = await post_login(http, running, volunteer.email, PASSWORD, "2001:db8:78::1")
    assert elsewhere.status == 303


# -- Defect 6: argon2 off the event loop, logins capped --------------------------------------------


def _hash_seconds() -> float:
    return REGISTRY.get_sample_value("permanence_password_hash_seconds_total") or 0.0


async def test_passwords_are_verified_on_the_pool_threads_for_known_and_unknown_emails(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    before = _hash_seconds()
    unknown = await post_login(http, running, "nobody@example.org", PASSWORD, "192.0.2.50")
    assert unknown.status == 401
    after_unknown = _hash_seconds()
    assert after_unknown > before  # the unknown e-mail costs a hash too
    assert (await post_login(http, running, volunteer.email, PASSWORD, "192.0.2.50")).status == 303
    assert _hash_seconds() > after_unknown
    threads = [t.name for t in threading.enumerate() if t.name.startswith("argon2")]
    assert len(threads) == running.settings.password_hash_threads


async def test_over_the_login_cap_the_page_answers_503_in_french_and_computes_nothing(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    from server.runtime import PASSWORDS_KEY

    passwords = running.app[PASSWORDS_KEY]
    before = _hash_seconds()
    slots = [passwords.login_slot() for _ in range(passwords.max_logins)]
    try:
        assert all([slot.__enter__() for slot in slots])
        busy = await post_login(http, running, volunteer.email, PASSWORD, "192.0.2.60")
        assert busy.status == 503
        assert busy.headers["Retry-After"] == "5"
        assert "Réessayez dans quelques secondes" in html.unescape(await busy.text())
        assert _hash_seconds() == before
    finally:
        for slot in slots:
            slot.__exit__(None, None, None)
    assert (await post_login(http, running, volunteer.email, PASSWORD, "192.0.2.60")).status == 303
