"""The database engine and sessions: SQLite pragmas, bounded waits for a connection, what counts
as "the database is unavailable", the write lock, and the two hooks a sessionmaker can carry —
work done at every flush (in the same transaction) and things handed over after a successful
commit (nothing on rollback).

The store knows nothing of the domain: what runs at flush and what is done with the items after
commit are given by the caller (``server/db.py`` composes them for the application).
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.util.concurrency import await_, in_greenlet

from server.store.sqlite_cursor import use_one_trip_cursors

FlushHook = Callable[[Session], None]
AfterCommit = Callable[[Sequence[object]], Awaitable[None]]

_PENDING = "after_commit.pending"  # items recorded in the open transaction
_MARKS = "after_commit.marks"  # savepoint → how many items were pending when it began
_COMMITTED = "after_commit.committed"  # items of committed transactions not handed over yet
_HANDLER = "after_commit.handler"
_WRITER = "sqlite.writer"  # the process's SQLite writer lock, held until the transaction ends
_RELEASES_WRITERS = "releases_sqlite_writers"  # a session class that gives _WRITER back


# How long a request may wait for a connection (to open one, or for a free one in the pool)
# before it is told the database is unavailable: without a bound, a stopped PostgreSQL makes
# every request hang for asyncpg's 60 s connect timeout and the pool's 30 s queue.
DEFAULT_TIMEOUT_SECONDS = 5.0
# SQLite errors that mean "not now" (another writer holds the lock past busy_timeout, the file
# vanished), not a bug in a statement.
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file", "disk i/o error")
# How long a writer waits for SQLite's lock (its busy handler; this process's queue of writers).
SQLITE_BUSY_TIMEOUT_SECONDS = 30


def make_engine(database_url: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> AsyncEngine:
    """Create the async engine; on SQLite, make sure the folder exists and set sane pragmas.

    On PostgreSQL every pooled connection is pinged when checked out (``pool_pre_ping``): after
    the server restarted, a stale connection is replaced instead of failing a request, so the
    pool recovers by itself. Opening a connection and waiting for a free one are bounded by
    ``timeout`` seconds."""
    url = make_url(database_url)
    kwargs: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_timeout": timeout,
        "connect_args": {"timeout": timeout},
    }
    if url.get_backend_name() == "sqlite":
        kwargs = {"connect_args": {"timeout": 30}}
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            # As many connections as the default pool allows at its peak (5 + 10 overflow), but
            # kept open: each aiosqlite connection is a thread, and a pool that opened and
            # closed overflow connections under load started a thread every few seconds,
            # whose malloc arena and stack left the heap fragmented (the soak benchmark's
            # slow memory growth). An idle connection costs one sleeping thread.
            kwargs |= {"pool_size": 15, "max_overflow": 0}
    # A failed statement's error never quotes its parameters: some are a link's id, a person's
    # phone or a vault's document id, and error messages reach the logs (SECURITY.md).
    engine = create_async_engine(url, hide_parameters=True, **kwargs)
    if url.get_backend_name() != "sqlite":

        @event.listens_for(engine.sync_engine, "do_connect")
        def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            # The driver's connect errors are not wrapped by SQLAlchemy: name them here, so
            # that a refused or timed-out connection to the database is told from any other
            # network error (a Redis outage is not a database outage).
            try:
                return dialect.connect(*cargs, **cparams)
            except _CONNECT_FAILURES as exc:
                raise CannotConnect(f"{type(exc).__name__}: {exc}") from exc

    if url.get_backend_name() == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000:.0f}")
            cursor.close()
            use_one_trip_cursors(dbapi_connection)

    return engine


class CannotConnect(ConnectionError):
    """The database refused or did not answer a new connection (stopped, starting up, shutting
    down, out of connections)."""


# What asyncpg raises when it cannot open a connection now, besides OSError.
_CONNECT_FAILURES = (
    OSError,
    asyncpg.CannotConnectNowError,
    asyncpg.PostgresConnectionError,
    asyncpg.TooManyConnectionsError,
)


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception, the driver error SQLAlchemy wrapped, and what caused each (``raise …
    from``; not the implicit context, which may be an unrelated error handled earlier)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is s for s in seen) or len(seen) > 10:
            continue
        seen.append(current)
        todo += [getattr(current, "orig", None), current.__cause__]
    return seen


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached now (stopped, restarting, cut
    connection, no free connection in time) rather than a wrong statement: the caller answers
    "try again later" (503) instead of reporting a bug. Only errors from the database's
    connections count: a network error of anything else stays what it is."""
    causes = _causes(exc)
    if any(isinstance(c, CannotConnect | sa_exc.TimeoutError) for c in causes):
        return True  # no new connection, or no free one in time
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    for cause in causes:
        if isinstance(
            cause,
            OSError  # the socket of a pooled connection: reset, timed out
            | asyncpg.PostgresConnectionError  # class 08: the connection is gone
            | asyncpg.CannotConnectNowError  # starting up or shutting down
            | asyncpg.AdminShutdownError  # terminated by a fast shutdown
            | asyncpg.CrashShutdownError
            | asyncpg.InterfaceError,  # "connection is closed"
        ):
            return True
        if isinstance(cause, sqlite3.OperationalError) and str(cause).lower().startswith(
            _SQLITE_UNAVAILABLE
        ):
            return True
    return False


