"""Sockets opened with a login, by account and login session, for both namespaces: a revoked
account's sockets are found at once (``AccountRevoked``), and pushes re-check the login behind
a socket against the database, so that a lost event cannot leak anything."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Collection, Iterable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.accounts import live_logins
from server.store.models import Role


class AccountSockets:
    """The sockets of one namespace in this process that a login opened: sid → (account,
    login session), and when each was last found valid in the database."""

    def __init__(self, roles: Collection[Role] | None = None) -> None:
        self.roles = roles  # the roles that may hold such a socket (None: any)
        self._logins: dict[str, tuple[int, int]] = {}
        self._by_user: defaultdict[int, set[str]] = defaultdict(set)
        self._checked: dict[str, float] = {}

    def add(self, sid: str, user_id: int, login_id: int) -> None:
        """A socket opened with this account's login session (just checked)."""
        self._logins[sid] = (user_id, login_id)
        self._by_user[user_id].add(sid)
        self._checked[sid] = asyncio.get_running_loop().time()

    def discard(self, sid: str) -> None:
        """The socket is gone."""
        found = self._logins.pop(sid, None)
        self._checked.pop(sid, None)
        if found is not None:
            sids = self._by_user.get(found[0])
            if sids is not None:
                sids.discard(sid)
                if not sids:
                    del self._by_user[found[0]]

    def of(self, user_id: int, login_id: int | None = None) -> list[str]:
        """The account's sockets (opened with ``login_id`` only, if given)."""
        return [
            sid
            for sid in self._by_user.get(user_id, ())
            if login_id is None or self._logins[sid][1] == login_id
        ]

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
            sid: self._logins[sid][1]
            for sid in sids
            if sid in self._logins and now - self._checked.get(sid, 0.0) >= max_age
        }
        if not due:
            return []
        async with sessions() as db:
            live = await live_logins(db, set(due.values()), self.roles)
        gone = []
        for sid, login_id in due.items():
            if login_id in live:
                self._checked[sid] = now
            else:
                gone.append(sid)
        return gone
