"""A `MintRequest` from a backend's JSON, every bad field named in one `StarterError`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mintsaga.api.errors import StarterError
from mintsaga.api.image_urls import (
    check_image_url,
)
from mintsaga.api.mints import check_priority_fee
from mintsaga.workflows.models import (
    MintRequest,
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
        problems = "; ".join(_named_problem(error) for error in exc.errors())
        raise StarterError(f"invalid request, nothing started: {problems}") from exc


def _named_problem(error: Any) -> str:
    """`attributes[3].value: at most 256 characters`: the field first, as the request spells it."""
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    field = field.removeprefix(".") or "request"
    message = str(error["msg"]).removeprefix("Value error, ")
    # The model's own messages already start with the field (`image.url: ...`).
    return message if message.startswith(field) else f"{field}: {message}"
