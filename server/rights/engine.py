"""The process pool that runs OpenFisca-France, off the event loop.

OpenFisca-France takes about 3 s to load and 1–2 s of CPU per household (``DESIGN.md``): run on
the event loop, one check would freeze every room of the node. So each server process owns a
bounded pool of worker processes, started and warmed with the application:

- **Start method ``forkserver``**: a clean fork server (no threads, no event loop) imports
  ``server.rights.preload``, which loads the model and computes one household; every worker is
  forked from it, already warm. A cold start costs one model load; replacing a dead worker costs a
  fork.
- **Bounded**: ``workers`` processes, and at most ``queue_max`` checks in flight on this node;
  past that a check is refused at once ("réessayez dans une minute") rather than queued for
  minutes.
- **Recovering**: if a worker dies (killed, out of memory) the pool is broken: the checks it held
  get a French error, and the next check finds a new pool. A check over ``timeout`` seconds gets
  the same error and its pool is replaced (a stuck worker must not hold a slot for ever).

With several nodes each node has its own pool; nothing here needs sharing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from server.errors import DomainError, Kind
from server.i18n import _
from server.metrics import RIGHTS_CHECK_SECONDS, RIGHTS_CHECKS, RIGHTS_POOL_RESTARTS
from server.rights import compute

log = logging.getLogger(__name__)

PRELOAD = "server.rights.preload"
# A worker's memory grows with the checks it computes (OpenFisca's caches: 181 MB USS after 9
# checks, 229 MB after 33, BENCHMARKS.md "Rights check"); after this many checks per worker the
# pool is replaced by fresh forks of the warm fork server, which cost milliseconds.
TASKS_PER_WORKER = 50


class EngineUnavailable(DomainError):
    """No check can run now: the pool is off (``RIGHTS_WORKERS=0``), failed to start, busy, or
    a check failed in it."""

    default_kind = Kind.UNAVAILABLE


def _off() -> EngineUnavailable:
    return EngineUnavailable(
        "rights_off", _("La vérification des droits n'est pas disponible sur ce serveur.")
    )


def _busy() -> EngineUnavailable:
    return EngineUnavailable(
        "rights_busy",
        _("Beaucoup de vérifications sont en cours. Réessayez dans une minute."),
    )


def _failed() -> EngineUnavailable:
    return EngineUnavailable(
        "rights_failed",
        _(
            "Le calcul n'a pas abouti. Réessayez : si cela recommence, prévenez la "
            "coordination de l'association."
        ),
    )


class RightsEngine:
    """A warm pool of OpenFisca-France processes (see the module docstring)."""

    def __init__(
        self,
        workers: int,
        *,
        timeout: float = 30.0,
        queue_max: int | None = None,
        start_method: str = "forkserver",
    ) -> None:
        if workers < 1:
            raise ValueError("a rights engine needs at least one worker")
        self.workers = workers
        self.timeout = timeout
        self.queue_max = queue_max if queue_max is not None else workers * 8
        self.version = compute.version()
        self._start_method = start_method
        self._executor: ProcessPoolExecutor | None = None
        # The warm-up jobs of the current pool: concurrent futures, awaitable from any event
        # loop (the tests share one engine between their loops).
        self._warm: list[Future[dict[str, Any]]] = []
        self._in_flight = 0
        self._done = 0  # checks the current pool answered
        self._closed = False
        self.started = 0  # pools started (1 + replacements): tests, metrics
        self.cold_seconds: float | None = None  # how long the first pool took to be ready

    # -- life ------------------------------------------------------------------------------

    def _start_pool(self) -> None:
        """A new pool, its workers asked to answer once (loading the model if the fork server
        did not)."""
        context = multiprocessing.get_context(self._start_method)
        if self._start_method == "forkserver":
            # One fork server per Python process, started by the first pool: it imports the
            # preload module (the model, warm) before forking any worker. It dies with the
            # thread that started it (compute.die_with_parent): start pools from the event
            # loop's thread, never from a short-lived one.
            context.set_forkserver_preload([PRELOAD])
        started = time.perf_counter()
        # Not ``max_tasks_per_child``: with it Python 3.11's pool hangs once a worker has done
        # its share (measured); ``_recycle`` replaces the whole pool instead.
        executor = self._executor = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=context, initializer=compute.die_with_parent
        )
        self._done = 0
        self.started += 1
        warm = self._warm = [executor.submit(compute.ready) for _ in range(self.workers)]

        def done(_: Future[dict[str, Any]]) -> None:
            if all(f.done() and not f.cancelled() and f.exception() is None for f in warm):
                seconds = time.perf_counter() - started
                if self.cold_seconds is None:
                    self.cold_seconds = seconds
                log.info(
                    "rights engine: %d worker(s) ready in %.1f s (%s %s)",
                    self.workers,
                    seconds,
                    compute.MODEL,
                    self.version,
                )

        for future in warm:
            future.add_done_callback(done)

    def start_in_background(self) -> None:
        """Start the pool without waiting (application start-up: the server listens while the
        model loads; an early check waits for it)."""
        if self._closed:
            raise RuntimeError("this rights engine was closed")
        if self._executor is None:
            self._start_pool()

    async def start(self) -> None:
        """Start the pool and wait until every worker answers (the model loaded)."""
        self.start_in_background()
        await asyncio.gather(*(asyncio.wrap_future(future) for future in self._warm))

    @property
    def ready(self) -> bool:
        return self._executor is not None and all(
            f.done() and not f.cancelled() and f.exception() is None for f in self._warm
        )

    def worker_pids(self) -> list[int]:
        """The live worker processes (tests kill one; the benchmark measures their memory)."""
        processes = getattr(self._executor, "_processes", None) or {}
        return [pid for pid, process in processes.items() if process.is_alive()]

    def shutdown(self) -> None:
        """Stop the pool and wait for its processes to exit (blocking)."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    async def close(self) -> None:
        """``shutdown`` off the event loop (application shutdown)."""
        await asyncio.get_running_loop().run_in_executor(None, self.shutdown)

    def _replace(self, broken: ProcessPoolExecutor, *, kill: bool) -> None:
        """Drop ``broken`` (killing its processes when they still run: a check that timed out)
        and start a new pool, unless another check already did."""
        if self._executor is not broken or self._closed:
            return
        if kill:
            for process in list(getattr(broken, "_processes", {}).values()):
                with contextlib.suppress(Exception):
                    process.kill()
        broken.shutdown(wait=False, cancel_futures=True)
        RIGHTS_POOL_RESTARTS.inc()
        self._start_pool()

    def _recycle(self) -> None:
        """Replace a pool that has done its share of checks by a fresh one (forked warm); the
        old one finishes what it holds and exits."""
        old = self._executor
        if old is None or self._closed or self._start_method != "forkserver":
            return
        self._start_pool()
        old.shutdown(wait=False)
        log.info("rights engine: pool renewed after %d checks", self.workers * TASKS_PER_WORKER)

    # -- work ------------------------------------------------------------------------------

    async def calculate(
        self, situation: dict[str, Any], variables: Sequence[tuple[str, str]]
    ) -> dict[str, Any]:
        """Compute ``variables`` for ``situation`` in a worker (``compute.calculate``).
        EngineUnavailable, in French, when it cannot."""
        executor = self._executor
        if self._closed or executor is None:
            raise _off()
        if self._in_flight >= self.queue_max:
            RIGHTS_CHECKS.labels("busy").inc()
            raise _busy()
        self._in_flight += 1
        started = time.perf_counter()
        try:
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(asyncio.wrap_future(f) for f in self._warm)), self.timeout
                )
            except Exception as exc:
                log.error("rights engine: the pool did not start: %r", exc)
                self._replace(executor, kill=True)
                raise _failed() from exc
            # The pool may have been replaced meanwhile (another check saw a worker die).
            executor = self._executor
            if executor is None:
                raise _off()
            loop = asyncio.get_running_loop()
            try:
                future = loop.run_in_executor(
                    executor, compute.calculate, situation, tuple(variables)
                )
                out: dict[str, Any] = await asyncio.wait_for(future, self.timeout)
            except BrokenProcessPool as exc:
                log.error("rights engine: a worker died; starting a new pool")
                self._replace(executor, kill=False)
                raise _failed() from exc
            except TimeoutError as exc:
                log.error("rights engine: a check took over %.0f s; new pool", self.timeout)
                self._replace(executor, kill=True)
                raise _failed() from exc
            except Exception as exc:  # the model refused the situation: our bug, logged
                log.exception("rights engine: the check failed in the model")
                raise _failed() from exc
            RIGHTS_CHECKS.labels("ok").inc()
            RIGHTS_CHECK_SECONDS.observe(time.perf_counter() - started)
            if executor is self._executor:
                self._done += 1
                if self._done >= self.workers * TASKS_PER_WORKER:
                    self._recycle()
            return out
        except EngineUnavailable as exc:
            if exc.code == "rights_failed":
                RIGHTS_CHECKS.labels("failed").inc()
            raise
        finally:
            self._in_flight -= 1
