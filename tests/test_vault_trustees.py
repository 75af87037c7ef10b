"""The personne de confiance on the real server, both databases: the browser's part done in
Python with `cryptography` (RSA-OAEP-2048/SHA-256, as WebCrypto does it, DESIGN.md)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from sqlalchemy import func, select, update

from server.store.models import (
    Role,
    TrusteeCode,
    TrusteeKey,
    Vault,
    VaultEvent,
    VaultGrant,
    VaultRecoveryRequest,
    utcnow,
)
from server.vault import trustees
from server.vault.access import b64u_decode, b64u_encode, capability_hash
from tests.conftest import Account, Running, csrf_from, login, make_account

OAEP = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def new_rsa(bits: int = 2048) -> rsa.RSAPrivateKey:
    """A key pair as the browser makes it (e = 65537)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def spki(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    """The public key as WebCrypto exports it: SPKI DER, b64u."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b64u_encode(der)


def seal(public_key_b64u: str, data: bytes) -> str:
    """RSA-OAEP-encrypt for a public key given as SPKI b64u."""
    der = b64u_decode(public_key_b64u, 2000)
    assert der is not None
    key = serialization.load_der_public_key(der)
    assert isinstance(key, rsa.RSAPublicKey)
    return b64u_encode(key.encrypt(data, OAEP))


def unseal(key: rsa.RSAPrivateKey, sealed: str) -> bytes:
    data = b64u_decode(sealed, 2000)
    assert data is not None
    return key.decrypt(data, OAEP)


@dataclass
class Person:
    """A vault and the secrets its device holds: the access capability A and the vault key K."""

    vault_id: str
    access: bytes
    key: bytes

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": "Vault " + b64u_encode(self.access)}


async def make_vault(running: Running) -> Person:
    """A vault row as creation leaves it (the vault API is tested on its own)."""
    access = secrets.token_bytes(32)
    vault = Vault(
        access_hash=capability_hash(access),
        recovery_lookup_hash=capability_hash(secrets.token_bytes(32)),
        recovery_box=b64u_encode(secrets.token_bytes(60)),
        share_facts=False,
    )
    async with running.sessionmaker.begin() as db:
        db.add(vault)
        await db.flush()
        vault_id = vault.id
    return Person(vault_id, access, secrets.token_bytes(32))


class Trustee:
    """A staff account's browser on the trustee page: its key pair and its CSRF token."""

    def __init__(self, http: aiohttp.ClientSession, running: Running, account: Account) -> None:
        self.http = http
        self.running = running
        self.account = account
        self.key = new_rsa()
        self.csrf = ""

    async def open(self) -> str:
        await login(self.http, self.running, self.account)
        async with self.http.get(self.running.url("/coffre/confiance")) as resp:
            assert resp.status == 200
            html = await resp.text()
        self.csrf = csrf_from(html)
        return html

    async def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        async with self.http.post(
            self.running.url(path),
            json=body if body is not None else {},
            headers={"X-CSRF-Token": self.csrf},
        ) as resp:
            assert resp.headers.get("Cache-Control") == "no-store"
            return resp.status, await resp.json()

    async def register(self) -> dict[str, Any]:
        status, data = await self.post("/coffre/confiance/cle", {"public_key": spki(self.key)})
        assert status == 200, data
        return dict(data)

    async def code(self) -> str:
        status, data = await self.post("/coffre/confiance/code")
        assert status == 201, data
        return str(data["code"])

    async def pairing(self, code: str) -> tuple[int, Any]:
        async with self.http.get(
            self.running.url(f"/coffre/confiance/demandes/{code.replace(' ', '')}")
        ) as resp:
            return resp.status, await resp.json()

    async def answer(self, request: dict[str, Any], grant: dict[str, Any]) -> tuple[int, Any]:
        vault_key = unseal(self.key, grant["wrapped_key"])
        wrapped = seal(request["public_key"], vault_key)
        return await self.post(
            f"/coffre/confiance/demandes/{request['id']}",
            {"grant_id": grant["id"], "wrapped_key": wrapped},
        )


async def api(
    http: aiohttp.ClientSession,
    running: Running,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    async with http.request(
        method, running.url("/coffre/api" + path), headers=headers or {}, json=body
    ) as resp:
        assert resp.headers.get("Cache-Control") == "no-store"
        if resp.status == 204:
            return 204, None
        return resp.status, await resp.json()


async def name_trustee(
    http: aiohttp.ClientSession, running: Running, person: Person, code: str, label: str
) -> dict[str, Any]:
    """The person types the code, sees whom it names, and confirms."""
    status, info = await api(http, running, "GET", f"/trustee-key?code={code}", headers=person.auth)
    assert status == 200, info
    status, data = await api(
        http,
        running,
        "POST",
        "/trustees",
        headers=person.auth,
        body={
            "trustee_code": code,
            "wrapped_key": seal(info["public_key"], person.key),
            "label": seal(info["public_key"], label.encode()),
        },
    )
    assert status == 201, data
    return {"info": info, "trustee": data["trustee"]}


async def new_device(http: aiohttp.ClientSession, running: Running) -> tuple[Any, Any]:
    device = new_rsa()
    status, data = await api(
        http, running, "POST", "/recovery-requests", body={"public_key": spki(device)}
    )
    assert status == 201, data
    return device, data


async def poll(http: aiohttp.ClientSession, running: Running, request: Any) -> tuple[int, Any]:
    return await api(
        http,
        running,
        "GET",
        f"/recovery-requests/{request['id']}",
        headers={"Authorization": "Recovery " + request["poll_token"]},
    )


async def events(running: Running, person: Person) -> list[tuple[str, str | None]]:
    async with running.sessionmaker() as db:
        rows = await db.execute(
            select(VaultEvent.kind, VaultEvent.trustee_name)
            .where(VaultEvent.vault_id == person.vault_id)
            .order_by(VaultEvent.id)
        )
        return [(kind, name) for kind, name in rows]


@pytest.fixture
async def trustee(running: Running, http: aiohttp.ClientSession, volunteer: Account) -> Trustee:
    helper = Trustee(http, running, volunteer)
    await helper.open()
    await helper.register()
    return helper


async def other_browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_recovery_through_the_trustee_gives_the_new_device_the_same_vault_key(
    running: Running, trustee: Trustee
) -> None:
    code = await trustee.code()
    assert trustees.normalise_trustee_code(code) is not None and len(code) == 9  # "7K2M-9QXA"
    person = await make_vault(running)
    async with await other_browser() as phone:
        named = await name_trustee(phone, running, person, code.lower(), "Mme Diallo, CAF")
        assert named["info"]["name"] == "camille"
        assert named["info"]["association"] == "Asso A"
        assert (
            named["info"]["fingerprint"]
            == hashlib.sha256(b64u_decode(spki(trustee.key), 1000) or b"").hexdigest()
        )
        assert named["trustee"]["revoked_at"] is None
        # The code is used up.
        status, _data = await api(
            phone, running, "GET", f"/trustee-key?code={code}", headers=person.auth
        )
        assert status == 404
        device, request = await new_device(phone, running)
        assert request["pairing_code"][3] == " " and len(request["pairing_code"]) == 7
        assert await poll(phone, running, request) == (200, {"status": "pending"})

    status, found = await trustee.pairing(request["pairing_code"])
    assert status == 200, found
    device_spki = b64u_decode(spki(device), 1000) or b""
    digest = hashlib.sha256(device_spki).digest()
    assert found["request"]["check"] == " ".join(f"{b % 100:02d}" for b in digest[:3])
    assert [g["id"] for g in found["grants"]] == [named["trustee"]["id"]]
    grant = found["grants"][0]
    assert unseal(trustee.key, grant["label"]) == b"Mme Diallo, CAF"
    status, done = await trustee.answer(found["request"], grant)
    assert (status, done) == (200, {"ok": True})
    # Answered: a second answer is refused, the pairing code is no longer live.
    assert (await trustee.answer(found["request"], grant))[0] == 404
    assert (await trustee.pairing(request["pairing_code"]))[0] == 404

    async with await other_browser() as phone:
        status, ready = await poll(phone, running, request)
        assert status == 200 and ready["status"] == "ready"
        assert unseal(device, ready["wrapped_key"]) == person.key
        # Given once: the request is gone.
        assert (await poll(phone, running, request))[0] == 404
    assert [kind for kind, _name in await events(running, person)] == [
        "trustee_added",
        "trustee_used",
    ]
    assert (await events(running, person))[1][1] == "camille (Asso A)"
    async with running.sessionmaker() as db:
        row = await db.get_one(VaultGrant, grant["id"])
        assert row.last_used_at is not None
        assert await db.scalar(select(func.count()).select_from(VaultRecoveryRequest)) == 0


async def test_a_revoked_grant_cannot_be_used_and_its_key_is_erased(
    running: Running, trustee: Trustee, http: aiohttp.ClientSession
) -> None:
    person = await make_vault(running)
    named = await name_trustee(http, running, person, await trustee.code(), "M. Martin")
    grant_id = named["trustee"]["id"]
    _device, request = await new_device(http, running)
    _status, found = await trustee.pairing(request["pairing_code"])
    grant = found["grants"][0]

    other = await make_vault(running)
    assert (await api(http, running, "DELETE", f"/trustees/{grant_id}", headers=other.auth))[
        0
    ] == 404  # not this vault's
    assert (await api(http, running, "DELETE", f"/trustees/{grant_id}", headers=person.auth)) == (
        204,
        None,
    )
    assert (await api(http, running, "DELETE", f"/trustees/{grant_id}", headers=person.auth)) == (
        204,
        None,
    )  # twice is fine
    status, refused = await trustee.answer(found["request"], grant)
    assert status == 403 and refused["error"]["code"] == "unknown_grant"
    assert refused["error"]["field"] == "grant_id"
    _status, again = await trustee.pairing(request["pairing_code"])
    assert again["grants"] == []
    async with running.sessionmaker() as db:
        row = await db.get_one(VaultGrant, grant_id)
        assert row.wrapped_key is None and row.label is None and row.revoked_at is not None
    assert [kind for kind, _name in await events(running, person)] == [
        "trustee_added",
        "trustee_revoked",
    ]


async def test_another_trustee_cannot_answer_with_someone_elses_grant(
    running: Running, trustee: Trustee, http: aiohttp.ClientSession
) -> None:
    person = await make_vault(running)
    named = await name_trustee(http, running, person, await trustee.code(), "Mme Diallo")
    other_account = await make_account(running, "intrus@example.org", Role.COORDINATOR, "Asso B")
    async with await other_browser() as other_http:
        intruder = Trustee(other_http, running, other_account)
        await intruder.open()
        await intruder.register()
        _device, request = await new_device(other_http, running)
        status, found = await intruder.pairing(request["pairing_code"])
        assert status == 200 and found["grants"] == []  # only its own grants are listed
        stolen = {"id": named["trustee"]["id"], "wrapped_key": seal(spki(intruder.key), b"x" * 32)}
        status, refused = await intruder.answer(found["request"], stolen)
        assert status == 403, refused
    async with running.sessionmaker() as db:
        row = await db.get_one(VaultRecoveryRequest, request["id"])
        assert row.answered_at is None and row.wrapped_key is None
    assert [kind for kind, _name in await events(running, person)] == ["trustee_added"]


async def test_a_new_trustee_key_replaces_the_old_one_and_its_grants(
    running: Running, trustee: Trustee, http: aiohttp.ClientSession
) -> None:
    person = await make_vault(running)
    await name_trustee(http, running, person, await trustee.code(), "Mme Diallo")
    unused_code = await trustee.code()
    first = await trustee.register()  # the same key again: nothing changes
    trustee.key = new_rsa()  # another browser, or the key was lost
    second = await trustee.register()
    assert second["fingerprint"] != first["fingerprint"]
    async with running.sessionmaker() as db:
        keys = list(await db.scalars(select(TrusteeKey).order_by(TrusteeKey.id)))
        assert len(keys) == 2 and keys[0].replaced_at is not None and keys[1].replaced_at is None
    status, _data = await api(
        http, running, "GET", f"/trustee-key?code={unused_code}", headers=person.auth
    )
    assert status == 404  # a code of the old key names nobody
    _device, request = await new_device(http, running)
    status, found = await trustee.pairing(request["pairing_code"])
    assert status == 200 and found["grants"] == []


async def test_expired_codes_and_requests_are_refused_then_purged(
    running: Running, trustee: Trustee, http: aiohttp.ClientSession
) -> None:
    person = await make_vault(running)
    code = await trustee.code()
    _device, request = await new_device(http, running)
    past = utcnow() - timedelta(seconds=1)
    async with running.sessionmaker.begin() as db:
        await db.execute(update(TrusteeCode).values(expires_at=past))
        await db.execute(update(VaultRecoveryRequest).values(expires_at=past))
    status, refused = await api(
        http, running, "GET", f"/trustee-key?code={code}", headers=person.auth
    )
    assert status == 404 and refused["error"]["field"] == "trustee_code"
    assert "Vérifiez" in refused["error"]["message"]
    assert (await trustee.pairing(request["pairing_code"]))[0] == 404
    # A second request still works (the first was not purged yet).
    _device2, request2 = await new_device(http, running)
    async with running.sessionmaker() as db:
        assert await trustees.count_expired(db, utcnow()) == (1, 1)
    async with running.sessionmaker.begin() as db:
        assert await trustees.purge_expired(db, utcnow()) == (1, 1)
    status, gone = await poll(http, running, request)
    assert status == 404, gone  # purged
    async with running.sessionmaker.begin() as db:
        await db.execute(update(VaultRecoveryRequest).values(expires_at=past))
    status, gone = await poll(http, running, request2)
    assert status == 410 and gone["error"]["code"] == "request_expired"


async def test_pairing_codes_are_unique_among_live_requests(running: Running) -> None:
    """An expired request gives its code up; a live one keeps it (the database refuses two)."""
    device = spki(new_rsa())
    now = utcnow()
    async with running.sessionmaker.begin() as db:
        made = [await trustees.create_request(db, running.settings, device, now) for _ in range(30)]
    assert len({m.pairing_code for m in made}) == 30
    assert len({m.request.pairing_code_hash for m in made}) == 30
    assert all(m.pairing_code not in m.request.pairing_code_hash for m in made)


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda: spki(new_rsa(1024)), id="rsa-1024"),
        pytest.param(lambda: spki(ec.generate_private_key(ec.SECP256R1())), id="ec-p256"),
        pytest.param(lambda: b64u_encode(b"not a key at all" * 10), id="garbage"),
        pytest.param(lambda: "!!!", id="not-b64u"),
        pytest.param(lambda: 42, id="not-a-string"),
    ],
)
async def test_bad_public_keys_are_refused(
    running: Running, trustee: Trustee, http: aiohttp.ClientSession, make_key: Any
) -> None:
    key = make_key()
    status, refused = await trustee.post("/coffre/confiance/cle", {"public_key": key})
    assert status == 400 and refused["error"]["code"] == "invalid_public_key"
    assert refused["error"]["field"] == "public_key"
    status, refused = await api(
        http, running, "POST", "/recovery-requests", body={"public_key": key}
    )
    assert status == 400 and refused["error"]["code"] == "invalid_public_key"
    async with running.sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(VaultRecoveryRequest)) == 0
        assert await db.scalar(select(func.count()).select_from(TrusteeKey)) == 1


