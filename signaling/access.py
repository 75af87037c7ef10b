"""Who may take part in a live assistance session: one rule for the `/assist` namespace and for
the ICE servers endpoint, so that a socket and its TURN credentials are granted alike.

In this order: a join token (the `/j/` link's secret, for the beneficiary's non-browser peers and
tests); a login cookie with the session's id (its volunteer or invited observer); a beneficiary
pass cookie (set by `/j/<token>` or `/code`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from server import assist
from server.accounts import login_for_token
from server.booking import beneficiary_may_enter
from server.passes import beneficiary_session_id, has_beneficiary_pass, login_token
from server.settings import Settings
from server.store.models import AssistanceSession, utcnow


class Refused(Exception):
    """No access: a stable ``code`` and an English ``message`` for developers."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Access:
    """A live session, the caller's role in it, and their account and login session
    (volunteer side)."""

    session: AssistanceSession
    role: assist.PeerRole
    user_id: int | None = None
    login_id: int | None = None


async def session_access(
    db: AsyncSession,
    settings: Settings,
    cookies: Mapping[str, str],
    *,
    join_token: str | None = None,
    session_id: str | None = None,
) -> Access:
    """The live session the caller belongs to, and as whom; ``Refused`` otherwise."""
    if join_token:
        session = await assist.find_by_token(db, join_token)
        if session is None:
            raise Refused("unauthorized", "invalid or expired join token")
        if not await beneficiary_may_enter(db, session, utcnow()):
            raise Refused("forbidden", "this appointment has not opened yet")
        return Access(session, assist.PeerRole.BENEFICIARY)
    token = login_token(settings, cookies)
    if session_id and token:
        login = await login_for_token(db, token)
        if login is None:
            raise Refused("unauthorized", "not logged in")
        found = await assist.get_for_user(db, session_id, login.user)
        if found is None:
            raise Refused("forbidden", "not a participant of this session")
        if not found[0].is_live:
            raise Refused("session_ended", "this session has ended")
        return Access(found[0], found[1], login.user.id, login.login_id)
    if has_beneficiary_pass(settings, cookies):
        pass_session = beneficiary_session_id(settings, cookies)
        live = await assist.get_live(db, pass_session) if pass_session else None
        if live is None:
            raise Refused("unauthorized", "invalid or expired beneficiary pass")
        return Access(live, assist.PeerRole.BENEFICIARY)
    raise Refused("unauthorized", "no credentials: join token, pass cookie or login+session_id")
