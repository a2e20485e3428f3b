"""`make demo`: the devstack, a worker, one mint end to end, and one mint waiting for a person.

    python demo.py

1. starts the devstack (idempotent) and a worker in the background (its log in the state
   folder; `python -m devstack down` stops both);
2. mints one NFT and prints the `MintResult`;
3. starts a second mint while the IPFS providers are failing, so it ends up
   AWAITING_OPERATOR, clears the fault, and prints the command that retries it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

import httpx
from solders.keypair import Keypair

import mintsaga
from devstack.config import StackConfig
from devstack.supervisor import Supervisor
from mintsaga.process_exit import exit_now
from mintsaga.workflows.models import MintRequest, MintStatus


def say(line: str = "") -> None:
    print(line, flush=True)


def request(mint_id: str, user_id: str) -> MintRequest:
    return MintRequest.model_validate(
        {
            "mint_id": mint_id,
            "user_id": user_id,
            "wallet": str(Keypair().pubkey()),
            "name": "MintSaga Demo",
            "symbol": "SAGA",
            "description": "Minted by `make demo` on the local devstack",
            "attributes": [{"trait_type": "tier", "value": "gold"}],
            "image": {"path": "sample.png"},
        }
    )


async def wait_until_waiting(client: object, mint_id: str, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if (await mintsaga.get_status(client, mint_id)).awaiting_operator:  # type: ignore[arg-type]
                return
        except mintsaga.StarterError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"mint {mint_id} did not reach AWAITING_OPERATOR in {within_s:.0f} s")


async def run(config: StackConfig) -> int:
    env = config.worker_env()
    os.environ.update(env)
    client = await mintsaga.connect(env["TEMPORAL_ADDRESS"])
    run_tag = uuid.uuid4().hex[:6]

    say("3. one mint, end to end")
    first = request(f"demo-{run_tag}-1", f"demo-user-{run_tag}-1")
    started = time.monotonic()
    result = await (await mintsaga.start_mint(client, first)).result()
    say(f"   {result.status} in {time.monotonic() - started:.2f} s")
    say("   " + json.dumps(result.model_dump(mode="json"), indent=2).replace("\n", "\n   "))
    if result.status != MintStatus.MINTED:
        return 1

    say("\n4. a mint while both IPFS providers fail: it waits for an operator")
    admin = config.url("admin")
    async with httpx.AsyncClient(timeout=10) as http:
        await http.post(
            admin + "/faults", json={"target": "pinata", "kind": "status", "status": 503}
        )
        await http.post(admin + "/faults", json={"target": "kubo", "kind": "down"})
        second = request(f"demo-{run_tag}-2", f"demo-user-{run_tag}-2")
        await mintsaga.start_mint(client, second)
        try:
            await wait_until_waiting(client, second.mint_id)
        finally:
            await http.delete(admin + "/faults")
    status = await mintsaga.get_status(client, second.mint_id)
    error = status.last_error
    say(f"   {second.mint_id}: {status.status} at {status.awaiting_step}")
    if error is not None:
        say(f"   last error: {error.type} ({error.kind}): {error.message}")
    say("   the fault is cleared now; find and retry it like an operator would:")
    say('     eval "$(.venv/bin/python -m devstack env)"')
    say("     .venv/bin/mintsaga list --stuck")
    say(f"     .venv/bin/mintsaga show {second.mint_id}")
    say(f"     .venv/bin/mintsaga retry {second.mint_id}")
    say(f"     .venv/bin/mintsaga status {second.mint_id}")
    say("   (docs/runbook.md walks every operator procedure)")
    return 0


def main() -> int:
    config = StackConfig.create()
    say(f"1. starting the devstack in {config.state_dir}")
    supervisor = Supervisor(config, progress=lambda line: say(f"   {line}"))
    say(f"   up in {supervisor.up():.1f} s")
    say("2. starting a worker (log: worker.log in the state folder)")
    supervisor.start_worker()
    code = asyncio.run(run(config))
    say(f"\nTemporal UI: {config.url('temporal-ui')}/namespaces/default/workflows")
    say("Stop everything (worker included): .venv/bin/python -m devstack down")
    return code


if __name__ == "__main__":
    exit_now(main())
