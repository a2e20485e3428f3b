"""The devstack's Temporal dev server answers, with the search attributes MintSaga sets."""

from __future__ import annotations

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from devstack.config import StackConfig

pytestmark = pytest.mark.integration


async def test_mint_search_attributes_are_registered_as_keywords(stack: StackConfig) -> None:
    client = await Client.connect(stack.temporal_address)
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    for name in ("MintStage", "MintStatus"):
        assert listed.custom_attributes.get(name) == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
