"""`make demo`: start the devstack and walk through it, fault injection included.

Until the MintSaga workflow exists this shows the ground it stands on: the chain answering on
three endpoints, a pin served by the gateways, and a fault a client can see.
"""

from __future__ import annotations

import sys
from typing import Any

import httpx

from devstack.config import GATEWAYS, SOLANA_ENDPOINTS, StackConfig
from devstack.supervisor import Supervisor


def _say(line: str) -> None:
    print(line, flush=True)


def _rpc(client: httpx.Client, url: str, method: str, params: list[Any] | None = None) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    answer = client.post(url, json=body).json()
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def run_demo(config: StackConfig) -> int:
    _say(f"1. starting the devstack in {config.state_dir}")
    seconds = Supervisor(config, progress=lambda line: _say(f"   {line}")).up()
    _say(f"   up in {seconds:.1f} s\n")

    _say("2. services")
    for name, url in config.services().items():
        _say(f"   {name:<12} {url}")

    with httpx.Client(timeout=10) as client:
        _say("\n3. one ledger behind three RPC endpoints")
        for name in SOLANA_ENDPOINTS:
            slot = _rpc(client, config.url(name), "getSlot")
            _say(f"   {name}: slot {slot}")

        _say("\n4. pin through the Pinata API, read through each gateway")
        pinned = client.post(
            config.url("pinata") + "/pinning/pinJSONToIPFS",
            headers={"Authorization": f"Bearer {config.pinata_jwt}"},
            json={"pinataContent": {"hello": "mintsaga"}, "pinataMetadata": {"name": "demo"}},
        )
        pinned.raise_for_status()
        cid = pinned.json()["IpfsHash"]
        _say(f"   pinned {cid}")
        for name in GATEWAYS:
            served = client.get(f"{config.url(name)}/ipfs/{cid}")
            _say(f"   {name}: HTTP {served.status_code} {served.text}")

        _say("\n5. fault injection: take solana-1 down, watch a client fail over by hand")
        admin = config.url("admin")
        fault = client.post(admin + "/faults", json={"target": "solana-1", "kind": "down"}).json()
        for name in SOLANA_ENDPOINTS[:2]:
            try:
                _say(f"   {name}: slot {_rpc(client, config.url(name), 'getSlot')}")
            except httpx.TransportError as exc:  # refused, or a kept-alive connection cut
                _say(f"   {name}: {type(exc).__name__} - a client would fail over")
        client.delete(f"{admin}/faults/{fault['id']}")
        _say(f"   solana-1 back: slot {_rpc(client, config.url('solana-1'), 'getSlot')}")

    _say(f"\nTemporal UI: {config.url('temporal-ui')}")
    _say("Worker settings: .venv/bin/python -m devstack env")
    _say("Stop everything: .venv/bin/python -m devstack down   (add --wipe to delete the state)")
    return 0


if __name__ == "__main__":
    sys.exit(run_demo(StackConfig.create()))