class _Writers:
    """This process's writers of one SQLite database, first come first served.

    SQLite has one writer at a time. Without this queue, the writers of one process wait for
    its lock in SQLite's busy handler, which sleeps 1, 2, 5 … up to 100 ms between attempts
    and serves nobody in order: under ten concurrent takes, some waited seconds while later
    ones went first. Here they wait on an asyncio lock (FIFO, woken at once), and only its
    holder asks SQLite for the lock; other processes still meet the busy handler."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock = asyncio.Lock()

    def for_loop(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # an engine used from another event loop (tests)
            self.loop, self.lock = loop, asyncio.Lock()
        return self.lock


_WRITERS: weakref.WeakKeyDictionary[Engine, _Writers] = weakref.WeakKeyDictionary()


async def _queue_for_write(session: Session, engine: Engine) -> None:
    """Wait for this process's earlier writers, then hold the queue until the session's
    transaction ends (commit, rollback or close: ``_install_after_commit``). Sessions of
    another sessionmaker than ``make_session_factory``'s do not queue."""
    if not getattr(type(session), _RELEASES_WRITERS, False) or _WRITER in session.info:
        return
    lock = _WRITERS.setdefault(engine, _Writers()).for_loop()
    try:
        async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_SECONDS):
            await lock.acquire()
    except TimeoutError as exc:
        raise sa_exc.OperationalError(
            "BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked")
        ) from exc
    session.info[_WRITER] = lock


async def begin_write(db: AsyncSession) -> None:
    """On SQLite, take the write lock now (BEGIN IMMEDIATE) unless a transaction is open,
    after this process's earlier writers (``_Writers``)."""
    # Two reasons. pysqlite opens a transaction only before INSERT/UPDATE/DELETE, so a SAVEPOINT
    # issued first starts one of its own and its RELEASE commits: the caller's transaction would
    # no longer be one. And concurrent writers queue instead of failing at once with "database
    # is locked" when a reader tries to become a writer.
    conn = await db.connection()
    if conn.dialect.name != "sqlite":
        return
    driver = (await conn.get_raw_connection()).driver_connection  # an aiosqlite.Connection
    if driver is not None and not driver.in_transaction:
        await _queue_for_write(db.sync_session, conn.sync_engine)
        await conn.exec_driver_sql("BEGIN IMMEDIATE")


def _take_write_turn(session: Session) -> None:
    """``begin_write`` for a session about to write without having called it (a flush of
    changed objects, an ORM ``insert``/``update``/``delete``): on SQLite, wait for this
    process's earlier writers and take SQLite's lock, in the session's greenlet. Otherwise such
    a writer would meet a lock that queued writers hand to each other without a gap, sleeping
    in SQLite's busy handler until it times out under a steady stream of them."""
    if _WRITER in session.info or not in_greenlet():
        return
    if session.get_bind().dialect.name != "sqlite":
        return
    conn = session.connection()
    driver = conn.connection.driver_connection  # an aiosqlite.Connection
    if driver is not None and not driver.in_transaction:
        await_(_queue_for_write(session, conn.engine))
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def after_commit(db: AsyncSession | Session, item: object) -> None:
    """Record ``item`` in the session's open transaction: it is handed to the sessionmaker's
    after-commit handler once that transaction commits, and dropped if it (or the savepoint it
    was recorded in) rolls back."""
    session = db.sync_session if isinstance(db, AsyncSession) else db
    if not session.in_transaction():
        session.begin()  # bind the item to a transaction (no I/O until the first statement)
    pending: list[object] = session.info.setdefault(_PENDING, [])
    pending.append(item)


