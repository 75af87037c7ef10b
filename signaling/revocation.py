"""Sockets opened with a login, by account and login session, for both namespaces: a revoked
account's sockets are found at once (``AccountRevoked``), and pushes re-check the login behind
a socket against the database, so that a lost event cannot leak anything."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import socketio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.accounts import live_login_user, live_logins
from server.store.models import Role, User


@dataclass
class _Login:
    """What a socket was opened with, and when that was last found valid (loop time)."""

    user_id: int
    login_id: int
    checked: float


class AccountSockets:
    """The sockets of one namespace in this process that a login opened: sid → (account,
    login session), and when each was last found valid in the database."""

    def __init__(self, roles: Collection[Role] | None = None) -> None:
        self.roles = roles  # the roles that may hold such a socket (None: any)
        # One record per sid: discarding a socket forgets all of it. (Check times in a map of
        # their own outlived their socket when it went away while a check read the database.)
        self._logins: dict[str, _Login] = {}
        self._by_user: defaultdict[int, set[str]] = defaultdict(set)

    def add(self, sid: str, user_id: int, login_id: int) -> None:
        """A socket opened with this account's login session (just checked)."""
        self._logins[sid] = _Login(user_id, login_id, asyncio.get_running_loop().time())
        self._by_user[user_id].add(sid)

    def discard(self, sid: str) -> None:
        """The socket is gone."""
        found = self._logins.pop(sid, None)
        if found is not None:
            sids = self._by_user.get(found.user_id)
            if sids is not None:
                sids.discard(sid)
                if not sids:
                    del self._by_user[found.user_id]

    def of(self, user_id: int, login_id: int | None = None) -> list[str]:
        """The account's sockets (opened with ``login_id`` only, if given)."""
        return [
            sid
            for sid in self._by_user.get(user_id, ())
            if login_id is None or self._logins[sid].login_id == login_id
        ]

    def sids(self) -> list[str]:
        """Every socket opened with a login."""
        return list(self._logins)

    def __len__(self) -> int:
        return len(self._logins)

    async def revoked(
        self,
        sessions: async_sessionmaker[AsyncSession],
        sids: Iterable[str],
        max_age: float = 0.0,
    ) -> list[str]:
        """Those of ``sids`` opened with a login that no longer gives access (closed, expired,
        account deactivated or of another role). Logins found valid less than ``max_age``
        seconds ago are not read again; sids opened without a login are never revoked."""
        now = asyncio.get_running_loop().time()
        due = {
            sid: login
            for sid in sids
            if (login := self._logins.get(sid)) is not None and now - login.checked >= max_age
        }
        if not due:
            return []
        async with sessions() as db:
            live = await live_logins(db, {login.login_id for login in due.values()}, self.roles)
        gone = []
        for sid, login in due.items():
            if login.login_id in live:
                login.checked = now
            else:
                gone.append(sid)
        return gone

    async def user_in(self, db: AsyncSession, sid: str) -> User | None:
        """The account behind ``sid``'s login if that login still gives access (unexpired, of
        an active account of one of ``roles``), read in the caller's transaction: the check
        and the action it guards see the same database. None for a socket without a login."""
        login = self._logins.get(sid)
        if login is None:
            return None
        user = await live_login_user(db, login.login_id, self.roles)
        if user is not None:
            login.checked = asyncio.get_running_loop().time()
        return user


def held_here(sio: socketio.AsyncServer, sid: str, namespace: str) -> bool:
    """Whether this node holds ``sid`` (connected, or still connecting) on ``namespace``."""
    manager = sio.manager
    return bool(manager.is_connected(sid, namespace) or manager.is_pre_connected(sid, namespace))
