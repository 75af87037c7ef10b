"""Accounts: password hashing (argon2), login sessions, invitations, deactivation."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import DomainError
from server.store.models import Association, Invitation, LoginSession, Partner, Role, User, utcnow
from server.tokens import sha256_hex

_hasher = PasswordHasher()
# Verifying against this keeps the timing of "unknown e-mail" close to "wrong password".
_DUMMY_HASH = _hasher.hash("not-a-real-password")
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
    """argon2id hash of a password."""
    return _hasher.hash(password)


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


async def authenticate(db: AsyncSession, email: str, password: str) -> User | None:
    """The active user with these credentials, or None (same cost whether the e-mail exists)."""
    user = await db.scalar(select(User).where(User.email == account_email(email)))
    stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.is_active or not user.password_hash:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    return user


async def open_login_session(db: AsyncSession, user: User, ttl: timedelta) -> str:
    """Create a login session and return the raw cookie token."""
    token = secrets.token_urlsafe(32)
    db.add(LoginSession(token_hash=sha256_hex(token), user_id=user.id, expires_at=utcnow() + ttl))
    await db.flush()
    return token


async def user_for_login_token(db: AsyncSession, token: str) -> User | None:
    """The active user behind a login cookie, if the session is still valid."""
    row = await db.execute(
        select(User)
        .join(LoginSession, LoginSession.user_id == User.id)
        .where(
            LoginSession.token_hash == sha256_hex(token),
            LoginSession.expires_at > utcnow(),
            User.is_active.is_(True),
        )
    )
    return row.scalar_one_or_none()


async def close_login_session(db: AsyncSession, token: str) -> None:
    """Logout: forget this login session."""
    await db.execute(delete(LoginSession).where(LoginSession.token_hash == sha256_hex(token)))


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
    if not clean or len(clean) > PARTNER_NAME_MAX or not clean.isprintable():
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


async def accept_invitation(db: AsyncSession, token: str, password: str) -> User | None:
    """Set the password of an invited account; the invitation works once."""
    found = await pending_invitation(db, token)
    if found is None:
        return None
    invitation, user = found
    user.password_hash = hash_password(validate_password(password))
    invitation.used_at = utcnow()
    return user


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
    await db.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
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
