"""Pinata's ``GET /data/pinList`` filters, applied to the store's pin records.

Documented semantics: ``status`` all|pinned|unpinned (default all); ``cid``, "CID of file you
are searching for" in the current reference
(https://docs.pinata.cloud/api-reference/endpoint/list-files), which does not say exact or
substring: exact here, as the name says a CID, not a part of one; ``hashContains``, the older
guide's name (https://docs.pinata.cloud/pinning/listing-files), a substring of the CID as its
name says; ``metadata[name]`` substring of the name; ``metadata[keyvalues]`` a JSON object
``{"key": {"value": v, "op": "eq"}}`` (or one key per ``metadata[keyvalues][key]``
parameter); ``pageLimit`` 1..1000 (default 10), ``pageOffset``. Newest pins come first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from devstack.ipfs.store import Pin

MAX_PAGE = 1000
_OPS = {
    "eq", "ne", "gt", "gte", "lt", "lte", "between", "notBetween",
    "like", "notLike", "iLike", "notILike", "regexp", "iRegexp",
}  # fmt: skip


class FilterError(ValueError):
    """A query parameter Pinata would reject."""


@dataclass
class PinFilter:
    status: str = "all"
    hash_contains: str | None = None
    cid: str | None = None
    name: str | None = None
    keyvalues: dict[str, dict[str, Any]] = field(default_factory=dict)
    pin_size_min: int | None = None
    pin_size_max: int | None = None
    limit: int = 10
    offset: int = 0

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> PinFilter:
        f = cls()
        f.status = query.get("status", "all")
        if f.status not in ("all", "pinned", "unpinned"):
            raise FilterError("status must be one of all, pinned, unpinned")
        f.hash_contains = query.get("hashContains") or None
        f.cid = query.get("cid") or None
        f.name = query.get("metadata[name]") or None
        if "metadata[keyvalues]" in query:
            f.keyvalues.update(_json_object(query["metadata[keyvalues]"], "metadata[keyvalues]"))
        for param, text in query.items():
            match = re.fullmatch(r"metadata\[keyvalues\]\[(.+)\]", param)
            if match:
                f.keyvalues[match.group(1)] = _json_object(text, param)
        for key, cond in f.keyvalues.items():
            if not isinstance(cond, dict) or "value" not in cond:
                raise FilterError(f"metadata[keyvalues][{key}] needs a value")
            if cond.get("op", "eq") not in _OPS:
                raise FilterError(f"metadata[keyvalues][{key}]: unknown op {cond.get('op')!r}")
        f.pin_size_min = _int(query, "pinSizeMin")
        f.pin_size_max = _int(query, "pinSizeMax")
        f.limit = _int(query, "pageLimit") or 10
        f.offset = _int(query, "pageOffset") or 0
        if not 1 <= f.limit <= MAX_PAGE:
            raise FilterError(f"pageLimit must be between 1 and {MAX_PAGE}")
        if f.offset < 0:
            raise FilterError("pageOffset must not be negative")
        return f

    def matches(self, pin: Pin) -> bool:
        if self.status == "pinned" and not pin.active:
            return False
        if self.status == "unpinned" and pin.active:
            return False
        if self.hash_contains and self.hash_contains not in pin.cid:
            return False
        if self.cid and self.cid != pin.cid:
            return False
        if self.name and self.name not in (pin.name or ""):
            return False
        if self.pin_size_min is not None and pin.size < self.pin_size_min:
            return False
        if self.pin_size_max is not None and pin.size > self.pin_size_max:
            return False
        kv = pin.keyvalues or {}
        return all(key in kv and _compare(kv[key], cond) for key, cond in self.keyvalues.items())

    def apply(self, pins: list[Pin]) -> tuple[int, list[Pin]]:
        """(total matching, the requested page)."""
        matching = [p for p in pins if self.matches(p)]
        return len(matching), matching[self.offset : self.offset + self.limit]


def _json_object(text: str, param: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FilterError(f"{param} is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise FilterError(f"{param} must be a JSON object")
    return value


def _int(query: Mapping[str, str], name: str) -> int | None:
    if name not in query or query[name] == "":
        return None
    try:
        return int(query[name])
    except ValueError:
        raise FilterError(f"{name} must be an integer") from None


def _ordered(a: Any, b: Any) -> tuple[Any, Any]:
    """Compare as numbers when both look numeric, else as strings."""
    try:
        return float(a), float(b)
    except (TypeError, ValueError):
        return str(a), str(b)


def _like(pattern: str, text: str, flags: int = 0) -> bool:
    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, text, flags | re.DOTALL) is not None


def _compare(actual: Any, cond: dict[str, Any]) -> bool:
    op, value = cond.get("op", "eq"), cond["value"]
    if op in ("eq", "ne"):
        a, b = _ordered(actual, value)
        return (a == b) == (op == "eq")
    if op in ("gt", "gte", "lt", "lte"):
        a, b = _ordered(actual, value)
        return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]
    if op in ("between", "notBetween"):
        a, lo = _ordered(actual, value)
        a2, hi = _ordered(actual, cond.get("secondValue"))
        inside = type(a) is type(a2) and lo <= a and a2 <= hi
        return inside == (op == "between")
    text = str(actual)
    if op in ("like", "notLike"):
        return _like(str(value), text) == (op == "like")
    if op in ("iLike", "notILike"):
        return _like(str(value), text, re.IGNORECASE) == (op == "iLike")
    flags = re.IGNORECASE if op == "iRegexp" else 0
    try:
        return re.search(str(value), text, flags) is not None
    except re.error:
        return False
