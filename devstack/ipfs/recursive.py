"""How each devstack gateway behaves: the local store's plain gateway, or a recursive one.

A recursive gateway (ipfs.io, a Kubo node's gateway, Pinata's dedicated gateways) does not
hold the content it serves: it looks for providers, and answers once it has the blocks. The
devstack models what a reader of such a gateway sees, per gateway:

- ``appear_after_s``: content is found only this long after it was first pinned (providers
  announce it to the DHT / IPNI after a while). Until then the gateway answers
  ``504 Gateway Timeout`` with ``Retry-After``.
- ``retrieval_timeout_s``: how long the gateway holds a request while it searches before it
  gives up with 504 (content that appears meanwhile is served: 200). Kubo's
  ``Gateway.RetrievalTimeout``, default 30 s: "Returns 504 Gateway Timeout if the gateway
  cannot start writing within this duration (e.g., stuck searching for providers)"
  (kubo docs/config.md). The devstack's default is 0: answer at once.
- ``missing_status``: what content no provider holds (never pinned, or unpinned and not
  cached) gets: 404 from a gateway that knows its dataset (the devstack's plain gateway,
  a non-recursive one), 504 from a recursive gateway that cannot tell "not found yet" from
  "nowhere".
- ``cache_after_unpin_s``: content this gateway served is kept in its cache and still served
  this long after the last provider unpinned it (real gateways cache for hours or days).
- ``retry_after_s``: the ``Retry-After`` value on 504.

Path Gateway spec (https://specs.ipfs.tech/http-gateways/path-gateway/, read 2026-12-03):
"504 Gateway Timeout: ... the Gateway was not able to produce response under set time limits:
for example, when gateway failed to retrieve data from a remote provider. `504` indicates that
the request can be retried and is not a permanent failure. ... This error response SHOULD
include `Retry-After`"; "Gateways SHOULD return `404` instead of `504` when the content is
known to be unretrievable: for example, when the Gateway is non-recursive and the content is
known to not be available." Neither the spec nor Kubo's docs give a Retry-After value; ours is
the setting above.

Defaults are the devstack's plain gateway as it always was (0 s, 404, no cache), so existing
tests hold; ``RECURSIVE`` is a recursive gateway's shape.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

RECURSIVE_DEFAULTS: dict[str, Any] = {
    "missing_status": 504,
    "retry_after_s": 5,
}


class GatewayBehaviourError(ValueError):
    """An unknown gateway or field, or a value out of range (names it)."""


@dataclass(frozen=True)
class GatewayBehaviour:
    appear_after_s: float = 0.0
    retrieval_timeout_s: float = 0.0
    missing_status: int = 404
    cache_after_unpin_s: float = 0.0
    retry_after_s: int = 5

    def __post_init__(self) -> None:
        for name in ("appear_after_s", "retrieval_timeout_s", "cache_after_unpin_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise GatewayBehaviourError(f"{name}: {value!r} is not a number >= 0")
            if not math.isfinite(value):
                raise GatewayBehaviourError(f"{name}: {value!r} is not finite")
        if self.missing_status not in (404, 504):
            raise GatewayBehaviourError(
                f"missing_status: {self.missing_status!r} is not 404 or 504"
            )
        if isinstance(self.retry_after_s, bool) or not isinstance(self.retry_after_s, int):
            raise GatewayBehaviourError(f"retry_after_s: {self.retry_after_s!r} is not an integer")
        if self.retry_after_s < 1:
            raise GatewayBehaviourError(f"retry_after_s: {self.retry_after_s!r} is below 1")

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(
        cls, body: dict[str, Any], base: GatewayBehaviour | None = None
    ) -> GatewayBehaviour:
        """Fields given over ``base`` (default: the plain gateway); ``"recursive": true``
        starts from a recursive gateway's defaults instead."""
        fields = set(cls.__dataclass_fields__)
        unknown = sorted(set(body) - fields - {"recursive"})
        if unknown:
            raise GatewayBehaviourError(
                f"unknown fields: {', '.join(unknown)};"
                f" known: recursive, {', '.join(sorted(fields))}"
            )
        start = base or cls()
        if body.get("recursive"):
            start = replace(cls(), **RECURSIVE_DEFAULTS)
        try:
            return replace(start, **{k: v for k, v in body.items() if k in fields})
        except TypeError as exc:
            raise GatewayBehaviourError(str(exc)) from exc


def parse_gateway_spec(text: str, gateways: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``"gateway-1:recursive,appear_after_s=20;gateway-2:cache_after_unpin_s=600"`` ->
    {gateway: JSON body}. A bare ``recursive`` sets the recursive defaults."""
    chosen: dict[str, dict[str, Any]] = {}
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        name, sep, rest = (s.strip() for s in item.partition(":"))
        if not sep:
            raise GatewayBehaviourError(f"{item!r}: expected <gateway>:<field>=<value>,...")
        if name not in gateways:
            raise GatewayBehaviourError(f"{name!r}: unknown gateway; known: {', '.join(gateways)}")
        body: dict[str, Any] = {}
        for pair in (p.strip() for p in rest.split(",")):
            if not pair:
                continue
            key, eq, value = (s.strip() for s in pair.partition("="))
            if not eq:
                if key != "recursive":
                    raise GatewayBehaviourError(f"{pair!r}: expected <field>=<value>")
                body["recursive"] = True
                continue
            try:
                body[key] = (
                    int(value) if key in ("missing_status", "retry_after_s") else float(value)
                )
            except ValueError:
                raise GatewayBehaviourError(f"{key}: {value!r} is not a number") from None
        GatewayBehaviour.from_json(body)  # checked now, so `up` fails early
        chosen[name] = body
    return chosen


class GatewayBehaviours:
    """The live behaviour of every gateway, shared by the gateway apps and the admin API."""

    def __init__(self, gateways: tuple[str, ...], initial: dict[str, dict[str, Any]]) -> None:
        self._behaviours = {name: GatewayBehaviour() for name in gateways}
        for name, body in initial.items():
            self.set(name, body)

    def get(self, gateway: str) -> GatewayBehaviour:
        try:
            return self._behaviours[gateway]
        except KeyError:
            raise GatewayBehaviourError(
                f"{gateway!r}: unknown gateway; known: {', '.join(self._behaviours)}"
            ) from None

    def set(
        self, gateway: str, body: dict[str, Any], *, replace_all: bool = True
    ) -> GatewayBehaviour:
        """``replace_all``: fields not given take the defaults (PUT); else they keep theirs."""
        current = self.get(gateway)
        behaviour = GatewayBehaviour.from_json(body, None if replace_all else current)
        self._behaviours[gateway] = behaviour
        return behaviour

    def describe(self) -> dict[str, Any]:
        return {name: b.describe() for name, b in self._behaviours.items()}
