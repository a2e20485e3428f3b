"""Running a statement on the pool: the one place both Postgres stores get a connection, classify
what fails and retry what the spec lets a call retry itself.

    Executor.run        through the database's breaker (when attached), with the lost-connection
                        retry; the mint store's path, inside the saga's activities
    Executor.attempt    one pooled connection and the deadlock rule; no breaker, no metrics:
                        the runtime settings' path (the CLI, the worker's poll)

Two retries happen inside a call, both from the spec; every other retry is Temporal's:

- ``deadlock_detected`` / ``serialization_failure``: one immediate retry after a random
  100-500 ms pause.
- a connection lost under a statement: "connection error → exponential backoff (0.5 s, 1 s,
  2 s)", the statement running again on a fresh connection, only when the current activity
  attempt has the time (``resilience.guard.attempt_time_left``; every operation is idempotent,
  as Temporal's own retries already require).

A connection that failed is terminated before it goes back, so the pool replaces it and the
retried call gets a fresh one. Failures are classified by :func:`mintsaga.db.errors.classify_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import asyncpg.exceptions as pgexc

from mintsaga.db.errors import SERVICE, Phase, classify_error, endpoint_and_secrets
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.resilience.breaker import CircuitBreaker
from mintsaga.resilience.guard import QUEUE_MARGIN_S, attempt_time_left, through

__all__ = [
    "CONNECTION_LOST",
    "CONNECTION_RETRY_PAUSES_S",
    "Executor",
    "Work",
    "close_pool",
    "create_pool",
]

T = TypeVar("T")
Work = Callable[[asyncpg.Connection], Awaitable[T]]

# A statement's connection went away under it: the operation may run again on a fresh one.
CONNECTION_LOST = frozenset(
    {"ConnectionLost", "ConnectionReset", "ConnectionClosed", "ConnectionError"}
)
CONNECTION_RETRY_PAUSES_S = (0.5, 1.0, 2.0)  # the spec's "exponential backoff (0.5s, 1s, 2s)"
log = logging.getLogger(__name__)


async def create_pool(dsn: str, **options: Any) -> asyncpg.Pool:
    """An asyncpg pool, or the classified failure to open one (the password never shown)."""
    endpoint, secrets = endpoint_and_secrets(dsn)
    try:
        return await asyncpg.create_pool(dsn, **options)
    except Exception as exc:
        raise classify_error(exc, during="connect", endpoint=endpoint, secrets=secrets) from exc


async def close_pool(pool: asyncpg.Pool, *, grace: float) -> None:
    """Close gracefully; connections still busy after ``grace`` seconds are cut."""
    try:
        await asyncio.wait_for(pool.close(), grace)
    except TimeoutError:
        pool.terminate()


class Executor:
    """Runs a store's statements on ``pool``; every failure leaves as a ``ServiceError``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        endpoint: str | None = None,
        secrets: Sequence[str] = (),
        acquire_timeout: float,
        passthrough: tuple[type[BaseException], ...] = (),
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """Wrap ``pool``.

        Args:
            pool: the connections (shared between stores; the executor never closes it).
            endpoint: the database URL without credentials, named in errors and by the breaker.
            secrets: strings scrubbed from error messages (see ``endpoint_and_secrets``).
            acquire_timeout: how long a call waits for a pooled connection.
            passthrough: exceptions a store's work raises that are not the database's, carried
                up unclassified (``ServiceError`` always is).
            sleep: waits out the retry pauses; rng: draws them (tests pass fakes).
        """
        self.pool = pool
        self.endpoint = endpoint
        self._secrets = tuple(secrets)
        self._acquire_timeout = acquire_timeout
        self._passthrough: tuple[type[BaseException], ...] = (ServiceError, *passthrough)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.breaker: CircuitBreaker | None = None  # the store attaches it (MintStore.guard)

    async def run(self, work: Work[T]) -> T:
        """:meth:`attempt` through the database's circuit breaker, when one is attached: after
        3 connection failures in a row calls fail at once for 10 s (the spec's DB breaker).

        A connection lost under a statement is the spec's "connection error → exponential
        backoff (0.5 s, 1 s, 2 s)": inside an activity attempt with the time, the operation
        runs again on a fresh connection after each pause, each try passing the breaker.
        Outside an activity, or without the time, the error goes up at once.
        """
        for pause in (*CONNECTION_RETRY_PAUSES_S, None):
            try:
                return await through(
                    self.breaker, SERVICE, lambda: self.attempt(work), endpoint=self.endpoint
                )
            except ServiceError as exc:
                if pause is None or not exc.connected or exc.code not in CONNECTION_LOST:
                    raise
                pause *= self._rng.uniform(0.8, 1.2)
                if pause + QUEUE_MARGIN_S > attempt_time_left():
                    raise
                log.info("%s; trying again on a fresh connection in %.1f s", exc.code, pause)
                await self._sleep(pause)
        raise AssertionError("unreachable: the last try returns or raises")

    async def attempt(self, work: Work[T]) -> T:
        """Run ``work`` on a pooled connection; classify what fails.

        Deadlocks and serialization failures get the spec's single immediate retry after a
        random 100-500 ms pause. A connection that failed is terminated before it goes back,
        so the pool opens a fresh one for the next call instead of handing out a broken one.
        """
        for attempt in (1, 2):
            try:
                conn = await self.pool.acquire(timeout=self._acquire_timeout)
            except Exception as exc:
                raise self.classify(exc, "acquire") from exc
            try:
                return await work(conn)
            except self._passthrough:
                raise  # already classified, or not the database's failure
            except (pgexc.DeadlockDetectedError, pgexc.SerializationError) as exc:
                if attempt == 2:
                    raise self.classify(exc, "query") from exc
            except Exception as exc:
                error = self.classify(exc, "query")
                if error.kind is ErrorKind.TRANSIENT:
                    # Already gone back to the pool if the socket died; then nothing to do.
                    with contextlib.suppress(pgexc.InterfaceError):
                        conn.terminate()
                raise error from exc
            finally:
                # The pool terminates a connection it cannot reset; our answer stands anyway.
                with contextlib.suppress(Exception):
                    await self.pool.release(conn)
            await self._sleep(self._rng.uniform(0.1, 0.5))
        raise AssertionError("unreachable: the second attempt returns or raises")

    def classify(self, exc: BaseException, during: Phase) -> ServiceError:
        """``classify_error`` naming this database, its secrets scrubbed."""
        return classify_error(exc, during=during, endpoint=self.endpoint, secrets=self._secrets)
