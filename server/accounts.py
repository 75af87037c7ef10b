"""Accounts: password hashing (argon2, off the event loop), login sessions, invitations,
deactivation, roles. Every loss of access publishes ``AccountRevoked``: the sockets the account
opened are closed after the commit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Select, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server import i18n, text
from server.errors import DomainError, Kind
from server.events import AccountRevoked, publish
from server.metrics import PASSWORD_HASH_SECONDS
from server.store.models import (
    Association,
    Invitation,
    LoginSession,
    Partner,
    Role,
    User,
    UserLanguage,
    utcnow,
)
from server.tokens import sha256_hex

_hasher = PasswordHasher()
# Verifying against this keeps the cost of "unknown e-mail" the same as "wrong password".
_DUMMY_HASH = _hasher.hash("not-a-real-password")
# Hashing threads run at this nice value (Linux: per thread, inherited by the threads argon2
# starts for its lanes): when the CPU is short, the event loop (signalling) goes first.
HASH_THREAD_NICENESS = 10
MIN_PASSWORD_LENGTH = 10
INVITATION_TTL = timedelta(days=7)
PARTNER_NAME_MAX = 200


class AccountError(DomainError):
    """A refused account, invitation or partner structure."""


def account_email(email: str) -> str:
    """The form an account's e-mail is stored and looked up in: trimmed and lower-cased, so
    that logging in ignores case. It never refuses anything (a login attempt with garbage must
    cost the same as one with a real address); `validate_email` checks new accounts, and
    `server.contact.normalize_email` checks the stricter addresses we send messages to."""
    return email.strip().lower()


def validate_email(email: str) -> str:
    """Return the normalised e-mail or raise AccountError with a French message."""
    from server.i18n import _

    value = account_email(email)
    local, _sep, domain = value.partition("@")
    if not local or "." not in domain or len(value) > 254 or " " in value:
        raise AccountError("invalid_email", _("Adresse e-mail invalide."), "email")
    return value


def validate_password(password: str) -> str:
    """Passwords need a minimum length; the rest is the user's choice."""
    from server.i18n import _

    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(
            "password_too_short",
            _("Le mot de passe doit contenir au moins %(n)d caractères.")
            % {"n": MIN_PASSWORD_LENGTH},
            "password",
        )
    if len(password) > 1024:
        raise AccountError("password_too_long", _("Le mot de passe est trop long."), "password")
    return password


def hash_password(password: str) -> str:
    """argon2id hash of a password, on the calling thread (command line, tests; the server
    hashes through ``Passwords``)."""
    return _hasher.hash(password)


def _verify(stored: str, password: str) -> bool:
    started = time.perf_counter()
    try:
        return bool(_hasher.verify(stored, password))
    except (VerificationError, InvalidHashError):
        return False
    finally:
        PASSWORD_HASH_SECONDS.inc(time.perf_counter() - started)


def _hash(password: str) -> str:
    started = time.perf_counter()
    try:
        return _hasher.hash(password)
    finally:
        PASSWORD_HASH_SECONDS.inc(time.perf_counter() - started)


