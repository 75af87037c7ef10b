"""Benchmark data made through the domain modules (never through HTTP), against the database of
the server under test: an association, a volunteer with a login session, assistance sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server import accounts
from server.assist import create_session, link_for
from server.db import make_sessionmaker
from server.passes import LOGIN_COOKIE
from server.settings import Settings
from server.store.engine import make_engine
from server.store.models import Role, User

ASSOCIATION = "Association banc d'essai"
VOLUNTEER_EMAIL = "benevole@bench.invalid"
VOLUNTEER_PASSWORD = "bench-password-2026"
LOGIN_TTL = timedelta(hours=2)
CREATE_ATTEMPTS = 5


@dataclass(frozen=True)
class SessionFixture:
    """A live assistance session and the token of its `/j/` link."""

    session_id: str
    join_token: str
    link: str


class Fixtures:
    """Opens its own engine on the server's database and hands out fresh sessions on demand."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: AsyncEngine = make_engine(settings.database_url)
        self.sessionmaker: async_sessionmaker[AsyncSession] = make_sessionmaker(
            self.engine, settings
        )
        self.volunteer: User | None = None
        self.login_token = ""
        self.creation_failures: list[str] = []

    async def setup(self) -> None:
        """Create the association, the volunteer account and a login session for it."""
        async with self.sessionmaker.begin() as db:
            association = await accounts.get_or_create_association(db, ASSOCIATION)
            self.volunteer = await accounts.create_user(
                db,
                association=association,
                email=VOLUNTEER_EMAIL,
                name="Bénévole du banc d'essai",
                role=Role.VOLUNTEER,
                password=VOLUNTEER_PASSWORD,
            )
            self.login_token = await accounts.open_login_session(db, self.volunteer, LOGIN_TTL)

    @property
    def volunteer_cookie(self) -> str:
        """The ``Cookie`` header value of the logged-in volunteer."""
        return f"{LOGIN_COOKIE}={self.login_token}"

    async def new_sessions(self, count: int) -> list[SessionFixture]:
        """``count`` fresh assistance sessions of the volunteer, with their join tokens."""
        assert self.volunteer is not None, "call setup() first"
        return [await self._new_session(self.volunteer) for _ in range(count)]

    async def _new_session(self, volunteer: User) -> SessionFixture:
        # One transaction per session, retried: with thousands of live sessions two 6-digit
        # codes collide now and then, and create_session's retry path can fail (see
        # BENCHMARKS.md, "Findings"); each failure is kept to be reported.
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                async with self.sessionmaker.begin() as db:
                    session = await create_session(db, self.settings, volunteer)
                    link = link_for(self.settings, session)
            except SQLAlchemyError as exc:
                self.creation_failures.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                if attempt == CREATE_ATTEMPTS:
                    raise
                continue
            return SessionFixture(session.id, link.rsplit("/j/", 1)[1], link)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Dispose of the engine."""
        await self.engine.dispose()
