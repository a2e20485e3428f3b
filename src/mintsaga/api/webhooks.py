"""Webhook deliveries for operators: list them, and send failed ones again.

They live in Postgres (DATABASE_URL, or DATABASE_URL_FILE), as the runtime switches do
(`api/switches.py`); the dispatcher in each worker picks a requeued delivery up within a
second. docs/webhooks.md says what the states mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from mintsaga.api.errors import StarterError
from mintsaga.api.switches import database_url
from mintsaga.db.webhook_deliveries import DeliveryRow, WebhookDeliveryStore, notice_cursor

__all__ = ["RETRY_GIVE_UP_AFTER", "delivery_store", "list_deliveries", "retry_deliveries"]

# A requeued delivery is tried on the usual schedule for another day.
RETRY_GIVE_UP_AFTER = timedelta(days=1)


async def delivery_store(url: str | None = None) -> WebhookDeliveryStore:
    """A store with a small pool of its own: close it after use."""
    return await WebhookDeliveryStore.connect(url or database_url())


async def list_deliveries(
    store: WebhookDeliveryStore,
    *,
    state: str | None = None,
    mint_id: str | None = None,
    limit: int = 100,
) -> list[DeliveryRow]:
    """Deliveries, newest notice first (at most ``limit``), of one state and/or one mint."""
    try:
        return await store.deliveries(state=state, mint_id=mint_id, limit=limit)
    except ValueError as exc:
        raise StarterError(f"webhooks list: {exc}") from None


async def retry_deliveries(
    store: WebhookDeliveryStore, event_ids: Sequence[str] = (), *, every_failed: bool = False
) -> list[DeliveryRow]:
    """Failed deliveries of ``event_ids`` (``evt_N``), or every failed one, back to pending and
    due now. Returns the rows requeued (an id with no failed delivery requeues nothing)."""
    if every_failed == bool(event_ids):
        raise StarterError("webhooks retry: name event ids (evt_N ...) or pass --failed")
    try:
        cursors = [notice_cursor(event_id) for event_id in event_ids]
    except ValueError as exc:
        raise StarterError(f"webhooks retry: {exc}") from None
    return await store.retry(None if every_failed else cursors, give_up_after=RETRY_GIVE_UP_AFTER)
