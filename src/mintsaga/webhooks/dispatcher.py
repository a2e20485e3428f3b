"""The webhook dispatcher: pushes every recorded notice to every WEBHOOK_URL, signed, in order
per mint, at least once, beside the worker and never inside a mint.

One asyncio task per worker (``dispatching``, started by the worker when WEBHOOK_URL is set).
Each round (every ``poll_s``, 1 s; at once again after a round that sent something):

1. ``enqueue``: the notices recorded since each endpoint's cursor become pending deliveries.
2. ``claim``: due deliveries, fleet-wide, ``FOR UPDATE SKIP LOCKED`` (several workers share the
   work, none sends the same row at once), never a notice while an earlier one of the same mint
   to the same endpoint is pending (db/webhook_deliveries.py).
3. Each is POSTed (at most ``concurrency`` at once) with the Standard Webhooks headers
   (webhooks/signing.py): no redirects followed (the spec: "3xx: Failure"), a 30 s timeout
   (the spec: "A recommended request timeout value for webhooks is somewhere between 15 and
   30s"), the answer's body read at most 16 KiB and dropped.
4. The outcome is stored: delivered (2xx), tried again later on the schedule
   (webhooks/schedule.py: 5 s doubling to 1 h, jitter, Retry-After honoured), or failed (a day
   after the notice, or 410 Gone at once).

A mint never waits for any of this: the workflow only records its notices (``record_notice``),
and a backend that is down only grows the backlog (``mintsaga_webhook_backlog``, the
MintsagaWebhookBacklog alert). A worker that stops mid-send leaves its claimed rows to be sent
again after their lease: a receiver de-duplicates by ``webhook-id``.

Logs name the endpoint by ``endpoint_name`` and the event by its id; secrets (the signing
secrets, keys in a URL) are never logged or stored: errors are scrubbed before either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from mintsaga.db.webhook_deliveries import ClaimedDelivery, WebhookDeliveryStore
from mintsaga.errors import MASK, endpoint_name, url_secrets
from mintsaga.observability.logging import add_secret
from mintsaga.observability.metrics import (
    record_webhook_attempt,
    serving,
    set_webhook_backlog,
)
from mintsaga.observability.sampler import INTERVAL_S as SAMPLE_INTERVAL_S
from mintsaga.observability.sampler import every
from mintsaga.settings import WEBHOOK_SECRET_PREFIX, Settings
from mintsaga.webhooks.schedule import DEFAULT_SCHEDULE, RetrySchedule, outcome_of, retry_after_s
from mintsaga.webhooks.signing import Signer

__all__ = ["Dispatcher", "dispatching", "sample_backlog"]

log = logging.getLogger("mintsaga.webhooks")

POLL_S = 1.0
# Deliveries claimed per round: no more than are sent at once, so a round (one attempt each,
# at most ATTEMPT_DEADLINE_S) ends well within the claim's LEASE_S.
BATCH = 10
ENQUEUE_BATCH = 500  # notices turned into deliveries per read of the feed
CONCURRENCY = 10  # POSTs in flight per worker
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
ATTEMPT_DEADLINE_S = 45.0  # a receiver trickling its answer is cut here
LEASE_S = 120.0  # a claimed delivery is due again after this if its worker never answers
RESPONSE_READ_MAX = 16 * 1024
ERROR_MAX = 300
STOP_GRACE_S = 10.0
POOL_SIZE = 3  # the dispatcher's own connections to Postgres


class Dispatcher:
    """Delivers the notices to ``urls`` (see the module doc); ``tick`` is one round."""

    def __init__(
        self,
        store: WebhookDeliveryStore,
        urls: Sequence[str],
        secrets: Sequence[str],
        *,
        http: httpx.AsyncClient,
        schedule: RetrySchedule = DEFAULT_SCHEDULE,
        poll_s: float = POLL_S,
        batch: int = BATCH,
        concurrency: int = CONCURRENCY,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._urls: dict[str, str] = {}
        for url in urls:
            name = endpoint_name(url)
            if name in self._urls:
                raise ValueError(f"WEBHOOK_URL: two URLs are both known as {name}")
            self._urls[name] = url
        if not self._urls:
            raise ValueError("Dispatcher: no WEBHOOK_URL to deliver to")
        self._signer = Signer(secrets)
        self._http = http
        self._schedule = schedule
        self._poll_s = poll_s
        self._batch = batch
        self._slots = asyncio.Semaphore(concurrency)
        self._rng = rng or random.Random()
        # What must never be stored or logged: the secrets, and the keys in the URLs.
        hidden = [s for s in secrets if s] + [
            s.removeprefix(WEBHOOK_SECRET_PREFIX) for s in secrets
        ]
        for url in urls:
            hidden += url_secrets(url)
        self._hidden = sorted({h for h in hidden if h}, key=len, reverse=True)
        for value in self._hidden:
            add_secret(value)

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(self._urls)

    def scrub(self, text: str) -> str:
        """``text`` without a configured URL's key or a secret, bounded."""
        for name, url in self._urls.items():
            text = text.replace(url, name)
        for value in self._hidden:
            text = text.replace(value, MASK)
        return text[:ERROR_MAX]

    async def tick(self) -> int:
        """One round: enqueue, claim, send, record. Returns how many deliveries it tried."""
        for endpoint in self._urls:
            give_up_after = self._schedule.give_up_after
            while (
                await self._store.enqueue(
                    endpoint, give_up_after=give_up_after, limit=ENQUEUE_BATCH
                )
                >= ENQUEUE_BATCH
            ):
                pass
        claimed = await self._store.claim(list(self._urls), limit=self._batch, lease_s=LEASE_S)
        if claimed:
            await asyncio.gather(*(self._deliver(one) for one in claimed))
        return len(claimed)

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop`` is set; a failed round (the database away) is logged once and
        tried again after the poll interval."""
        failing = False
        while not stop.is_set():
            tried = 0
            try:
                tried = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("webhook dispatch failed: %s", self.scrub(str(exc)))
                failing = True
            else:
                if failing:
                    log.info("webhook dispatch works again")
                failing = False
            if tried:
                continue  # a mint's next notice may be due now that this one is answered
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._poll_s)

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        async with self._slots:
            status, error, retry_after = await self._post(delivery)
        outcome = outcome_of(status)
        delay = 0.0
        if not outcome.delivered and not outcome.stop:
            delay = self._schedule.delay_s(delivery.attempt, retry_after=retry_after, rng=self._rng)
        state = await self._store.record_attempt(
            delivery,
            delivered=outcome.delivered,
            status=status,
            error=error,
            retry_in_s=delay,
            stop=outcome.stop,
        )
        label = "delivered" if outcome.delivered else ("gone" if outcome.stop else "failed")
        record_webhook_attempt(delivery.endpoint, label)
        fields: dict[str, Any] = {
            "endpoint": delivery.endpoint,
            "event_id": delivery.notice.id,
            "mint_id": delivery.notice.data.get("mint_id"),
            "attempt": delivery.attempt,
            "state": state,
        }
        if outcome.delivered:
            log.info("webhook %s delivered", delivery.notice.id, extra=fields)
        elif state == "failed":
            log.warning(
                "webhook %s given up after %d attempts: %s",
                delivery.notice.id,
                delivery.attempt,
                error,
                extra=fields,
            )
        else:
            log.info(
                "webhook %s not delivered (%s); next attempt in %.0f s",
                delivery.notice.id,
                error,
                delay,
                extra=fields,
            )

    async def _post(self, delivery: ClaimedDelivery) -> tuple[int | None, str | None, float | None]:
        """(status, error, Retry-After seconds) of one POST; status None when none came."""
        url = self._urls[delivery.endpoint]
        body = delivery.notice.body_bytes()
        headers = self._signer.headers(delivery.notice.id, body)
        try:
            async with asyncio.timeout(ATTEMPT_DEADLINE_S):
                async with self._http.stream("POST", url, content=body, headers=headers) as answer:
                    read = 0
                    async for chunk in answer.aiter_raw():  # dropped: only the status counts
                        read += len(chunk)
                        if read >= RESPONSE_READ_MAX:
                            break
        except TimeoutError:
            return None, f"no answer within {ATTEMPT_DEADLINE_S:.0f} s", None
        except httpx.HTTPError as exc:
            detail = str(exc).strip()
            text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
            return None, self.scrub(text), None
        status = answer.status_code
        if 200 <= status < 300:
            return status, None, None
        error = f"HTTP {status} {answer.reason_phrase}".strip()
        if 300 <= status < 400:
            error += " (redirects are not followed: set WEBHOOK_URL to the final URL)"
        return status, self.scrub(error), retry_after_s(answer.headers.get("retry-after"))


async def sample_backlog(store: WebhookDeliveryStore) -> None:
    """Set the webhook gauges from the deliveries table (fleet-wide)."""
    backlog = await store.backlog()
    set_webhook_backlog(
        pending=backlog.pending, oldest_pending_s=backlog.oldest_pending_s, failed=backlog.failed
    )


@contextlib.asynccontextmanager
async def dispatching(
    settings: Settings, *, schedule: RetrySchedule = DEFAULT_SCHEDULE
) -> AsyncIterator[Dispatcher]:
    """Run a dispatcher for ``settings.webhook_urls`` while the block runs (and sample its
    gauges when /metrics is served); on the way out, the round in progress gets
    ``STOP_GRACE_S`` to finish, then it is cancelled (its claims are sent again later).

    The deliveries go through a pool of their own (``POOL_SIZE`` connections), so a backend
    that is slow or down never takes a connection a mint's activity is waiting for."""
    store = await WebhookDeliveryStore.connect(
        settings.database_url.get_secret_value(), max_size=POOL_SIZE
    )
    async with (
        contextlib.AsyncExitStack() as closing,
        httpx.AsyncClient(timeout=REQUEST_TIMEOUT, follow_redirects=False) as http,
    ):
        closing.push_async_callback(store.close)
        dispatcher = Dispatcher(
            store,
            settings.webhook_urls,
            [s.get_secret_value() for s in settings.webhook_secrets],
            http=http,
            schedule=schedule,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop), name="webhook dispatcher")
        log.info("webhook dispatcher started for %s", ", ".join(dispatcher.endpoints))
        try:
            if serving():
                async with every(
                    SAMPLE_INTERVAL_S, lambda: sample_backlog(store), name="webhook deliveries"
                ):
                    yield dispatcher
            else:
                yield dispatcher
        finally:
            stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_GRACE_S)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            log.info("webhook dispatcher stopped")
