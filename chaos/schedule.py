"""The chaos run's fault schedule: every fault kind of issue 5, at seeded times.

`build_schedule(seed, duration_s)` is pure: the same seed and duration give the same list of
actions, so a run that found a violation can be run again with the same faults. Times are
seconds from the start of the run; the harness carries the actions out (`chaos.harness`).

Two layers:
- *outages*, one or more of each: a Solana endpoint down, Pinata down (Kubo takes over), a
  gateway down, the database restarted and its port closed, the system wallet underfunded,
  blockhash-expiry bursts, the worker SIGKILLed and restarted, the Temporal server restarted;
  and the providers as they really behave (issue 16): Pinata on its free plan's limits (60
  requests a minute, /data/* 30), a gateway that finds new content only after a while (504
  with Retry-After meanwhile) and keeps serving unpinned content from its cache;
- *flakiness* all along: short windows of 5xx, 429, latency, hangs and dropped
  `sendTransaction` answers on the Solana endpoints, Pinata and Kubo errors and 429s, gateway
  errors, Postgres connection resets.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from devstack.config import GATEWAYS, SOLANA_ENDPOINTS

ActionKind = Literal[
    "fault",  # POST /faults with `spec` (it removes itself after duration_s)
    "warp",  # advance the chain past every live blockhash's window
    "postgres_reset",  # cut every open database connection once
    "postgres_restart",  # stop PostgreSQL, wait duration_s, start it again
    "wallet_underfunded",  # drain the system wallet, refill it after duration_s
    "worker_sigkill",  # SIGKILL one worker, start a new one after duration_s
    "temporal_restart",  # stop the Temporal dev server, start it again (its state persists)
    "pinata_plan",  # PUT /pinata/plan {"plan": spec["plan"]}, the previous plan after duration_s
    "gateway_behaviour",  # PATCH /gateways/<spec["gateway"]> spec["behaviour"], restored after
]

# Slots a warp advances: more than the 150-block blockhash window, so every signed and unsent
# or unconfirmed transaction expires at once.
WARP_SLOTS = 200
# A long run repeats every outage once per cycle of this length.
CYCLE_S = 300.0
# A recursive gateway still finding new content (devstack.ipfs.recursive): 504 with Retry-After
# for this long after a CID is first pinned, and unpinned content served from its cache.
SLOW_DISCOVERY = {"appear_after_s": 8.0, "cache_after_unpin_s": 60.0}


@dataclass(frozen=True)
class Action:
    at_s: float
    kind: ActionKind
    label: str  # what the report counts it as: "solana-1 down", "pinata status 429", ...
    duration_s: float = 0.0
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def outage(self) -> bool:
        """Whether this action takes a whole service away (recovery time is measured). An
        underfunded wallet is not: its mints wait for an operator, at a person's pace."""
        return (self.kind == "fault" and self.spec.get("kind") == "down") or self.kind in (
            "postgres_restart",
            "temporal_restart",
            "worker_sigkill",
        )


def _fault(at_s: float, duration_s: float, label: str, **spec: Any) -> Action:
    return Action(
        at_s=round(at_s, 2),
        kind="fault",
        label=label,
        duration_s=duration_s,
        spec={**spec, "duration_ms": int(duration_s * 1000)},
    )


