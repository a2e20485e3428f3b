"""MintSaga: mint Solana NFTs through a Temporal saga that keeps minting through network failures.

The public surface for a backend (everything in ``__all__``)::

    import mintsaga

    client = await mintsaga.connect()  # TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, ...
    handle = await mintsaga.start_mint(client, mintsaga.MintRequest.model_validate(body))
    result: mintsaga.MintResult = await handle.result()

Names resolve on first use, so ``import mintsaga`` stays cheap (a workflow sandbox or a CLI
that needs one module does not load the rest).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mintsaga.api.collections import CollectionCreated, create_collection, list_collections
    from mintsaga.api.errors import StarterError
    from mintsaga.api.events import list_events
    from mintsaga.api.mints import (
        compensate,
        connect,
        get_status,
        list_mints,
        retry,
        start_mint,
        task_queue,
    )
    from mintsaga.api.requests import request_from_json
    from mintsaga.api.stuck import stuck_mints
    from mintsaga.api.timeline import mint_timeline
    from mintsaga.notices import MintNotice, NoticeType
    from mintsaga.workflows.models import (
        Attribute,
        ErrorInfo,
        ImageRef,
        MintOptions,
        MintRequest,
        MintResult,
        MintStatus,
        RetryOverrides,
        StatusView,
        workflow_id_for,
    )

# name -> the module that defines it
_EXPORTS = {
    "CollectionCreated": "mintsaga.api.collections",
    "create_collection": "mintsaga.api.collections",
    "list_collections": "mintsaga.api.collections",
    "StarterError": "mintsaga.api.errors",
    "list_events": "mintsaga.api.events",
    "compensate": "mintsaga.api.mints",
    "connect": "mintsaga.api.mints",
    "get_status": "mintsaga.api.mints",
    "list_mints": "mintsaga.api.mints",
    "retry": "mintsaga.api.mints",
    "start_mint": "mintsaga.api.mints",
    "task_queue": "mintsaga.api.mints",
    "request_from_json": "mintsaga.api.requests",
    "stuck_mints": "mintsaga.api.stuck",
    "mint_timeline": "mintsaga.api.timeline",
    "MintNotice": "mintsaga.notices",
    "NoticeType": "mintsaga.notices",
    "Attribute": "mintsaga.workflows.models",
    "ErrorInfo": "mintsaga.workflows.models",
    "ImageRef": "mintsaga.workflows.models",
    "MintOptions": "mintsaga.workflows.models",
    "MintRequest": "mintsaga.workflows.models",
    "MintResult": "mintsaga.workflows.models",
    "MintStatus": "mintsaga.workflows.models",
    "RetryOverrides": "mintsaga.workflows.models",
    "StatusView": "mintsaga.workflows.models",
    "workflow_id_for": "mintsaga.workflows.models",
}

__all__ = [
    "Attribute",
    "CollectionCreated",
    "ErrorInfo",
    "ImageRef",
    "MintNotice",
    "MintOptions",
    "MintRequest",
    "MintResult",
    "MintStatus",
    "NoticeType",
    "RetryOverrides",
    "StarterError",
    "StatusView",
    "compensate",
    "connect",
    "create_collection",
    "get_status",
    "list_collections",
    "list_events",
    "list_mints",
    "mint_timeline",
    "request_from_json",
    "retry",
    "start_mint",
    "stuck_mints",
    "task_queue",
    "workflow_id_for",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mintsaga' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
