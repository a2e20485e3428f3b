"""Where the devstack lives: its state folder, its ports, and the settings it hands the worker.

Every port is a default plus one offset (``--port-offset`` / ``DEVSTACK_PORT_OFFSET``), so a
second stack (the test suite's) can run beside a developer's without a clash.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"

# name -> default port. Temporal's two are the ones its CLI documents.
DEFAULT_PORTS: dict[str, int] = {
    "temporal": 7233,
    "temporal-ui": 8233,
    "postgres-server": 5433,  # the real server; clients go through the fault proxy below
    "postgres": 5434,  # fault proxy in front of the server (DATABASE_URL points here)
    "solana-1": 8899,
    "solana-2": 8897,
    "solana-3": 8895,
    "pinata": 8910,
    "kubo": 5001,
    "gateway-1": 8080,
    "gateway-2": 8081,
    "admin": 8950,
    "codec": 8960,  # the codec server, with `up --codec` only
}

SOLANA_ENDPOINTS = ("solana-1", "solana-2", "solana-3")
GATEWAYS = ("gateway-1", "gateway-2")
# A devstack-only bearer token: it guards nothing real, but lets the auth path be exercised.
DEVSTACK_PINATA_JWT = "devstack-pinata-jwt-not-a-secret"


@dataclass(frozen=True)
class StackConfig:
    """Everything the devstack's processes need to agree on."""

    state_dir: Path
    port_offset: int = 0
    slot_ms: int = 400
    # Pinata's plan at start (devstack.ipfs.limits.PLANS; `up --pinata-plan`,
    # DEVSTACK_PINATA_PLAN) and its general limit (the plan's unless `--pinata-rpm` /
    # DEVSTACK_PINATA_RPM says otherwise); the admin API changes both while the stack runs.
    pinata_plan: str = "picnic"
    pinata_requests_per_minute: int = 250
    pinata_jwt: str = DEVSTACK_PINATA_JWT
    external_database_url: str | None = None
    ports: dict[str, int] = field(default_factory=dict)
    codec: bool = False  # payload encryption and the codec server (`up --codec`)
    # endpoint -> provider profile at start (devstack.profiles; `up --solana-profiles`);
    # endpoints not named run "default". The admin API changes them while the stack runs.
    solana_profiles: dict[str, str] = field(default_factory=dict)
    # The fee market's background load at start (devstack.solana.fee_market; `up --fee-market`,
    # DEVSTACK_FEE_MARKET), as the admin API's JSON body; {} is off.
    fee_market: dict[str, Any] = field(default_factory=dict)
    # gateway -> behaviour at start, as the admin API's JSON body (devstack.ipfs.recursive;
    # `up --gateways`, DEVSTACK_GATEWAYS); gateways not named are the plain local gateway.
    gateways: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The Kubo node's Import profile at start (devstack.ipfs.kubo_config.PROFILES, or
    # "default": every Import key unset; `up --kubo-profile`, DEVSTACK_KUBO_PROFILE).
    kubo_profile: str = "default"

    @classmethod
    def create(
        cls,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        port_offset: int | None = None,
        slot_ms: int | None = None,
        pinata_requests_per_minute: int | None = None,
        pinata_plan: str | None = None,
        codec: bool | None = None,
        solana_profiles: dict[str, str] | None = None,
        fee_market: dict[str, Any] | None = None,
        gateways: dict[str, dict[str, Any]] | None = None,
        kubo_profile: str | None = None,
    ) -> StackConfig:
        """Build a config from arguments, falling back to DEVSTACK_* variables, then defaults.

        Raises ``ValueError`` (``devstack.profiles.ProfileError``) for an unknown endpoint or
        profile in ``DEVSTACK_SOLANA_PROFILES``."""
        from devstack.ipfs.kubo_config import check_kubo_profile
        from devstack.ipfs.limits import DEFAULT_PLAN, plan_named
        from devstack.ipfs.recursive import parse_gateway_spec
        from devstack.profiles import parse_profile_spec
        from devstack.solana.fee_market import parse_fee_market_spec

        env = os.environ
        # Raises devstack.ipfs.limits.PlanError (a ValueError) for an unknown plan.
        plan = plan_named(pinata_plan or env.get("DEVSTACK_PINATA_PLAN", "") or DEFAULT_PLAN)
        rpm_env = env.get("DEVSTACK_PINATA_RPM", "").strip()
        offset = (
            port_offset if port_offset is not None else int(env.get("DEVSTACK_PORT_OFFSET", "0"))
        )
        return cls(
            state_dir=Path(state_dir or env.get("DEVSTACK_DIR", ".devstack")).resolve(),
            port_offset=offset,
            slot_ms=slot_ms if slot_ms is not None else int(env.get("DEVSTACK_SLOT_MS", "400")),
            pinata_plan=plan.name,
            pinata_requests_per_minute=(
                pinata_requests_per_minute
                if pinata_requests_per_minute is not None
                else int(rpm_env)
                if rpm_env
                else plan.requests_per_minute
            ),
            external_database_url=env.get("DATABASE_URL") or None,
            ports={name: port + offset for name, port in DEFAULT_PORTS.items()},
            codec=(
                codec
                if codec is not None
                else env.get("DEVSTACK_CODEC", "").strip().lower() in ("1", "true", "yes")
            ),
            solana_profiles=(
                dict(solana_profiles)
                if solana_profiles is not None
                else parse_profile_spec(env.get("DEVSTACK_SOLANA_PROFILES", ""), SOLANA_ENDPOINTS)
            ),
            fee_market=(
                dict(fee_market)
                if fee_market is not None
                else parse_fee_market_spec(env.get("DEVSTACK_FEE_MARKET", ""))
            ),
            gateways=(
                dict(gateways)
                if gateways is not None
                else parse_gateway_spec(env.get("DEVSTACK_GATEWAYS", ""), GATEWAYS)
            ),
            kubo_profile=check_kubo_profile(
                kubo_profile or env.get("DEVSTACK_KUBO_PROFILE", "") or "default"
            ),
        )

    # -- persistence, so the emulator process and the CLI read the same config --------------

    @property
    def config_file(self) -> Path:
        return self.state_dir / "stack.json"

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        self.config_file.write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, state_dir: str | os.PathLike[str]) -> StackConfig:
        data = json.loads((Path(state_dir).resolve() / "stack.json").read_text())
        data["state_dir"] = Path(data["state_dir"])
        return cls(**data)

    # -- addresses ---------------------------------------------------------------------------

    def url(self, name: str) -> str:
        return f"http://{LOOPBACK}:{self.ports[name]}"

    @property
    def temporal_address(self) -> str:
        return f"{LOOPBACK}:{self.ports['temporal']}"

    @property
    def database_url(self) -> str:
        if self.external_database_url:
            return self.external_database_url
        return f"postgresql://postgres@{LOOPBACK}:{self.ports['postgres']}/mintsaga"

    @property
    def direct_database_url(self) -> str:
        """The server itself, bypassing the fault proxy (for migrations and the stack's checks)."""
        if self.external_database_url:
            return self.external_database_url
        return f"postgresql://postgres@{LOOPBACK}:{self.ports['postgres-server']}/mintsaga"

    def services(self) -> dict[str, str]:
        """Service name -> URL, as ``GET /services`` on the admin API reports it."""
        out = {
            "temporal": self.temporal_address,
            "temporal-ui": self.url("temporal-ui"),
            "postgres": self.database_url,
        }
        for name in (*SOLANA_ENDPOINTS, "pinata", "kubo", *GATEWAYS, "admin"):
            out[name] = self.url(name)
        if self.codec:
            out["codec"] = self.url("codec")
        return out

    def codec_env(self) -> dict[str, str]:
        """With `codec` on: the dev key and the codec server's token (made on first use), and
        the Temporal CLI's own settings for decoding through the codec server; else nothing."""
        if not self.codec:
            return {}
        from devstack.dev_identity import ensure_codec_secrets

        keys, token = ensure_codec_secrets(self.state_dir)
        return {
            "MINTSAGA_CODEC_KEYS": keys,
            "MINTSAGA_CODEC_TOKEN": token,
            "TEMPORAL_CODEC_ENDPOINT": self.url("codec"),
            "TEMPORAL_CODEC_AUTH": f"Bearer {token}",
        }

    @property
    def codec_ui_endpoint(self) -> str:
        """The codec endpoint the Temporal UI is given: the token as the path prefix, since the
        UI cannot send a header of its own (codec/server.py)."""
        return f"{self.url('codec')}/{self.codec_env()['MINTSAGA_CODEC_TOKEN']}/"

    @property
    def funding_endpoint(self) -> str | None:
        """The first Solana endpoint whose start profile serves reads and airdrops, if any."""
        from devstack.profiles import READ_PROFILES

        for name in SOLANA_ENDPOINTS:
            if self.solana_profiles.get(name, "default") in READ_PROFILES:
                return name
        return None

    @property
    def fee_market_hot_accounts(self) -> list[str]:
        """The accounts the fee market's load write-locks (the start load's, else the default)."""
        from devstack.solana.fee_market import FeeMarketLoad

        return [str(a) for a in FeeMarketLoad.from_json(self.fee_market).hot_accounts]

    @property
    def pinata_data_requests_per_minute(self) -> int:
        """The start plan's ``/data/*`` limit (devstack.ipfs.limits)."""
        from devstack.ipfs.limits import plan_named

        return plan_named(self.pinata_plan).data_requests_per_minute

    def worker_env(self) -> dict[str, str]:
        """Every setting the worker needs, as environment variables (dev key material made
        on first use, in the state folder)."""
        from devstack.dev_identity import (
            ensure_dev_identity,
            group_authority_file,
            images_dir,
            update_authority,
        )

        seed, wallet_file = ensure_dev_identity(self.state_dir)
        return {
            "TEMPORAL_ADDRESS": self.temporal_address,
            "DATABASE_URL": self.database_url,
            "SOLANA_RPC_ENDPOINTS": ",".join(self.url(n) for n in SOLANA_ENDPOINTS),
            "PINATA_API_URL": self.url("pinata"),
            "PINATA_JWT": self.pinata_jwt,
            # The start plan's limits, which the worker paces itself by (docs/configuration.md);
            # 0 (no limit) is not a worker setting: a large plan stands for it.
            "PINATA_REQUESTS_PER_MINUTE": str(self.pinata_requests_per_minute or 100_000),
            "PINATA_DATA_REQUESTS_PER_MINUTE": str(self.pinata_data_requests_per_minute or 100_000),
            "KUBO_API_URL": self.url("kubo"),
            "IPFS_GATEWAYS": ",".join(self.url(n) for n in GATEWAYS),
            "DEVSTACK_ADMIN_URL": self.url("admin"),
            "TEMPORAL_TASK_QUEUE": "mint-saga",
            "MINT_IMAGE_DIR": str(images_dir(self.state_dir)),
            "MINT_IMAGE_ALLOW_PRIVATE_URLS": "true",  # every devstack server is on loopback
            "MINT_KEY_SEED": seed,
            "MINT_AUTHORITY_KEYPAIR": str(wallet_file),
            "MINT_UPDATE_AUTHORITY": str(update_authority(self.state_dir).pubkey()),
            "MINT_GROUP_AUTHORITY_KEYPAIR": str(group_authority_file(self.state_dir)),
            # The dev wallet's SOL is airdropped, and `make bench` signs thousands of mints an
            # hour: the spend breaker (10 SOL an hour by default) would stop it.
            "SOLANA_SPEND_LIMIT_SOL_PER_HOUR": "1000",
            # The accounts the fee market's background load write-locks: the estimator samples
            # them beside Token-2022 (devstack.solana.fee_market; an operator names mainnet's).
            "SOLANA_PRIORITY_FEE_ACCOUNTS": ",".join(self.fee_market_hot_accounts),
            **self.codec_env(),
        }