def _lower_priority() -> None:
    """Pool thread initializer: run below the event loop's priority (best effort)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)


@dataclass(frozen=True)
class NewPassword:
    """A password that passed the rules, hashed (off the event loop)."""

    hash: str


class Passwords:
    """argon2 off the event loop: hashes are verified and computed in a bounded pool of
    threads (each takes ~64 MiB and tens of ms of CPU), and at most ``max_logins`` logins are
    in progress at once, so that a login flood neither freezes the sockets nor queues work
    without bound."""

    def __init__(self, threads: int, max_logins: int) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="argon2", initializer=_lower_priority
        )
        self.max_logins = max_logins
        self.in_progress = 0

    @contextmanager
    def login_slot(self) -> Iterator[bool]:
        """One of the ``max_logins`` places for a login in progress: True if one was free
        (held until the block ends), False if all are taken (compute nothing then)."""
        if self.in_progress >= self.max_logins:
            yield False
            return
        self.in_progress += 1
        try:
            yield True
        finally:
            self.in_progress -= 1

    async def verify(self, stored: str, password: str) -> bool:
        """Whether ``password`` matches the argon2 hash ``stored``."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, _verify, stored, password
        )

    async def hash(self, password: str) -> str:
        """The argon2id hash of ``password``."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, _hash, password)

    async def new_password(self, password: str) -> NewPassword:
        """Check the rules (AccountError) and hash the password."""
        return NewPassword(await self.hash(validate_password(password)))

    def close(self) -> None:
        """Stop the threads (application shutdown); hashes still queued are dropped."""
        self._pool.shutdown(wait=True, cancel_futures=True)


async def get_or_create_association(db: AsyncSession, name: str) -> Association:
    """The association with this name, created if missing."""
    found = await db.scalar(select(Association).where(Association.name == name))
    if found is not None:
        return found
    association = Association(name=name)
    db.add(association)
    await db.flush()
    return association


async def create_user(
    db: AsyncSession,
    *,
    association: Association,
    email: str,
    name: str,
    role: Role,
    password: str | None,
) -> User:
    """Create an account; without a password it can only be activated by an invitation."""
    from server.i18n import _

    email = validate_email(email)
    name = name.strip()
    if not name or len(name) > 100:
        raise AccountError(
            "invalid_name", _("Le nom est obligatoire (100 caractères au plus)."), "name"
        )
    if await db.scalar(select(User.id).where(User.email == email)) is not None:
        raise AccountError(
            "email_taken", _("Un compte existe déjà avec cette adresse e-mail."), "email"
        )
    user = User(
        association_id=association.id,
        email=email,
        name=name,
        role=role,
        password_hash=hash_password(validate_password(password)) if password else None,
    )
    db.add(user)
    await db.flush()
    return user


@dataclass(frozen=True)
class Login:
    """An account and the login session (browser) it is logged in with."""

    user: User
    login_id: int


async def log_in(
    sessions: async_sessionmaker[AsyncSession],
    passwords: Passwords,
    email: str,
    password: str,
    ttl: timedelta,
) -> tuple[User, str] | None:
    """Check the credentials and open a login session: the active account and the raw cookie
    token, or None. Unknown e-mails cost the same hash as wrong passwords. No database
    connection is held while the hash is computed (it may wait for a free thread): read the
    stored hash, verify it in the pool, then record the login if nothing changed meanwhile."""
    async with sessions() as db:
        row = (
            await db.execute(
                select(User.id, User.password_hash, User.is_active).where(
                    User.email == account_email(email)
                )
            )
        ).one_or_none()
    stored = row.password_hash if row is not None and row.password_hash else _DUMMY_HASH
    if not await passwords.verify(stored, password):
        return None
    if row is None or not row.is_active or not row.password_hash:
        return None
    rehashed = await passwords.hash(password) if _hasher.check_needs_rehash(stored) else None
    async with sessions.begin() as db:
        user = await db.get(User, row.id, populate_existing=True, with_for_update=True)
        if user is None or not user.is_active or user.password_hash != stored:
            return None  # deactivated or given a new password while we were hashing
        if rehashed is not None:
            user.password_hash = rehashed
        user.last_login_at = utcnow()
        return user, await open_login_session(db, user, ttl)


async def open_login_session(db: AsyncSession, user: User, ttl: timedelta) -> str:
    """Create a login session and return the raw cookie token."""
    token = secrets.token_urlsafe(32)
    db.add(LoginSession(token_hash=sha256_hex(token), user_id=user.id, expires_at=utcnow() + ttl))
    await db.flush()
    return token


async def login_for_token(db: AsyncSession, token: str) -> Login | None:
    """The active user behind a login cookie and its login session, if still valid."""
    row = (
        await db.execute(
            select(User, LoginSession.id)
            .join(LoginSession, LoginSession.user_id == User.id)
            .where(
                LoginSession.token_hash == sha256_hex(token),
                LoginSession.expires_at > utcnow(),
                User.is_active.is_(True),
            )
        )
    ).one_or_none()
    return None if row is None else Login(row[0], row[1])


async def user_for_login_token(db: AsyncSession, token: str) -> User | None:
    """The active user behind a login cookie, if the session is still valid."""
    login = await login_for_token(db, token)
    return None if login is None else login.user


def _giving_access(query: Select[Any], roles: Collection[Role] | None) -> Select[Any]:
    """``query`` (over LoginSession joined to User) narrowed to logins that still give access:
    unexpired, of an active account, of one of ``roles`` if given."""
    query = query.where(LoginSession.expires_at > utcnow(), User.is_active.is_(True))
    if roles is not None:
        query = query.where(User.role.in_(list(roles)))
    return query


async def live_logins(
    db: AsyncSession, login_ids: Collection[int], roles: Collection[Role] | None = None
) -> set[int]:
    """Which of these login sessions still give access (``_giving_access``). Sockets re-check
    their login with it before a push."""
    if not login_ids:
        return set()
    query = (
        select(LoginSession.id)
        .join(User, User.id == LoginSession.user_id)
        .where(LoginSession.id.in_(list(login_ids)))
    )
    return set(await db.scalars(_giving_access(query, roles)))


async def live_login_user(
    db: AsyncSession, login_id: int, roles: Collection[Role] | None = None
) -> User | None:
    """The account behind login session ``login_id`` if it still gives access
    (``_giving_access``), read in ``db``'s transaction."""
    query = (
        select(User)
        .join(LoginSession, LoginSession.user_id == User.id)
        .where(LoginSession.id == login_id)
    )
    user: User | None = await db.scalar(_giving_access(query, roles))
    return user


