"""One trip to the SQLite thread per statement instead of four.

aiosqlite runs each connection on its own thread and every call is a trip there and back: a
hand-over through a queue, a wake-up of the thread, a ``call_soon_threadsafe`` back to the loop.
SQLAlchemy's cursor adapter makes four such trips per statement (open the cursor, execute,
fetch all rows, close), and a coroutine that holds SQLite's write lock waits a full event-loop
turn after each one: under 200 concurrent bookings a booking's 25 statements became 100 loop
turns with the lock held. This cursor runs open, execute, fetch and close as one function on
the connection's thread and keeps what SQLAlchemy reads afterwards (description, rowcount,
lastrowid, rows). Results are complete in memory as before (the adapter fetched all rows too);
server-side cursors (``stream()``) keep SQLAlchemy's own class.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Callable
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
)

Outcome = tuple[Any, list[Any], int, int | None]


def _run(
    connection: Callable[[], sqlite3.Connection],
    operation: str,
    parameters: Any,
    many: bool,
) -> Outcome:
    """On the connection's thread: the statement, its rows and counters, cursor closed."""
    cursor = connection().cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """SQLAlchemy's aiosqlite cursor, executing in one call on the connection's thread."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        # Not the parent's __init__: it opens an aiosqlite cursor (a trip) we never use.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = {}  # type: ignore[assignment]
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        """As the last statement left it."""
        return self._description

    @property
    def rowcount(self) -> int:
        """As the last statement left it."""
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        """As the last statement left it."""
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        """sqlite3's default: fetchmany() without a size returns one row."""
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        raise NotImplementedError("arraysize is fixed")  # SQLAlchemy never sets it on SQLite

    async def _async_soft_close(self) -> None:
        """Nothing is open on the thread."""

    def close(self) -> None:
        """Drop the rows left (the thread's cursor is already closed)."""
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._trip(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._trip(operation, seq_of_parameters, many=True)

    async def _trip(self, operation: str, parameters: Any, *, many: bool) -> None:
        driver = self._connection  # the aiosqlite.Connection

        def connection() -> sqlite3.Connection:
            return driver._conn  # type: ignore[no-any-return]

        async with self._adapt_connection._execute_mutex:
            outcome: Outcome = await driver._execute(_run, connection, operation, parameters, many)
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)

    def nextset(self) -> None:
        """sqlite3 has a single result set."""
        raise NotImplementedError("sqlite3 has no nextset()")

    def setinputsizes(self, *inputsizes: Any) -> None:
        """sqlite3 ignores input sizes."""


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection adapter whose cursors make one trip per statement."""

    __slots__ = ()
    _cursor_cls = OneTripCursor


def use_one_trip_cursors(dbapi_connection: Any) -> None:
    """Switch a freshly opened aiosqlite adapter connection to one-trip cursors (same slots:
    only the class of cursor it makes changes)."""
    if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
        dbapi_connection.__class__ = OneTripConnection
