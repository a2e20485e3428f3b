"""What the devstack's default profiles assume the providers answer, checked against a report.

Every test of this project runs against the devstack's emulators, so each behaviour below is
an assumption the tests rest on. `differences` names each one a live report contradicts: a
difference means the emulator (and so the tests) no longer describes that provider, and the
emulator needs a profile for what was seen (docs/testing.md, "Checking the devstack against
real providers"). Against the devstack itself, in its default profiles, there is none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mintsaga.api.livecheck.probes import SIZES

Report = dict[str, Any]


@dataclass(frozen=True)
class Difference:
    where: str  # the report's path, e.g. "kubo.upload_node_defaults.5MiB"
    observed: Any
    assumed: Any
    assumption: str  # what the devstack assumes, and where it is modelled

    def describe(self) -> str:
        return (
            f"{self.where}: observed {self.observed!r}, the devstack assumes {self.assumed!r}"
            f" ({self.assumption})"
        )


@dataclass(frozen=True)
class Assumption:
    where: str
    says: str
    assumed: Callable[[Report], Any]  # the value the devstack gives
    observed: Callable[[Report], Any]  # the value the report holds

    def check(self, report: Report) -> Difference | None:
        try:
            observed = self.observed(report)
        except (KeyError, TypeError, IndexError):
            observed = "<not observed>"
        assumed = self.assumed(report)
        if observed == assumed:
            return None
        return Difference(self.where, observed, assumed, self.says)


def _get(report: Report, *path: str) -> Any:
    node: Any = report
    for key in path:
        node = node[key]
    return node


def _field(*path: str) -> Callable[[Report], Any]:
    return lambda report: _get(report, *path)


def _const(value: Any) -> Callable[[Report], Any]:
    return lambda _report: value


def _content_type(*path: str) -> Callable[[Report], Any]:
    """The media type of a recorded answer, parameters left out, when it succeeded."""

    def read(report: Report) -> Any:
        seen = _get(report, *path)
        if seen.get("status") != 200:
            return f"status {seen.get('status')}"
        return str(seen["headers"].get("content-type", "")).split(";")[0].strip()

    return read


def _assumptions(report: Report) -> Iterator[Assumption]:
    for label in SIZES:
        local = _field("local", label)
        yield Assumption(
            f"pinata.upload.{label}.cid",
            "Pinata stores a file with cidVersion 1 as Kubo's historical layout: 256 KiB "
            "chunks, raw leaves, 174 links a node (devstack/ipfs/pinata.py)",
            local,
            _field("pinata", "upload", label, "cid"),
        )
        yield Assumption(
            f"kubo.upload_explicit.{label}.cid",
            "Kubo builds the CID our import parameters ask for (devstack/ipfs/kubo.py)",
            local,
            _field("kubo", "upload_explicit", label, "cid"),
        )
        yield Assumption(
            f"kubo.upload_node_defaults.{label}.cid",
            "a Kubo node's own import settings (an add with cid-version=1 only) build the "
            "historical layout; a node in the unixfs-v1-2025 profile builds another "
            "(devstack/ipfs/kubo.py)",
            local,
            _field("kubo", "upload_node_defaults", label, "cid"),
        )
    yield Assumption(
        "pinata.unpin_never_pinned.reads_as",
        "Pinata's answer to an unpin of a CID never pinned reads as 'not pinned' "
        "(devstack/ipfs/pinata.py, mintsaga.ipfs.pinata)",
        _const("not pinned"),
        _field("pinata", "unpin_never_pinned", "reads_as"),
    )
    yield Assumption(
        "kubo.unpin_never_pinned.reads_as",
        "Kubo's answer to pin/rm of a CID never pinned reads as 'not pinned' "
        "(devstack/ipfs/kubo.py, mintsaga.ipfs.kubo)",
        _const("not pinned"),
        _field("kubo", "unpin_never_pinned", "reads_as"),
    )
    yield Assumption(
        "pinata.pin_list.lists_exactly",
        "pinList filtered by cid lists the pin just made (devstack/ipfs/pinlist.py)",
        _const(True),
        _field("pinata", "pin_list", "lists_exactly"),
    )
    for gateway in report.get("gateways", {}):
        yield Assumption(
            f"gateways.{gateway}.fresh.status",
            "a gateway serves content as soon as a provider pins it, 200 at the first "
            "request (devstack/ipfs/gateway.py, default profile: no discovery delay)",
            _const(200),
            _field("gateways", gateway, "fresh", "status"),
        )
        yield Assumption(
            f"gateways.{gateway}.fresh.verifies",
            "the bytes a gateway serves hash to the CID asked for",
            _const(True),
            _field("gateways", gateway, "fresh", "verifies"),
        )
        yield Assumption(
            f"gateways.{gateway}.raw.content_type",
            "a gateway answers ?format=raw with the block (Trustless Gateway spec)",
            _const("application/vnd.ipld.raw"),
            _content_type("gateways", gateway, "raw"),
        )
        yield Assumption(
            f"gateways.{gateway}.car.content_type",
            "a gateway answers ?format=car with a CAR of the DAG (Trustless Gateway spec)",
            _const("application/vnd.ipld.car"),
            _content_type("gateways", gateway, "car"),
        )
    for endpoint in report.get("solana", {}):
        yield Assumption(
            f"solana.{endpoint}.history_search.answer",
            "an RPC node answers getSignatureStatuses with searchTransactionHistory "
            "(devstack/solana, default profile: a node with history; -32011 without)",
            _const("result"),
            _field("solana", endpoint, "history_search", "answer"),
        )
    if "skipped" not in report.get("mint", {"skipped": True}):
        yield Assumption(
            "mint.status",
            "one mint end to end ends MINTED",
            _const("MINTED"),
            _field("mint", "status"),
        )


def differences(report: Report) -> list[Difference]:
    """Every assumption the report contradicts, in a stable order."""
    found = (assumption.check(report) for assumption in _assumptions(report))
    return [d for d in found if d is not None]