async def close_login_session(db: AsyncSession, token: str) -> None:
    """Logout: forget this login session; the sockets opened with it close after commit."""
    row = (
        await db.execute(
            delete(LoginSession)
            .where(LoginSession.token_hash == sha256_hex(token))
            .returning(LoginSession.id, LoginSession.user_id)
        )
    ).one_or_none()
    if row is not None:
        publish(db, AccountRevoked(row.user_id, "logout", row.id))


async def revoke_access(db: AsyncSession, user: User, reason: str) -> None:
    """The account loses every login session now; its open sockets close after commit."""
    await db.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
    publish(db, AccountRevoked(user.id, reason))


@dataclass(frozen=True)
class InvitationLink:
    """A freshly created invitation and its one-time token."""

    user: User
    token: str
    expires_at: datetime


async def invite_volunteer(
    db: AsyncSession, coordinator: User, *, email: str, name: str
) -> InvitationLink:
    """Create a volunteer account without password, in the coordinator's association."""
    association = await db.get_one(Association, coordinator.association_id)
    user = await create_user(
        db, association=association, email=email, name=name, role=Role.VOLUNTEER, password=None
    )
    return await _new_invitation(db, user)


async def get_or_create_partner(db: AsyncSession, association_id: int, name: str) -> Partner:
    """The association's partner structure of this name (spaces tidied), created if missing."""
    from server.i18n import _

    clean = " ".join(name.split())
    if not clean or len(clean) > PARTNER_NAME_MAX or not text.is_line(clean):
        raise AccountError(
            "invalid_partner",
            _("Le nom de la structure est obligatoire (%(n)d caractères au plus).")
            % {"n": PARTNER_NAME_MAX},
            "partner",
        )
    query = select(Partner).where(Partner.association_id == association_id)
    for partner in await db.scalars(query):
        if partner.name.casefold() == clean.casefold():  # "CCAS Lyon" and "ccas lyon" are one
            return partner
    partner = Partner(association_id=association_id, name=clean)
    db.add(partner)
    await db.flush()
    return partner


