"""One status poll for every pending mint of a worker (issue 15).

Each mint waiting for its transaction used to ask for its own signature status and the block
height every second: two requests a second per pending mint, which a hosted plan's limit (10
a second on Helius' free plan) caps at a handful of mints. Here the waits share rounds: each
round is one ``getSignatureStatuses`` per 256 signatures (the method's documented maximum,
solana.com/docs/rpc/http/getsignaturestatuses: "An array of transaction signatures to confirm,
... up to a maximum of 256") and, when some status needs it (``needs_height``: a transaction not
landed yet, for the expiry decision), one ``getBlockHeight``, whatever the number of waits. A
signature is asked at most every ``interval_s``; one not asked lately is asked at once, so a
fresh transaction is not held up by the others' pace. A wait whose status needs no height gets
None.

A wait joins the next round that has not started, and gets its signature's status and the
round's block height, or the round's error (every wait of a failed round sees it, as a wait
asking alone would have). Rounds run in a task of their own, outside any activity's context
(no heartbeat or deadline of one mint's attempt leaks into the others'); the waiting activity
heartbeats while it waits (``keep_alive``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

S = TypeVar("S")

MAX_SIGNATURES = 256
FORGET_AFTER_S = 60.0  # a signature not asked for this long counts as never asked
KEEP_ALIVE_EVERY_S = 2.0


class StatusPoller(Generic[S]):
    """Shared rounds of ``fetch_statuses`` (a batch of signatures) and ``fetch_height``."""

    def __init__(
        self,
        fetch_statuses: Callable[[list[str]], Awaitable[Sequence[S]]],
        fetch_height: Callable[[], Awaitable[int]],
        *,
        interval_s: float = 1.0,
        keep_alive: Callable[[], None] = lambda: None,
        needs_height: Callable[[S], bool] = lambda status: True,
    ) -> None:
        self._fetch_statuses = fetch_statuses
        self._fetch_height = fetch_height
        self._needs_height = needs_height
        self._interval_s = interval_s
        self._keep_alive = keep_alive
        # The next round's waits: signature -> the futures of the waits for it.
        self._waiting: dict[str, list[asyncio.Future[tuple[S, int | None]]]] = {}
        self._task: asyncio.Task[None] | None = None
        # When each signature was last asked: a wait for it joins a round no sooner than
        # interval_s after that; a signature not asked lately is asked at once.
        self._asked_at: dict[str, float] = {}
        self._joined = asyncio.Event()  # a wait joined: the next round may be due sooner
        self.rounds = 0  # rounds run (for tests and the benchmark)

    async def poll(self, signature: str) -> tuple[S, int | None]:
        """``signature``'s status and the block height, from the next round."""
        future: asyncio.Future[tuple[S, int | None]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(signature, []).append(future)
        self._joined.set()
        if self._task is None or self._task.done():
            # A fresh context: the rounds belong to no activity.
            self._task = asyncio.get_running_loop().create_task(
                self._run(), context=contextvars.Context()
            )
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=KEEP_ALIVE_EVERY_S)
                if done:
                    return future.result()
                self._keep_alive()
        finally:
            if not future.done():  # the wait was cancelled: leave the round without it
                future.cancel()  # a round under way skips it (nobody would read its answer)
                waits = self._waiting.get(signature, [])
                if future in waits:
                    waits.remove(future)
                    if not waits:
                        del self._waiting[signature]

    def _due(self) -> float:
        """When the next round is due: as soon as some waiting signature was last asked
        ``interval_s`` ago (at once for one not asked lately)."""
        never = -float("inf")
        return min(self._asked_at.get(sig, never) for sig in self._waiting) + self._interval_s

    async def _run(self) -> None:
        while self._waiting:
            self._joined.clear()
            pause = self._due() - time.monotonic()
            if pause > 0:
                # A wait for a signature not asked lately wakes the loop early.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._joined.wait(), pause)
                continue
            waiting, self._waiting = self._waiting, {}
            if not waiting:
                continue
            now = time.monotonic()
            for signature in waiting:
                self._asked_at[signature] = now
            for old in [sig for sig, at in self._asked_at.items() if at < now - FORGET_AFTER_S]:
                del self._asked_at[old]
            self.rounds += 1
            try:
                await self._round(waiting)
            except BaseException as exc:
                # A round that broke (or was cancelled) must not strand its waits: each gets
                # the error, as a failed call would have given it.
                failure = exc if isinstance(exc, Exception) else RuntimeError("round cancelled")
                for futures in waiting.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(failure)
                if not isinstance(exc, Exception):
                    raise

    async def _round(self, waiting: dict[str, list[asyncio.Future[tuple[S, int | None]]]]) -> None:
        signatures = list(waiting)
        batches = [
            signatures[i : i + MAX_SIGNATURES] for i in range(0, len(signatures), MAX_SIGNATURES)
        ]
        batch_tasks = [asyncio.ensure_future(self._fetch_statuses(batch)) for batch in batches]
        await asyncio.wait(batch_tasks)
        answers: list[tuple[list[str], Sequence[S] | None, BaseException | None]] = []
        for batch, task in zip(batches, batch_tasks, strict=True):
            error = task.exception()
            statuses = None if error is not None else task.result()
            if statuses is not None and len(statuses) != len(batch):
                error = ValueError(
                    f"getSignatureStatuses answered {len(statuses)} statuses for {len(batch)}"
                )
                statuses = None
            answers.append((batch, statuses, error))
        # The block height only when some status needs it (the expiry decision).
        height: int | None = None
        height_error: BaseException | None = None
        if any(
            statuses is not None and any(self._needs_height(s) for s in statuses)
            for _, statuses, _ in answers
        ):
            try:
                height = await self._fetch_height()
            except Exception as exc:  # every wait that needed it sees it, as when asking alone
                height_error = exc
        for batch, statuses, error in answers:
            for index, signature in enumerate(batch):
                status = None if statuses is None else statuses[index]
                failure = error
                if failure is None and status is not None and self._needs_height(status):
                    failure = height_error
                for future in waiting[signature]:
                    if future.done():
                        continue
                    if failure is not None:
                        future.set_exception(failure)
                    else:
                        assert status is not None
                        future.set_result((status, height))