class HandingSession(AsyncSession):
    """An AsyncSession that hands the items of its committed transactions to its handler,
    after ``commit()`` and when it closes (``sessionmaker.begin()`` and ``async with``) —
    outside any lock the caller held inside the session, and never inside a transaction."""

    async def commit(self) -> None:
        """Commit, then hand over what this transaction recorded."""
        await super().commit()
        await self.hand_over()

    async def close(self) -> None:
        """Close, then hand over what committed transactions recorded."""
        await super().close()
        await self.hand_over()

    async def hand_over(self) -> None:
        """Give the committed items to the handler (each item once)."""
        committed: list[object] = self.info.get(_COMMITTED) or []
        handler: AfterCommit | None = self.info.get(_HANDLER)
        if not committed:
            return
        self.info[_COMMITTED] = []
        if handler is not None:
            await handler(committed)


def _install_after_commit(session_class: type[Session]) -> None:
    """Keep the pending items in step with the session's transactions (sync events)."""

    @event.listens_for(session_class, "after_transaction_create")
    def _begun(session: Session, transaction: SessionTransaction) -> None:
        if transaction.nested:
            marks: dict[int, int] = session.info.setdefault(_MARKS, {})
            marks[id(transaction)] = len(session.info.get(_PENDING, ()))

    @event.listens_for(session_class, "after_commit")
    def _committed(session: Session) -> None:  # the root transaction only
        pending = session.info.pop(_PENDING, [])
        session.info.pop(_MARKS, None)
        if pending:
            session.info.setdefault(_COMMITTED, []).extend(pending)

    @event.listens_for(session_class, "after_transaction_end")
    def _ended(session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:  # the root transaction: let the next writer in
            writer: asyncio.Lock | None = session.info.pop(_WRITER, None)
            if writer is not None:
                writer.release()

    @event.listens_for(session_class, "after_soft_rollback")
    def _rolled_back(session: Session, previous: SessionTransaction) -> None:
        marks: dict[int, int] = session.info.get(_MARKS, {})
        if previous.nested:
            mark = marks.pop(id(previous), None)
            pending = session.info.get(_PENDING)
            if mark is not None and pending is not None:
                del pending[mark:]
        else:
            session.info.pop(_PENDING, None)
            session.info.pop(_MARKS, None)


def make_session_factory(
    engine: AsyncEngine,
    *,
    flush_hooks: Sequence[FlushHook] = (),
    after_commit_handler: AfterCommit | None = None,
) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded attributes after commit (views render them), run
    ``flush_hooks`` after every flush in the flush's transaction, and hand the items recorded
    with ``after_commit`` to ``after_commit_handler`` once their transaction has committed.

    The hooks are attached to a Session class of this sessionmaker only, never to SQLAlchemy's
    global ``Session``: two applications in one process (tests) do not see each other's."""
    session_class: type[Session] = type("StoreSession", (Session,), {_RELEASES_WRITERS: True})
    for hook in flush_hooks:

        def _after_flush(session: Session, _context: Any, hook: FlushHook = hook) -> None:
            hook(session)

        event.listen(session_class, "after_flush", _after_flush)
    _install_after_commit(session_class)

    @event.listens_for(session_class, "before_flush")
    def _flush_writes(session: Session, _context: Any, _instances: Any) -> None:
        _take_write_turn(session)

    @event.listens_for(session_class, "do_orm_execute")
    def _statement_writes(state: ORMExecuteState) -> None:
        if state.is_insert or state.is_update or state.is_delete:
            _take_write_turn(state.session)

    return async_sessionmaker(
        engine,
        class_=HandingSession,
        sync_session_class=session_class,
        expire_on_commit=False,
        info={_HANDLER: after_commit_handler},
    )