async def test_ciphertexts_of_the_wrong_size_are_refused(
    running: Running, trustee: Trustee, http: aiohttp.ClientSession
) -> None:
    person = await make_vault(running)
    code = await trustee.code()
    good = seal(spki(trustee.key), person.key)
    for wrapped, label in (
        (b64u_encode(b"x" * 255), good),
        (good, b64u_encode(b"x" * 512)),
        (good, None),
        ("not base64!", good),
    ):
        status, refused = await api(
            http,
            running,
            "POST",
            "/trustees",
            headers=person.auth,
            body={"trustee_code": code, "wrapped_key": wrapped, "label": label},
        )
        assert status == 400, refused
        assert refused["error"]["code"] == "invalid_ciphertext"
    async with running.sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(VaultGrant)) == 0


async def test_the_person_side_needs_the_vault_capability(
    running: Running, http: aiohttp.ClientSession
) -> None:
    wrong = {"Authorization": "Vault " + b64u_encode(secrets.token_bytes(32))}
    for method, path, headers in (
        ("GET", "/trustee-key?code=ABCD1234", {}),
        ("GET", "/trustee-key?code=ABCD1234", wrong),
        ("POST", "/trustees", wrong),
        ("DELETE", "/trustees/x", {"Authorization": "Bearer nope"}),
    ):
        status, refused = await api(http, running, method, path, headers=headers, body={})
        assert status == 401, (method, path, refused)
        assert refused["error"]["code"] == "unknown_vault"