def _outages(rng: random.Random, start: float, d: float) -> list[Action]:
    """One of each outage within [start, start + d), spread so that they overlap only partly."""
    length = max(5.0, min(20.0, d * 0.12))  # an outage: 5..20 s, a share of the cycle
    endpoint = rng.choice(SOLANA_ENDPOINTS)
    gateway = rng.choice(GATEWAYS)
    slow = rng.choice(GATEWAYS)

    def at(share: float) -> float:
        return start + d * share

    actions = [
        _fault(at(0.10), length, f"{endpoint} down", target=endpoint, kind="down"),
        _fault(at(0.30), length, "pinata down", target="pinata", kind="down"),
        _fault(at(0.45), length, f"{gateway} down", target=gateway, kind="down"),
        Action(at(0.55), "postgres_restart", "postgres restart", duration_s=min(5.0, length)),
        _fault(at(0.85), min(5.0, length), "postgres down", target="postgres", kind="down"),
        Action(at(0.62), "wallet_underfunded", "system wallet underfunded", duration_s=length),
        Action(at(0.70), "temporal_restart", "temporal restart"),
        Action(
            at(0.25),
            "pinata_plan",
            "pinata free plan",
            duration_s=2 * length,
            spec={"plan": "free"},
        ),
        Action(
            at(0.38),
            "gateway_behaviour",
            f"{slow} slow discovery",
            duration_s=2 * length,
            spec={"gateway": slow, "behaviour": {**SLOW_DISCOVERY}},
        ),
    ]
    for share in (0.20, 0.50, 0.78):  # the worker dies three times, at seeded moments
        actions.append(
            Action(
                at(share + rng.uniform(-0.04, 0.04)),
                "worker_sigkill",
                "worker SIGKILL",
                duration_s=rng.uniform(0.5, 3.0),
            )
        )
    for _ in range(3):  # blockhash-expiry bursts
        actions.append(Action(at(rng.uniform(0.05, 0.9)), "warp", "blockhash expiry burst"))
    for _ in range(4):
        actions.append(Action(at(rng.uniform(0.05, 0.95)), "postgres_reset", "postgres reset"))
    return actions


def _flake(rng: random.Random, at_s: float) -> Action:
    """One short window of transient failures somewhere."""
    length = rng.uniform(3.0, 10.0)
    rate = round(rng.uniform(0.1, 0.35), 2)
    endpoint = rng.choice(SOLANA_ENDPOINTS)
    menu = [
        lambda: _fault(at_s, length, f"{endpoint} error", target=endpoint, kind="error", rate=rate),
        lambda: _fault(
            at_s,
            length,
            f"{endpoint} status 429",
            target=endpoint,
            kind="status",
            status=429,
            rate=rate,
        ),
        lambda: _fault(
            at_s,
            length,
            f"{endpoint} latency",
            target=endpoint,
            kind="latency",
            delay_ms=rng.randint(200, 2500),
            rate=rate,
        ),
        lambda: _fault(
            at_s,
            length,
            f"{endpoint} hang",
            target=endpoint,
            kind="hang",
            delay_ms=rng.randint(5000, 20000),
            rate=min(rate, 0.15),
        ),
        lambda: _fault(
            at_s,
            length,
            f"{endpoint} drop_response sendTransaction",
            target=endpoint,
            kind="drop_response",
            match="sendTransaction",
            rate=max(rate, 0.3),
        ),
        lambda: _fault(at_s, length, "pinata error", target="pinata", kind="error", rate=rate),
        lambda: _fault(
            at_s,
            length,
            "pinata status 429",
            target="pinata",
            kind="status",
            status=429,
            retry_after_s=1,
            rate=max(rate, 0.3),
        ),
        lambda: _fault(at_s, length, "kubo error", target="kubo", kind="error", rate=rate),
        lambda: _fault(
            at_s,
            length,
            "gateway error",
            target=rng.choice(GATEWAYS),
            kind="error",
            rate=max(rate, 0.3),
        ),
        lambda: _fault(
            at_s, length, "postgres error", target="postgres", kind="error", rate=min(rate, 0.05)
        ),
    ]
    return rng.choice(menu)()


def build_schedule(seed: int, duration_s: float) -> list[Action]:
    """Every action of one run, in time order."""
    if duration_s <= 0:
        raise ValueError(f"duration: {duration_s} s is not positive")
    rng = random.Random(seed)
    # A long run repeats the outages: one cycle of them per CYCLE_S (at least one cycle).
    cycles = max(1, math.ceil(duration_s / CYCLE_S))
    cycle = duration_s / cycles
    actions = [a for n in range(cycles) for a in _outages(rng, n * cycle, cycle)]
    at = rng.uniform(0.0, 2.0)
    while at < duration_s * 0.95:  # a flaky window every few seconds
        actions.append(_flake(rng, at))
        at += rng.uniform(1.5, 5.0)
    return sorted(actions, key=lambda a: (a.at_s, a.label))
