"""Mint requests for the devstack: a unique image in its MINT_IMAGE_DIR and a valid request
naming it. Shared by the tests, the benchmarks and the chaos run (one way to make them)."""

from __future__ import annotations

import itertools
import os
import uuid
from pathlib import Path
from typing import Any

from solders.keypair import Keypair

from devstack.config import StackConfig
from devstack.dev_identity import png
from mintsaga.workflows.models import MintRequest

_images = itertools.count(1)


def image_dir(stack: StackConfig) -> Path:
    """The folder the stack's workers read `image.path` from (MINT_IMAGE_DIR)."""
    return Path(stack.worker_env()["MINT_IMAGE_DIR"])


def new_image(stack: StackConfig, prefix: str = "test") -> str:
    """A PNG no other mint uses, written into MINT_IMAGE_DIR; returns its relative path."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}.png"
    (image_dir(stack) / name).write_bytes(png(16, 16, seed=next(_images) + os.getpid()))
    return name


def mint_request(stack: StackConfig, **overrides: Any) -> MintRequest:
    """A valid request with a fresh mint_id, user, wallet and image; `overrides` replace fields."""
    tag = uuid.uuid4().hex[:10]
    fields: dict[str, Any] = {
        "mint_id": f"t-{tag}",
        "user_id": f"user-{tag}",
        "wallet": str(Keypair().pubkey()),
        "name": f"Saga {tag[:6]}",
        "symbol": "SAGA",
        "description": "a test mint",
        "attributes": [{"trait_type": "tier", "value": "gold"}],
        "image": {"path": new_image(stack)},
    }
    fields.update(overrides)
    return MintRequest.model_validate(fields)
