"""HTTP behaviour of the real app: health, login, CSRF, join by link/code, access rules."""

from __future__ import annotations

import html

import aiohttp
from sqlalchemy import select

from server import assist
from server.store.models import AssistanceSession, LoginSession, StatEvent
from server.tokens import grouped_code
from tests.conftest import (
    Account,
    Running,
    browser_session,
    create_assistance,
    csrf_from,
    entered_room,
    login,
    make_account,
)


async def test_healthz_and_readyz_answer_json(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(running.url("/healthz")) as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
    async with http.get(running.url("/readyz")) as resp:
        assert resp.status == 200
        assert (await resp.json())["database"] == "ok"


async def test_pages_carry_strict_security_headers(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(running.url("/code")) as resp:
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_login_sets_httponly_lax_cookie_and_logout_closes_session(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    async with http.get(running.url("/login")) as resp:
        token = csrf_from(await resp.text())
    async with http.post(
        running.url("/login"),
        data={"csrf_token": token, "email": volunteer.email, "password": volunteer.password},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        cookie = resp.headers.getall("Set-Cookie")
        session_cookie = next(c for c in cookie if c.startswith("vp_session="))
        assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie
        assert "Secure" not in session_cookie  # http BASE_URL in tests
    async with http.get(running.url("/tableau"), allow_redirects=False) as resp:
        assert resp.status == 200
        page = await resp.text()
    async with http.post(
        running.url("/logout"), data={"csrf_token": csrf_from(page)}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
    async with running.sessionmaker() as db:
        assert (await db.scalars(select(LoginSession))).all() == []
    async with http.get(running.url("/tableau"), allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"].startswith("/login")


async def test_wrong_password_is_refused_in_french(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    async with http.get(running.url("/login")) as resp:
        token = csrf_from(await resp.text())
    async with http.post(
        running.url("/login"),
        data={"csrf_token": token, "email": volunteer.email, "password": "wrong password!"},
    ) as resp:
        assert resp.status == 401
        assert "Adresse e-mail ou mot de passe incorrect." in html.unescape(await resp.text())


async def test_login_is_rate_limited_per_account(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    async with http.get(running.url("/login")) as resp:
        token = csrf_from(await resp.text())
    statuses = []
    for _ in range(7):
        async with http.post(
            running.url("/login"),
            data={"csrf_token": token, "email": volunteer.email, "password": "nope nope nope"},
        ) as resp:
            statuses.append(resp.status)
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429, 429]
    # Even the right password waits for the window to pass.
    async with http.post(
        running.url("/login"),
        data={"csrf_token": token, "email": volunteer.email, "password": volunteer.password},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 429


async def test_form_without_csrf_token_is_refused(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    async with http.post(running.url("/assistance"), data={}, allow_redirects=False) as resp:
        assert resp.status == 403
        assert "Le formulaire a expiré" in html.unescape(await resp.text())
    async with running.sessionmaker() as db:
        assert (await db.scalars(select(AssistanceSession))).all() == []


async def test_new_assistance_shows_link_code_and_qr(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)
    async with http.get(running.url(f"/assistance/{session_id}")) as resp:
        assert resp.status == 200
        page = await resp.text()
    async with running.sessionmaker() as db:
        session = await db.get_one(AssistanceSession, session_id)
    link = assist.link_for(running.settings, session)
    code = assist.current_code(running.settings, session)
    assert code is not None and len(code) == running.settings.code_digits and code.isdigit()
    code = grouped_code(code)  # the page shows it in groups of four
    assert link in page and code in page and "<svg" in page
    token = link.rsplit("/", 1)[1]
    assert len(token) >= 22  # ≥ 128 bits, base64url
    assert session.join_token_hash != token and token not in session.join_token_hash
    async with running.sessionmaker() as db:
        kinds = (await db.scalars(select(StatEvent.kind))).all()
    assert kinds == ["session_created"]


async def test_join_link_enters_room_and_hides_token(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)
    async with running.sessionmaker() as db:
        link = assist.link_for(running.settings, await db.get_one(AssistanceSession, session_id))
    beneficiary = await browser_session()
    try:
        path = link.removeprefix(running.settings.base_url)
        async with beneficiary.get(running.url(path), allow_redirects=False) as resp:
            await entered_room(resp)
            assert resp.headers["Referrer-Policy"] == "no-referrer"
        async with beneficiary.get(running.url("/b")) as resp:
            assert resp.status == 200
            assert "La personne verra votre écran. Vous pouvez arrêter à tout moment." in (
                html.unescape(await resp.text())
            )
    finally:
        await beneficiary.close()


async def test_wrong_token_and_wrong_code_get_the_same_neutral_french_page(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(running.url("/j/not-a-real-token-aaaaaaaaaaaaaaaa")) as resp:
        assert resp.status == 404
        assert "Ce lien ne marche pas ou plus" in html.unescape(await resp.text())
    async with http.get(running.url("/code")) as resp:
        token = csrf_from(await resp.text())
    async with http.post(
        running.url("/code"), data={"csrf_token": token, "code": "12345678"}
    ) as resp:
        assert resp.status == 400
        assert "Ce code ne marche pas" in html.unescape(await resp.text())


async def test_code_enters_room(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)
    async with running.sessionmaker() as db:
        code = assist.current_code(
            running.settings, await db.get_one(AssistanceSession, session_id)
        )
    beneficiary = await browser_session()
    try:
        async with beneficiary.get(running.url("/code")) as resp:
            token = csrf_from(await resp.text())
        async with beneficiary.post(
            running.url("/code"),
            data={"csrf_token": token, "code": f"{code}"},
            allow_redirects=False,
        ) as resp:
            await entered_room(resp)
        async with beneficiary.get(running.url("/b")) as resp:
            assert resp.status == 200
    finally:
        await beneficiary.close()


async def test_code_guessing_is_limited_per_ip(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(running.url("/code")) as resp:
        token = csrf_from(await resp.text())
    statuses = []
    for attempt in range(12):
        async with http.post(
            running.url("/code"), data={"csrf_token": token, "code": f"{attempt:08d}"}
        ) as resp:
            statuses.append(resp.status)
    assert statuses[:10] == [400] * 10
    assert statuses[10:] == [429, 429]


async def test_expired_code_no_longer_works(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    from datetime import timedelta

    from server.store.models import utcnow

    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)
    async with running.sessionmaker.begin() as db:
        session = await db.get_one(AssistanceSession, session_id)
        code = assist.current_code(running.settings, session)
        session.code_expires_at = utcnow() - timedelta(seconds=1)
    async with http.get(running.url("/code")) as resp:
        token = csrf_from(await resp.text())
    async with http.post(running.url("/code"), data={"csrf_token": token, "code": code}) as resp:
        assert resp.status == 400


async def test_beneficiary_room_without_pass_is_refused(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(running.url("/b")) as resp:
        assert resp.status == 404
    http.cookie_jar.update_cookies({"vp_benef": "forged.value.here"})
    async with http.get(running.url("/b")) as resp:
        assert resp.status == 404


async def test_volunteer_cannot_open_another_volunteers_session(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)
    other = await make_account(running, "intrus@example.org")
    intruder = await browser_session()
    try:
        await login(intruder, running, other)
        async with intruder.get(running.url(f"/assistance/{session_id}")) as resp:
            assert resp.status == 404
        async with intruder.get(running.url(f"/api/ice-servers?session={session_id}")) as resp:
            assert resp.status == 403
    finally:
        await intruder.close()


async def test_ice_servers_need_a_session_of_ones_own(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    async with http.get(running.url("/api/ice-servers")) as resp:
        assert resp.status == 403
        assert "error" in await resp.json()
    async with http.get(
        running.url("/api/ice-servers"), headers={"Authorization": "Bearer forged"}
    ) as resp:
        assert resp.status == 403
    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)
    async with http.get(running.url(f"/api/ice-servers?session={session_id}")) as resp:
        assert resp.status == 200
        servers = (await resp.json())["iceServers"]
    turn = next(s for s in servers if "credential" in s)
    expiry, sid = turn["username"].split(":")
    assert sid == session_id and int(expiry) > 0


async def test_coordinator_invites_and_deactivates_a_volunteer(
    running: Running, http: aiohttp.ClientSession, coordinator: Account
) -> None:
    await login(http, running, coordinator)
    async with http.get(running.url("/benevoles")) as resp:
        token = csrf_from(await resp.text())
    async with http.post(
        running.url("/benevoles"),
        data={"csrf_token": token, "name": "Lou", "email": "lou@example.org"},
    ) as resp:
        assert resp.status == 200
        page = await resp.text()
    import re

    link = re.search(r'value="(http://[^"]+/invitation/[^"]+)"', page)
    assert link
    invited = await browser_session()
    try:
        path = link.group(1).removeprefix(running.settings.base_url)
        async with invited.get(running.url(path)) as resp:
            form_token = csrf_from(await resp.text())
        async with invited.post(
            running.url(path),
            data={
                "csrf_token": form_token,
                "password": "a long password",
                "password_confirm": "a long password",
            },
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
        lou = Account(user=None, email="lou@example.org", password="a long password")  # type: ignore[arg-type]
        await login(invited, running, lou)
        async with invited.get(running.url("/benevoles"), allow_redirects=False) as resp:
            assert resp.status == 403  # volunteers don't manage volunteers
        # The invitation works once.
        async with invited.get(running.url(path)) as resp:
            assert resp.status == 404
        from server.store.models import User

        async with running.sessionmaker() as db:
            lou_id = await db.scalar(select(User.id).where(User.email == "lou@example.org"))
        async with http.post(
            running.url(f"/benevoles/{lou_id}/desactiver"),
            data={"csrf_token": token},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
        async with invited.get(running.url("/tableau"), allow_redirects=False) as resp:
            assert resp.status == 303  # logged out: the account is deactivated
    finally:
        await invited.close()


async def test_unknown_page_is_a_french_404(running: Running, http: aiohttp.ClientSession) -> None:
    async with http.get(running.url("/nulle-part")) as resp:
        assert resp.status == 404
        assert "Cette page n'existe pas." in html.unescape(await resp.text())


async def test_inviting_an_unknown_observer_shows_a_french_error(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)
    async with http.get(running.url(f"/assistance/{session_id}")) as resp:
        token = csrf_from(await resp.text())
    async with http.post(
        running.url(f"/assistance/{session_id}/observer"),
        data={"csrf_token": token, "email": "personne@example.org"},
    ) as resp:
        assert resp.status == 400
        assert "Aucun bénévole actif de votre association" in html.unescape(await resp.text())
    async with running.sessionmaker() as db:
        assert (await db.get_one(AssistanceSession, session_id)).observer_id is None


async def test_static_scripts_and_styles_are_served_gzipped(
    running: Running, http: aiohttp.ClientSession
) -> None:
    for path in ("/static/js/beneficiary.js", "/static/css/base.css"):
        async with http.get(
            running.url(path), headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        ) as resp:
            assert resp.status == 200
            assert resp.headers.get("Content-Encoding") == "gzip", path


async def test_static_modules_are_revalidated_so_versions_never_mix(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(running.url("/static/js/common.js")) as resp:
        assert resp.headers["Cache-Control"] == "no-cache"
        etag_or_date = resp.headers.get("ETag") or resp.headers["Last-Modified"]
    header = "If-None-Match" if etag_or_date.startswith(('"', "W/")) else "If-Modified-Since"
    conditional = {header: etag_or_date}
    async with http.get(running.url("/static/js/common.js"), headers=conditional) as resp:
        assert resp.status == 304