async def test_guessing_trustee_codes_is_rate_limited(
    running: Running, trustee: Trustee, http: aiohttp.ClientSession
) -> None:
    person = await make_vault(running)
    code = await trustee.code()
    statuses = []
    for _ in range(21):
        guess = "".join(secrets.choice(trustees.CROCKFORD) for _i in range(8))
        status, _data = await api(
            http, running, "GET", f"/trustee-key?code={guess}", headers=person.auth
        )
        statuses.append(status)
    assert statuses[:20] == [404] * 20 and statuses[20] == 429
    # Even the right code is refused now, and naming is counted too.
    status, refused = await api(
        http, running, "GET", f"/trustee-key?code={code}", headers=person.auth
    )
    assert status == 429 and refused["error"]["code"] == "rate_limited"


async def test_pairing_code_lookups_are_rate_limited_per_account(
    running: Running, trustee: Trustee
) -> None:
    statuses = [(await trustee.pairing(f"{n:06d}"))[0] for n in range(11)]
    assert statuses[:10] == [404] * 10 and statuses[10] == 429


async def test_polling_needs_the_poll_token(running: Running, http: aiohttp.ClientSession) -> None:
    _device, request = await new_device(http, running)
    for header in ("", "Recovery " + b64u_encode(secrets.token_bytes(32)), "Vault x"):
        status, refused = await api(
            http,
            running,
            "GET",
            f"/recovery-requests/{request['id']}",
            headers={"Authorization": header} if header else {},
        )
        assert status == 404 and refused["error"]["code"] == "unknown_request"


async def test_the_trustee_page_needs_a_login_and_explains_the_role(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    async with http.get(running.url("/coffre/confiance"), allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"].startswith("/login")
    helper = Trustee(http, running, volunteer)
    html = await helper.open()
    assert "personne de confiance" in html
    assert 'id="vp-config"' in html
    # Without the CSRF token, nothing is registered.
    async with http.post(
        running.url("/coffre/confiance/cle"), json={"public_key": spki(helper.key)}
    ) as resp:
        assert resp.status == 403
    status, refused = await helper.post("/coffre/confiance/code")
    assert status == 409 and refused["error"]["code"] == "no_trustee_key"
