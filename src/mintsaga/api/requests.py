"""A `MintRequest` from a backend's JSON, every bad field named in one `StarterError`."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from mintsaga.api.errors import StarterError
from mintsaga.api.image_urls import (
    check_image_url,
)
from mintsaga.api.mints import check_priority_fee
from mintsaga.workflows.models import (
    MintRequest,
    request_problems,
)


def load_request(path: Path) -> MintRequest:
    """The request in a JSON file, checked as `start_mint` checks it (with this environment)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise StarterError(f"--request: cannot read {path}: {exc.strerror}") from exc
    request = request_from_json(text, source=f"--request: {path}")
    check_image_url(request)
    check_priority_fee(request)
    return request


def request_from_json(text: str | bytes, *, source: str = "request") -> MintRequest:
    """A `MintRequest` from a backend's JSON; a `StarterError` names every bad field."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StarterError(f"{source} is not JSON: {exc}; nothing started") from exc
    try:
        return MintRequest.model_validate(raw)
    except ValidationError as exc:
        raise StarterError(f"invalid request, nothing started: {request_problems(exc)}") from exc
