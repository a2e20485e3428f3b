"""The worker's configuration, read once from the environment.

Every error names the variable at fault and never echoes a secret's value. Secrets are kept as
`SecretStr`, so printing the settings shows `**********`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

from clients.solana_fees import DEFAULT_PRIORITY_FEE_CAP, DEFAULT_PRIORITY_FEE_PERCENTILE

MAX_U64 = 2**64 - 1


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _required(env: Mapping[str, str], name: str, what: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name} is not set: it names {what}")
    return value


def _url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name}: {parts.scheme or 'no'} scheme; expected an http(s) URL")
    return value.rstrip("/")


def _url_list(env: Mapping[str, str], name: str, what: str) -> tuple[str, ...]:
    items = [item.strip() for item in _required(env, name, what).split(",") if item.strip()]
    if not items:
        raise SettingsError(f"{name} is empty: it lists {what}, comma-separated")
    return tuple(_url(name, item) for item in items)


def _int(
    env: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}: {value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name}: {value} is above the maximum {maximum}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise SettingsError(f"{name}: {raw!r} is not a boolean (use true or false)")


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    temporal_address: str
    temporal_namespace: str
    task_queue: str
    database_url: SecretStr  # may carry a password
    db_pool_min: int
    db_pool_max: int
    solana_rpc_endpoints: tuple[str, ...]
    solana_timeout_s: float
    solana_priority_fee_cap: int  # micro-lamports per compute unit
    solana_priority_fee_percentile: int
    pinata_api_url: str
    pinata_jwt: SecretStr
    kubo_api_url: str
    ipfs_gateways: tuple[str, ...]
    mint_key_seed: SecretStr
    mint_authority_keypair: Path
    mint_image_dir: Path | None
    image_max_bytes: int
    image_allow_private_urls: bool
    metrics_port: int = 0  # the worker's Prometheus endpoint; 0: none

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        pool_min = _int(env, "DB_POOL_MIN", 5, minimum=1)
        pool_max = _int(env, "DB_POOL_MAX", 20, minimum=1)
        if pool_max < pool_min:
            raise SettingsError(f"DB_POOL_MAX ({pool_max}) is below DB_POOL_MIN ({pool_min})")
        image_dir = env.get("MINT_IMAGE_DIR", "").strip()
        if image_dir and not Path(image_dir).is_dir():
            raise SettingsError(f"MINT_IMAGE_DIR: {image_dir} is not a folder")
        keypair = Path(_required(env, "MINT_AUTHORITY_KEYPAIR", "the system wallet's keypair file"))
        if not keypair.is_file():
            raise SettingsError(f"MINT_AUTHORITY_KEYPAIR: {keypair} is not a file")
        return cls(
            temporal_address=env.get("TEMPORAL_ADDRESS", "").strip() or "127.0.0.1:7233",
            temporal_namespace=env.get("TEMPORAL_NAMESPACE", "").strip() or "default",
            task_queue=env.get("TEMPORAL_TASK_QUEUE", "").strip() or "mint-saga",
            database_url=SecretStr(_required(env, "DATABASE_URL", "the Postgres database")),
            db_pool_min=pool_min,
            db_pool_max=pool_max,
            solana_rpc_endpoints=_url_list(
                env, "SOLANA_RPC_ENDPOINTS", "the Solana RPC endpoints, primary first"
            ),
            solana_timeout_s=_int(env, "SOLANA_TIMEOUT_MS", 30_000, minimum=100) / 1000,
            solana_priority_fee_cap=_int(
                env, "SOLANA_PRIORITY_FEE_CAP", DEFAULT_PRIORITY_FEE_CAP, maximum=MAX_U64
            ),
            solana_priority_fee_percentile=_int(
                env,
                "SOLANA_PRIORITY_FEE_PERCENTILE",
                DEFAULT_PRIORITY_FEE_PERCENTILE,
                minimum=0,
                maximum=100,
            ),
            pinata_api_url=_url(
                "PINATA_API_URL",
                env.get("PINATA_API_URL", "").strip() or "https://api.pinata.cloud",
            ),
            pinata_jwt=SecretStr(_required(env, "PINATA_JWT", "the Pinata API token")),
            kubo_api_url=_url(
                "KUBO_API_URL",
                _required(env, "KUBO_API_URL", "the backup IPFS provider (Kubo RPC)"),
            ),
            ipfs_gateways=_url_list(env, "IPFS_GATEWAYS", "the IPFS gateways to read through"),
            mint_key_seed=SecretStr(
                _required(env, "MINT_KEY_SEED", "the secret that derives each mint's keypair")
            ),
            mint_authority_keypair=keypair,
            mint_image_dir=Path(image_dir) if image_dir else None,
            image_max_bytes=_int(env, "MINT_IMAGE_MAX_BYTES", 10 * 2**20, minimum=1),
            image_allow_private_urls=_bool(env, "MINT_IMAGE_ALLOW_PRIVATE_URLS"),
            metrics_port=_int(env, "METRICS_PORT", 0, minimum=0, maximum=65535),
        )