async def invite_referrer(
    db: AsyncSession, coordinator: User, *, email: str, name: str, partner_name: str
) -> InvitationLink:
    """Create a referrer account (social worker of a partner structure) and its invitation."""
    association = await db.get_one(Association, coordinator.association_id)
    partner = await get_or_create_partner(db, association.id, partner_name)
    user = await create_user(
        db, association=association, email=email, name=name, role=Role.REFERRER, password=None
    )
    user.partner_id = partner.id
    await db.flush()
    return await _new_invitation(db, user)


async def list_referrers(
    db: AsyncSession, association_id: int
) -> list[tuple[User, Partner | None]]:
    """The association's referrers with their partner structure, active first, by name."""
    rows = await db.execute(
        select(User, Partner)
        .outerjoin(Partner, Partner.id == User.partner_id)
        .where(User.association_id == association_id, User.role == Role.REFERRER)
        .order_by(User.is_active.desc(), User.name)
    )
    return [(user, partner) for user, partner in rows]


async def _new_invitation(db: AsyncSession, user: User) -> InvitationLink:
    token = secrets.token_urlsafe(32)
    expires_at = utcnow() + INVITATION_TTL
    db.add(Invitation(token_hash=sha256_hex(token), user_id=user.id, expires_at=expires_at))
    await db.flush()
    return InvitationLink(user=user, token=token, expires_at=expires_at)


async def pending_invitation(db: AsyncSession, token: str) -> tuple[Invitation, User] | None:
    """The unused, unexpired invitation for this token, with its account."""
    row = (
        await db.execute(
            select(Invitation, User)
            .join(User, User.id == Invitation.user_id)
            .where(
                Invitation.token_hash == sha256_hex(token),
                Invitation.used_at.is_(None),
                Invitation.expires_at > utcnow(),
                User.is_active.is_(True),
            )
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1])


async def accept_invitation(db: AsyncSession, token: str, password: NewPassword) -> User | None:
    """Set the password of an invited account; the invitation works once. Like any new
    password, it ends the login sessions the account may have."""
    found = await pending_invitation(db, token)
    if found is None:
        return None
    invitation, user = found
    invitation.used_at = utcnow()
    await _set_password(db, user, password)
    return user


async def _set_password(db: AsyncSession, user: User, password: NewPassword) -> None:
    user.password_hash = password.hash
    await revoke_access(db, user, "password_changed")


async def change_password(
    db: AsyncSession, user_id: int, seen_hash: str, password: NewPassword, ttl: timedelta
) -> str | None:
    """An account changes its own password (the current one was verified against
    ``seen_hash``): every login session ends, this browser gets a new one (its token is
    returned). None if the account changed meanwhile."""
    user = await db.get(User, user_id, populate_existing=True, with_for_update=True)
    if user is None or not user.is_active or user.password_hash != seen_hash:
        return None
    await _set_password(db, user, password)
    return await open_login_session(db, user, ttl)


async def list_members(db: AsyncSession, association_id: int) -> list[User]:
    """Volunteers and coordinators of an association (referrers have their own page)."""
    rows = await db.scalars(
        select(User)
        .where(User.association_id == association_id, User.role != Role.REFERRER)
        .order_by(User.is_active.desc(), User.name)
    )
    return list(rows)


async def deactivate(db: AsyncSession, coordinator: User, user_id: int) -> User | None:
    """Deactivate an account of the same association and close its login sessions."""
    user = await db.scalar(
        select(User).where(User.id == user_id, User.association_id == coordinator.association_id)
    )
    if user is None or user.id == coordinator.id:
        return None
    user.is_active = False
    await revoke_access(db, user, "deactivated")
    return user


MEMBER_ROLES = (Role.VOLUNTEER, Role.COORDINATOR)


