"""The notification worker: claims due outbox messages, sends each with its backend, records the
outcome. Runs inside the web app (``server/web/app.py``) or alone
(``python -m server.worker``); any number of workers may run against one database,
since claims are atomic (server/notify/outbox.py).

Guarantees:

- Nothing is lost: a message stays ``pending`` until a worker claims it, and a claimed message
  whose worker died (``sending`` with an expired lease) is claimed again.
- Nothing is sent twice in the normal case: ``mark_sent`` commits right after the backend returns,
  and a worker only starts a message while at least half of its lease remains, so no other worker
  can take it over during the send.
- The one unavoidable window: a crash (or a lost database) after the SMTP server answered 250 to
  DATA (or Brevo answered 2xx) and before ``mark_sent`` committed. The message is then sent again
  after the lease expires. The e-mail carries the same Message-ID both times (derived from the
  idempotency key), so the duplicate can be spotted and dropped downstream. No protocol can close
  this window: the remote acceptance and our commit are two systems without a shared transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server import callback_requests, readiness, retention
from server.cluster import Turns
from server.db import make_sessionmaker
from server.events import Dispatcher, OutboxWritten
from server.logs import configure_logging
from server.notify import Notifier, SendError
from server.notify.deliver import SmsBudget
from server.notify.outbox import (
    DEFAULT_LEASE,
    MAX_ATTEMPTS,
    claim_batch,
    mark_failed,
    mark_sent,
    release,
    retry_at,
)
from server.settings import Settings, SettingsError, load_settings
from server.store.engine import make_engine
from server.store.models import OutboxMessage, utcnow

log = logging.getLogger("server.worker")  # not "__main__" under python -m

BATCH_SIZE = 10
SHUTDOWN_GRACE_SECONDS = 30.0
# Closing old call-back requests is a minute-grained chore: no need to query at every poll.
HOUSEKEEPING_INTERVAL = timedelta(minutes=1)
# The retention purge (server/retention.py) runs once a day, first a while after start-up so that
# it never competes with a (re)starting server, and never in short-lived test apps.
RETENTION_DELAY = timedelta(minutes=10)
RETENTION_INTERVAL = timedelta(days=1)


class Worker:
    """Polls the outbox every ``poll_seconds`` (or at once when woken) and sends what is due."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        notifier: Notifier,
        *,
        poll_seconds: float,
        batch_size: int = BATCH_SIZE,
        lease: timedelta = DEFAULT_LEASE,
        max_attempts: int = MAX_ATTEMPTS,
        clock: Callable[[], datetime] = utcnow,
        settings: Settings | None = None,
        retention_delay: timedelta = RETENTION_DELAY,
        retention_interval: timedelta = RETENTION_INTERVAL,
        sms_budget: SmsBudget | None = None,
    ) -> None:
        """``settings`` turns on the housekeeping (expiry of old call-back requests) and the
        daily retention purge, first ``retention_delay`` after ``run`` starts."""
        if poll_seconds <= 0 or batch_size <= 0 or lease <= timedelta(0) or max_attempts <= 0:
            raise ValueError("poll_seconds, batch_size, lease and max_attempts must be positive")
        self.sessionmaker = sessionmaker
        self.notifier = notifier
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.lease = lease
        self.max_attempts = max_attempts
        self.clock = clock
        self.settings = settings
        self.sms_budget = sms_budget  # the vaults' retention notices spend BUDGET_SMS
        self._housekeeping_due: datetime | None = None
        self.retention_delay = retention_delay
        self.retention_interval = retention_interval
        self.purged = asyncio.Event()  # set after each retention purge (tests await it)
        # Once per cluster: each node runs a worker, one of them does each daily chore.
        self.turns = Turns(settings.redis_url if settings is not None else "")
        self.last_purge: retention.PurgeReport | None = None
        self._wake = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """Look at the outbox now rather than at the next poll."""
        self._wake.set()

    async def woken(self, _event: OutboxWritten) -> None:
        """Subscriber of ``OutboxWritten``: messages were just committed."""
        self.wake()

    def stop(self) -> None:
        """Finish the message being sent, hand the rest of the batch back, then leave ``run``."""
        self._stopping = True
        self._wake.set()
        self._stop_event.set()

    async def run_once(self) -> int:
        """One round: claim a batch and process it; how many messages were claimed."""
        async with self.sessionmaker.begin() as db:
            batch = await claim_batch(db, self.clock(), self.batch_size, self.lease)
        for index, message in enumerate(batch):
            assert message.lease_until is not None
            # Starting a send with less than half the lease left could let the lease run out
            # mid-send and another worker send the message too.
            if self._stopping or self.clock() > message.lease_until - self.lease / 2:
                async with self.sessionmaker.begin() as db:
                    await release(db, batch[index:])
                break
            await self._process(message)
        return len(batch)

    async def housekeeping(self) -> int:
        """Expire old call-back requests, at most once per HOUSEKEEPING_INTERVAL; how many."""
        now = self.clock()
        if self.settings is None or (
            self._housekeeping_due is not None and now < self._housekeeping_due
        ):
            return 0
        self._housekeeping_due = now + HOUSEKEEPING_INTERVAL
        if not await self.turns.mine("housekeeping", HOUSEKEEPING_INTERVAL.total_seconds()):
            return 0  # another node's worker does it this minute
        async with self.sessionmaker.begin() as db:
            expired = await callback_requests.expire_old(db, self.settings, now)
        if expired:
            log.info("%d call-back request(s) expired", expired)
        return expired

    async def purge(self) -> retention.PurgeReport | None:
        """Purge personal data past the retention period now (None without settings)."""
        if self.settings is None:
            return None
        async with self.sessionmaker() as db:
            report = await retention.purge(
                db, self.settings, self.clock(), sms_budget=self.sms_budget
            )
        self.last_purge = report
        self.purged.set()
        return report

    async def _retention_loop(self) -> None:
        """The daily purge, in its own task so that a long first purge delays no message."""
        delay = self.retention_delay
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), delay.total_seconds())
            if self._stopping:
                return
            try:
                if await self.turns.mine("retention", self.retention_interval.total_seconds()):
                    await self.purge()
            except Exception:
                log.exception("retention purge failed; trying again in %s", self.retention_interval)
            delay = self.retention_interval

    async def _process(self, message: OutboxMessage) -> None:
        """Send one claimed message and record the outcome."""
        if message.attempts > self.max_attempts:
            # Claimed again and again without an outcome: its worker keeps dying while sending.
            await self._failed(message, "gave up: no outcome recorded after repeated claims", None)
            return
        try:
            await self.notifier.send(message, self.clock())
        except SendError as exc:
            later = retry_at(message.attempts, self.clock(), self.max_attempts)
            await self._failed(message, str(exc), None if exc.permanent else later)
            return
        except Exception as exc:
            # A bug while sending one message must not stop the others; the traceback is logged.
            log.exception("outbox message %s: unexpected error while sending", message.id)
            later = retry_at(message.attempts, self.clock(), self.max_attempts)
            await self._failed(message, f"{type(exc).__name__}: {exc}", later)
            return
        async with self.sessionmaker.begin() as db:
            held = await mark_sent(db, message, self.clock())
        if not held:
            log.warning(
                "outbox message %s was sent but another worker had taken it over: "
                "it may arrive twice (same Message-ID)",
                message.id,
            )

    async def _failed(self, message: OutboxMessage, error: str, later: datetime | None) -> None:
        async with self.sessionmaker.begin() as db:
            await mark_failed(db, message, error, retry_at=later)
        if later is None:
            log.error(
                "outbox message %s (%s) given up after %d attempt(s): %s",
                message.id,
                message.channel,
                message.attempts,
                error,
            )
        else:
            log.warning(
                "outbox message %s (%s) attempt %d failed, next at %s: %s",
                message.id,
                message.channel,
                message.attempts,
                later.isoformat(timespec="seconds"),
                error,
            )

    async def run(self) -> None:
        """Loop until ``stop``: a round, then wait for the poll interval or a wake-up; the
        retention purge runs beside it."""
        purger = None
        if self.settings is not None:
            purger = asyncio.create_task(self._retention_loop(), name="retention-purge")
        try:
            await self._run_outbox()
        finally:
            if purger is not None:
                # A purge cut short loses only its current chunk's transaction (rolled back);
                # the next run takes it up again.
                purger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purger
            await self.turns.close()

    async def _run_outbox(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                claimed = await self.run_once()
            except Exception:
                log.exception("outbox worker round failed; trying again in %s s", self.poll_seconds)
                claimed = 0
            try:
                await self.housekeeping()
            except Exception:
                log.exception("call-back expiry failed; trying again in a minute")
            await readiness.beat(self.sessionmaker, self.settings, self.clock())
            if self._stopping:
                break
            if claimed >= self.batch_size:
                continue  # more may be waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)


async def stop_task(worker: Worker, task: asyncio.Task[None], grace: float) -> None:
    """Ask the worker to stop and wait for its current message; cancel it after ``grace`` s.

    A cancelled send leaves its message ``sending``; it is claimed again when the lease expires.
    """
    worker.stop()
    done, _pending = await asyncio.wait({task}, timeout=grace)
    if not done:
        log.warning("outbox worker still busy after %s s at shutdown: cancelling it", grace)
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _standalone(settings: Settings, batch_size: int, lease: timedelta) -> None:
    engine = make_engine(settings.database_url)
    notifier = Notifier.from_settings(settings)
    dispatcher = Dispatcher()
    worker = Worker(
        make_sessionmaker(engine, settings, dispatcher),
        notifier,
        poll_seconds=settings.outbox_poll_seconds,
        batch_size=batch_size,
        lease=lease,
        settings=settings,
    )
    dispatcher.subscribe(OutboxWritten, worker.woken)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    log.info(
        "outbox worker started: e-mail %s, SMS %s, poll %s s, batch %d, lease %s s",
        settings.email_backend,
        settings.sms_backend,
        settings.outbox_poll_seconds,
        batch_size,
        lease.total_seconds(),
    )
    try:
        await worker.run()
    finally:
        await notifier.close()
        await engine.dispose()
    log.info("outbox worker stopped")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m server.worker``: the worker alone, settings from PERMANENCE_*."""
    parser = argparse.ArgumentParser(prog="python -m server.worker", description=__doc__)
    parser.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE, help="messages claimed per round"
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=DEFAULT_LEASE.total_seconds(),
        help="how long a claim lasts before another worker may take the message over; half of "
        "it must exceed the slowest send (SMTP: 20 s timeout + 5 s QUIT; Brevo: 15 s)",
    )
    args = parser.parse_args(argv)
    if args.batch_size <= 0 or args.lease_seconds <= 0:
        parser.error("--batch-size and --lease-seconds must be positive")
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(str(exc)) from exc
    configure_logging(settings)  # LOG_LEVEL and LOG_FORMAT, as `serve` does
    asyncio.run(_standalone(settings, args.batch_size, timedelta(seconds=args.lease_seconds)))


if __name__ == "__main__":
    main()
