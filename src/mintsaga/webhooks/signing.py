"""Standard Webhooks signatures: the headers one message carries.

Spec (https://github.com/standard-webhooks/standard-webhooks, spec/standard-webhooks.md,
"Signature scheme" and "Webhook headers"): the content signed is ``{msg_id}.{timestamp}.{payload}``
with HMAC-SHA256 under the secret (``whsec_`` + base64 of 24 to 64 random bytes), serialized
``v1,<base64 signature>``; the headers are ``webhook-id`` (the message id, the same on every
retry: the receiver's idempotency key), ``webhook-timestamp`` (integer Unix seconds of *this
attempt*, so a receiver can refuse replays) and ``webhook-signature``, a space-separated list
with one signature per secret, for rotation without downtime.

The HMAC itself is the ``standardwebhooks`` package's (the specification authors' Python
library): receivers verify with it or one of its ports, so we sign as they verify. The body
signed is the exact bytes sent (``MintNotice.body_bytes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

__all__ = ["Signer"]


class Signer:
    """Signs messages with every configured secret (rotation: the new one and the old ones)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("Signer: at least one webhook secret is needed (WEBHOOK_SECRET)")
        self._hooks = tuple(Webhook(secret) for secret in secrets)

    def __repr__(self) -> str:
        return f"Signer({len(self._hooks)} secrets)"  # never the secrets

    def headers(self, msg_id: str, body: bytes, *, now: datetime | None = None) -> dict[str, str]:
        """The ``webhook-*`` headers (and the JSON content type) for one attempt."""
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        signatures = " ".join(hook.sign(msg_id, moment, body) for hook in self._hooks)
        return {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": signatures,
        }