async def set_role(db: AsyncSession, coordinator: User, user_id: int, role: Role) -> User | None:
    """Make a member of the coordinator's association a volunteer or a coordinator (not
    themselves). A new role ends the account's login sessions: its pages and sockets were
    opened under the old one."""
    from server.i18n import _

    if role not in MEMBER_ROLES:
        raise AccountError("invalid_role", _("Ce rôle n'existe pas."), "role")
    user = await db.scalar(
        select(User).where(
            User.id == user_id,
            User.association_id == coordinator.association_id,
            User.role.in_(MEMBER_ROLES),
        )
    )
    if user is None or user.id == coordinator.id:
        return None
    if user.role != role:
        user.role = role
        await revoke_access(db, user, "role_changed")
    return user


async def reactivate(db: AsyncSession, coordinator: User, user_id: int) -> User | None:
    """Reactivate an account of the same association."""
    result = await db.execute(
        update(User)
        .where(User.id == user_id, User.association_id == coordinator.association_id)
        .values(is_active=True)
        .returning(User.id)
    )
    if result.scalar_one_or_none() is None:
        return None
    return await db.get(User, user_id)


# -- The languages volunteers speak ----------------------------------------------------------

# Every language of the beneficiary's side but French (everyone here speaks French), by the
# name a French page gives it, in lower case as in "Demande un bénévole parlant arabe".
SPOKEN_NAMES: dict[str, str] = {
    lang.code: lang.french for lang in i18n.LANGUAGES if lang.code != i18n.DEFAULT_LOCALE
}
# In the order of the language switch (server/i18n.py LANGUAGES).
SPEAKABLE: tuple[str, ...] = tuple(
    lang.code for lang in i18n.LANGUAGES if lang.code in SPOKEN_NAMES
)


def language_name(code: str) -> str:
    """The French name of a language a volunteer may speak ("arabe"), the code itself for
    one we do not list."""
    from server.i18n import _

    name = SPOKEN_NAMES.get(code)
    return _(name) if name is not None else code


def _order(codes: Iterable[str]) -> list[str]:
    wanted = set(codes)
    return [code for code in SPEAKABLE if code in wanted]


async def languages_of(db: AsyncSession, user_id: int) -> list[str]:
    """The codes of the languages this account declared, in the switch's order."""
    rows = await db.scalars(select(UserLanguage.language).where(UserLanguage.user_id == user_id))
    return _order(rows)


async def languages_by_user(db: AsyncSession, user_ids: Collection[int]) -> dict[int, list[str]]:
    """The languages of several accounts at once (every id is a key, with [] if none)."""
    found: dict[int, list[str]] = {user_id: [] for user_id in user_ids}
    if not found:
        return found
    rows = await db.execute(
        select(UserLanguage.user_id, UserLanguage.language).where(
            UserLanguage.user_id.in_(list(found))
        )
    )
    for user_id, code in rows:
        found[user_id].append(code)
    return {user_id: _order(codes) for user_id, codes in found.items()}


async def set_languages(db: AsyncSession, user: User, codes: Iterable[str]) -> list[str]:
    """Replace the languages a volunteer or coordinator speaks besides French: codes of
    ``SPEAKABLE``. An unknown code refuses the whole change (nothing stored)."""
    from server.i18n import _

    if user.role not in MEMBER_ROLES or not user.is_active:
        raise AccountError(
            "not_a_volunteer",
            _("Seuls les bénévoles déclarent les langues qu'ils parlent."),
            kind=Kind.FORBIDDEN,
        )
    chosen: set[str] = set()
    for raw in codes:
        lang = i18n.language(raw)
        if lang is None or lang.code not in SPOKEN_NAMES:
            raise AccountError(
                "unknown_language", _("Cette langue n'est pas dans la liste."), "languages"
            )
        chosen.add(lang.code)
    await db.execute(delete(UserLanguage).where(UserLanguage.user_id == user.id))
    for code in _order(chosen):
        db.add(UserLanguage(user_id=user.id, language=code))
    await db.flush()
    return _order(chosen)
