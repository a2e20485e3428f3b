"""Standard Webhooks delivery of the mint notices (issue 17; docs/webhooks.md).

signing     the webhook-id / webhook-timestamp / webhook-signature headers
schedule    the retry schedule and what each answer means (pure)
dispatcher  the loop beside the worker: enqueue, claim, POST, record
"""

from mintsaga.webhooks.dispatcher import Dispatcher, dispatching, sample_backlog
from mintsaga.webhooks.schedule import DEFAULT_SCHEDULE, RetrySchedule, outcome_of
from mintsaga.webhooks.signing import Signer

__all__ = [
    "DEFAULT_SCHEDULE",
    "Dispatcher",
    "RetrySchedule",
    "Signer",
    "dispatching",
    "outcome_of",
    "sample_backlog",
]
