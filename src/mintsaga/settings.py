"""The worker's configuration, read once from the environment.

Every error names the variable at fault and never echoes a secret's value. Secrets are kept as
`SecretStr`, so printing the settings shows `**********`. Each secret setting (`DATABASE_URL`,
`PINATA_JWT`, `MINT_KEY_SEED`, `TEMPORAL_API_KEY`, the codec's `MINTSAGA_CODEC_KEYS` and
`MINTSAGA_CODEC_TOKEN`) may instead name a file holding it: `NAME_FILE` (`secret_from_env`).

Here: `Settings` and the readers of the Solana, IPFS, NFT and webhook settings. Beside it: how one
variable is read and `SettingsError` (`mintsaga.setting_readers`), the Temporal connection
(`mintsaga.temporal_settings`), the worker's tuning and the Pinata queue's rate
(`mintsaga.worker_tuning`).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

from mintsaga.errors import endpoint_name
from mintsaga.setting_readers import (
    SettingsError,
    _float,
    _int,
    _named_urls,
    _required,
    _required_secret,
    _url,
    _url_list,
    bool_setting,
    secret_from_env,
)
from mintsaga.temporal_settings import TemporalSecurity, TemporalTarget
from mintsaga.worker_tuning import (
    PINATA_DATA_REQUESTS_PER_MINUTE,
    PINATA_REQUESTS_PER_MINUTE,
    WorkerTuning,
    pinata_limits_from_env,
)

# The priority fee's defaults (mintsaga.solana.fees applies them).
DEFAULT_PRIORITY_FEE_PERCENTILE = 75
DEFAULT_PRIORITY_FEE_CAP = 100_000  # micro-lamports per CU: at ~30k CU, 3,000 lamports
# No setting, request or operator may bid above this: 10,000,000 micro-lamports per CU is
# 2,000,000 lamports (0.002 SOL) at the 200,000 CU fallback limit.
MAX_PRIORITY_FEE_MICRO_LAMPORTS = 10_000_000
# An operator's retry may bid up to this many times the cap (SOLANA_OPERATOR_PRIORITY_FEE_CAP).
OPERATOR_FEE_CAP_FACTOR = 10


# The spend breaker's default: 10 SOL an hour is ~1,700 mints at the default fee cap (each
# ~0.0058 SOL of rent and fees), far above one honest worker's pace, far below a drained wallet.
DEFAULT_SPEND_LIMIT_SOL_PER_HOUR = 10.0
SPEND_LIMIT_SETTING = "SOLANA_SPEND_LIMIT_SOL_PER_HOUR"
LAMPORTS_PER_SOL = 1_000_000_000


def rate_limits_from_env(
    env: Mapping[str, str], name: str, endpoints: int
) -> tuple[float | None, ...]:
    """A plan's per-second limit per Solana endpoint (``SOLANA_RPC_REQUESTS_PER_S``,
    ``SOLANA_RPC_SENDS_PER_S``): one number for every endpoint, or one per endpoint of
    ``SOLANA_RPC_ENDPOINTS`` in order; 0 or unset: no limit. (None,) when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return (None,)
    parts = [part.strip() for part in raw.split(",")]
    if len(parts) not in (1, endpoints):
        raise SettingsError(
            f"{name}: {len(parts)} limits for {endpoints} endpoints; give one for all, or one "
            "per endpoint of SOLANA_RPC_ENDPOINTS in order"
        )
    limits: list[float | None] = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise SettingsError(f"{name}: {part!r} is not a number of calls per second") from None
        if not 0 <= value < float("inf"):
            raise SettingsError(f"{name}: {part} is not a finite number >= 0")
        limits.append(value or None)
    return tuple(limits)


def priority_fee_cap_from_env(env: Mapping[str, str] | None = None) -> int:
    """SOLANA_PRIORITY_FEE_CAP, as the worker reads it (the starter checks requests with it)."""
    env = os.environ if env is None else env
    return _int(
        env,
        "SOLANA_PRIORITY_FEE_CAP",
        DEFAULT_PRIORITY_FEE_CAP,
        maximum=MAX_PRIORITY_FEE_MICRO_LAMPORTS,
    )


MAX_U64 = 2**64 - 1


def operator_fee_cap_from_env(env: Mapping[str, str] | None = None) -> int:
    """SOLANA_OPERATOR_PRIORITY_FEE_CAP, as the worker reads it (the CLI warns with it)."""
    env = os.environ if env is None else env
    cap = priority_fee_cap_from_env(env)
    default = min(cap * OPERATOR_FEE_CAP_FACTOR, MAX_PRIORITY_FEE_MICRO_LAMPORTS)
    operator_cap = _int(
        env,
        "SOLANA_OPERATOR_PRIORITY_FEE_CAP",
        default,
        maximum=MAX_PRIORITY_FEE_MICRO_LAMPORTS,
    )
    if operator_cap < cap:
        raise SettingsError(
            f"SOLANA_OPERATOR_PRIORITY_FEE_CAP: {operator_cap} is below SOLANA_PRIORITY_FEE_CAP"
            f" ({cap})"
        )
    return operator_cap


PRIORITY_FEE_ESTIMATORS = ("rpc", "helius")
_BASE58 = frozenset("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")


def priority_fee_estimator_from_env(env: Mapping[str, str]) -> str:
    """SOLANA_PRIORITY_FEE_ESTIMATOR: ``rpc`` (getRecentPrioritizationFees, the default) or
    ``helius`` (getPriorityFeeEstimate on the same endpoints; mintsaga.solana.fees)."""
    value = env.get("SOLANA_PRIORITY_FEE_ESTIMATOR", "").strip().lower() or "rpc"
    if value not in PRIORITY_FEE_ESTIMATORS:
        raise SettingsError(
            f"SOLANA_PRIORITY_FEE_ESTIMATOR: {value!r} is not one of"
            f" {', '.join(PRIORITY_FEE_ESTIMATORS)}"
        )
    return value


def priority_fee_accounts_from_env(env: Mapping[str, str]) -> tuple[str, ...]:
    """SOLANA_PRIORITY_FEE_ACCOUNTS: busy accounts (base58, comma-separated, at most 100) whose
    recent fees the estimator samples beside the Token-2022 program's."""
    accounts = tuple(
        a.strip() for a in env.get("SOLANA_PRIORITY_FEE_ACCOUNTS", "").split(",") if a.strip()
    )
    for account in accounts:
        if not 32 <= len(account) <= 44 or not set(account) <= _BASE58:
            raise SettingsError(
                f"SOLANA_PRIORITY_FEE_ACCOUNTS: {account!r} is not a base58 address"
            )
    if len(accounts) > 100:
        raise SettingsError("SOLANA_PRIORITY_FEE_ACCOUNTS: at most 100 accounts")
    return accounts


def priority_fee_blind_warning(
    estimator: str, accounts: Sequence[str], endpoints: Sequence[str]
) -> str | None:
    """The worker's start-up warning (issue 15) when the priority fee would read ~0 on a real
    cluster: the ``rpc`` estimator with no SOLANA_PRIORITY_FEE_ACCOUNTS samples only the mint's
    own new accounts and the Token-2022 program (never write-locked), for which a node answers
    the block's minimum, most often 0. None when ``helius`` estimates, when accounts are named,
    or when every endpoint is on this machine (the devstack, tests)."""
    if estimator != "rpc" or accounts:
        return None
    if all(_is_loopback(urlsplit(url).hostname or "") for url in endpoints):
        return None
    return (
        "SOLANA_PRIORITY_FEE_ESTIMATOR=rpc with SOLANA_PRIORITY_FEE_ACCOUNTS empty: the priority"
        " fee samples only the mint's own new accounts and the Token-2022 program, ~0 on mainnet,"
        " so mints under load may expire and re-sign; set SOLANA_PRIORITY_FEE_ACCOUNTS to busy"
        " writable accounts, or SOLANA_PRIORITY_FEE_ESTIMATOR=helius on Helius endpoints"
        " (docs/deploy.md, 'The priority fee on mainnet')"
    )


# SOLANA_COMMITMENT: what the confirmation wait takes as landed and the verification before
# MINTED reads at. ``processed`` is refused: a processed block can still be skipped.
SOLANA_COMMITMENTS = ("confirmed", "finalized")
DEFAULT_SOLANA_COMMITMENT = "confirmed"
# SOLANA_MAX_SLOT_LAG's default: an endpoint more `confirmed` slots than this behind the best
# is asked last (solana/rpc.py); the health check's MAX_SLOT_LAG, and a blockhash's 150 slots.
DEFAULT_MAX_SLOT_LAG = 150

WEBHOOK_SECRET_PREFIX = "whsec_"
# The task queue backlog the queue alert calls full (TASK_QUEUE_CAPACITY): tasks, not mints.
DEFAULT_TASK_QUEUE_CAPACITY = 1000


def commitment_from_env(env: Mapping[str, str]) -> str:
    """SOLANA_COMMITMENT: ``confirmed`` (the default: ~13 s sooner under Tower BFT) or
    ``finalized`` (the money-grade choice; docs/design.md, "The commitment")."""
    value = env.get("SOLANA_COMMITMENT", "").strip().lower() or DEFAULT_SOLANA_COMMITMENT
    if value not in SOLANA_COMMITMENTS:
        why = " (a processed block can still be skipped)" if value == "processed" else ""
        raise SettingsError(
            f"SOLANA_COMMITMENT: {value!r} is not one of {', '.join(SOLANA_COMMITMENTS)}{why}"
        )
    return value


METADATA_URI_STYLES = ("gateway", "ipfs")
# A longest name and symbol with this still fit a transaction, for a collection member with
# immutable metadata too (tests/unit/solana/test_solana_nft_group.py measures it: 193 fits).
METADATA_GATEWAY_URL_MAX = 190


def metadata_links_from_env(env: Mapping[str, str], gateways: Sequence[str]) -> tuple[str, str]:
    """(METADATA_URI_STYLE, METADATA_GATEWAY_URL): how the NFT links its metadata and image
    (mintsaga.ipfs.metadata.ContentLinks). ``gateway`` (the default): https URLs under
    METADATA_GATEWAY_URL, by default the first of IPFS_GATEWAYS; it must be a public https
    gateway wallets can reach (plain http only on a loopback host: the devstack). ``ipfs``:
    ``ipfs://`` links (the gateway URL is then unused)."""
    style = env.get("METADATA_URI_STYLE", "").strip().lower() or "gateway"
    if style not in METADATA_URI_STYLES:
        raise SettingsError(
            f"METADATA_URI_STYLE: {style!r} is not one of {', '.join(METADATA_URI_STYLES)}"
        )
    given = env.get("METADATA_GATEWAY_URL", "").strip()
    name = "METADATA_GATEWAY_URL" if given else "IPFS_GATEWAYS (its first gateway)"
    url = _url(name, given) if given else (gateways[0] if gateways else "")
    if style == "ipfs":
        return style, url
    if not url:
        raise SettingsError("METADATA_GATEWAY_URL is not set: it names the gateway NFTs link to")
    parts = urlsplit(url)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise SettingsError(f"{name}: a gateway URL for NFTs has no query, fragment or user")
    if len(url) > METADATA_GATEWAY_URL_MAX:
        raise SettingsError(f"{name}: longer than {METADATA_GATEWAY_URL_MAX} characters")
    if parts.scheme != "https" and not _is_loopback(parts.hostname or ""):
        raise SettingsError(
            f"{name}: {url} is not https; NFTs link to a public https gateway "
            "(set METADATA_GATEWAY_URL, or METADATA_URI_STYLE=ipfs)"
        )
    return style, url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dedicated_gateway_from_env(env: Mapping[str, str]) -> str | None:
    """IPFS_DEDICATED_GATEWAY: the team's own gateway (a Pinata dedicated gateway, a private
    Kubo gateway), read first and the post-mint check's blocking one; None when unset."""
    value = secret_from_env(env, "IPFS_DEDICATED_GATEWAY", required=False)  # may hold a key
    return _url("IPFS_DEDICATED_GATEWAY", value) if value else None


UPDATE_AUTHORITY_SETTING = "MINT_UPDATE_AUTHORITY"
IMMUTABLE = "none"


def update_authority_from_env(env: Mapping[str, str]) -> str | None:
    """``MINT_UPDATE_AUTHORITY``: the public key (base58) that may later change an NFT's
    metadata, whose secret lives off the workers; ``none``: the metadata is immutable. Required:
    the fee-paying hot key is never the update authority (docs/design.md, "Authorities")."""
    raw = env.get(UPDATE_AUTHORITY_SETTING, "").strip()
    if not raw:
        raise SettingsError(
            f"{UPDATE_AUTHORITY_SETTING} is not set: it names the public key that may change an"
            " NFT's metadata (its secret kept off the workers), or `none` for immutable metadata"
        )
    if raw.lower() == IMMUTABLE:
        return None
    from solders.pubkey import Pubkey  # the foundation layer parses, nothing more

    try:
        key = Pubkey.from_string(raw)
    except ValueError:
        raise SettingsError(
            f"{UPDATE_AUTHORITY_SETTING}: {raw[:60]!r} is not a base58 public key of 32 bytes"
            " (nor `none`); give the public key, never a keypair or a secret"
        ) from None
    return str(key)


GROUP_AUTHORITY_SETTING = "MINT_GROUP_AUTHORITY_KEYPAIR"


def group_authority_from_env(env: Mapping[str, str]) -> Path | None:
    """``MINT_GROUP_AUTHORITY_KEYPAIR``: the keypair file of the collections' group update
    authority, which signs each member's joining (docs/design.md, "Authorities"); unset: no
    collections on this worker."""
    raw = env.get(GROUP_AUTHORITY_SETTING, "").strip()
    if not raw:
        return None
    if not Path(raw).is_file():
        raise SettingsError(f"{GROUP_AUTHORITY_SETTING}: {raw} is not a file")
    return Path(raw)


def webhooks_from_env(env: Mapping[str, str]) -> tuple[tuple[str, ...], tuple[SecretStr, ...]]:
    """WEBHOOK_URL (one or more http(s) URLs, comma-separated; each gets every notice) and
    WEBHOOK_SECRET (or WEBHOOK_SECRET_FILE): one or more Standard Webhooks secrets
    (``whsec_`` + base64), space-separated; each message is signed with every one, so a
    receiver may rotate its secret without losing a message. ((), ()) when WEBHOOK_URL is unset;
    a URL without a secret, or a malformed secret, is a SettingsError naming the variable."""
    if secret_from_env(env, "WEBHOOK_URL", required=False) is None:
        if secret_from_env(env, "WEBHOOK_SECRET", required=False) is not None:
            raise SettingsError("WEBHOOK_SECRET is set but WEBHOOK_URL is not: where to send?")
        return (), ()
    # Deliveries are stored per endpoint name (no key): two URLs must not share one.
    urls = _named_urls(env, "WEBHOOK_URL", "the backend's webhook receivers")
    raw = _required_secret(env, "WEBHOOK_SECRET", "the webhook signing secret (whsec_...)")
    secrets: list[SecretStr] = []
    for n, secret in enumerate(raw.split(), start=1):
        key = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
        try:
            decoded = base64.b64decode(key, validate=True) if key else b""
        except (binascii.Error, ValueError):
            decoded = b""
        # The spec's "Signing secret: Random. At least 24 bytes (192 bits, 512 maximum)"
        # (github.com/standard-webhooks/standard-webhooks, spec/standard-webhooks.md).
        if not secret.startswith(WEBHOOK_SECRET_PREFIX) or not 24 <= len(decoded) <= 64:
            raise SettingsError(
                f"WEBHOOK_SECRET: secret {n} is not a Standard Webhooks secret: expected"
                f" {WEBHOOK_SECRET_PREFIX} followed by base64 of 24 to 64 random bytes"
            )
        secrets.append(SecretStr(secret))
    return urls, tuple(secrets)


def emergency_endpoints_from_env(
    env: Mapping[str, str], endpoints: Sequence[str]
) -> tuple[str, ...]:
    """SOLANA_EMERGENCY_ENDPOINTS (or its _FILE): the spec's last-resort tier, asked only when
    no endpoint of SOLANA_RPC_ENDPOINTS can answer; comma-separated URLs, each named apart from
    the others and from the normal ones. () when unset."""
    name = "SOLANA_EMERGENCY_ENDPOINTS"
    if secret_from_env(env, name, required=False) is None:
        return ()
    urls = _named_urls(env, name, "the emergency Solana RPC endpoints (the last resort)")
    normal = {endpoint_name(url) for url in endpoints}
    both = sorted({endpoint_name(url) for url in urls} & normal)
    if both:
        raise SettingsError(
            f"{name}: {', '.join(both)} is also in SOLANA_RPC_ENDPOINTS: an endpoint is normal"
            " or emergency, not both"
        )
    return urls


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    temporal: TemporalTarget  # address, namespace, API key, TLS: what the worker connects with
    task_queue: str
    database_url: SecretStr  # may carry a password
    db_pool_min: int
    db_pool_max: int
    solana_rpc_endpoints: tuple[str, ...]
    solana_timeout_s: float
    # SOLANA_RPC_REQUESTS_PER_S / SOLANA_RPC_SENDS_PER_S: each endpoint's plan (None: no limit).
    solana_requests_per_s: tuple[float | None, ...] = (None,)
    solana_sends_per_s: tuple[float | None, ...] = (None,)
    # SOLANA_EMERGENCY_ENDPOINTS: the last-resort tier (solana/rpc.py); () when unset.
    solana_emergency_endpoints: tuple[str, ...] = ()
    # SOLANA_MAX_SLOT_LAG: an endpoint further behind the best is asked last; None: 0, off.
    solana_max_slot_lag: int | None = DEFAULT_MAX_SLOT_LAG
    solana_priority_fee_cap: int  # micro-lamports per compute unit
    solana_operator_priority_fee_cap: int  # an operator's retry may bid up to this
    solana_priority_fee_percentile: int
    # The spend breaker: what the system wallet may sign for in an hour, fleet-wide.
    solana_spend_limit_lamports_per_hour: int
    pinata_api_url: str
    pinata_jwt: SecretStr
    # PINATA_REQUESTS_PER_MINUTE (the plan; the Pinata queue's rate follows it) and
    # PINATA_DATA_REQUESTS_PER_MINUTE (this worker's /data/* budget: mintsaga.ipfs.pinata_data).
    pinata_requests_per_minute: int = PINATA_REQUESTS_PER_MINUTE
    pinata_data_requests_per_minute: int = PINATA_DATA_REQUESTS_PER_MINUTE
    kubo_api_url: str
    ipfs_gateways: tuple[str, ...]
    # IPFS_DEDICATED_GATEWAY: read first; the post-mint check's blocking gateway (ipfs/gateways.py).
    ipfs_dedicated_gateway: str | None = None
    mint_key_seed: SecretStr
    mint_authority_keypair: Path
    # MINT_UPDATE_AUTHORITY: who may change the NFTs' metadata (a public key); None: nobody.
    mint_update_authority: str | None
    # MINT_GROUP_AUTHORITY_KEYPAIR: the collections' group update authority (signs each member's
    # joining); None: mints naming a collection wait for an operator.
    mint_group_authority_keypair: Path | None = None
    mint_image_dir: Path | None
    image_max_bytes: int
    image_allow_private_urls: bool
    # Image bytes a worker holds at once (images in flight, by their cap while fetching).
    image_memory_budget_bytes: int
    metrics_port: int = 0  # the worker's Prometheus endpoint; 0: none
    tuning: WorkerTuning = WorkerTuning()  # WORKER_*, PINATA_ACTIVITIES_PER_SECOND
    # How the priority fee is estimated (mintsaga.solana.fees): SOLANA_PRIORITY_FEE_ESTIMATOR
    # and SOLANA_PRIORITY_FEE_ACCOUNTS.
    solana_priority_fee_estimator: str = "rpc"
    solana_priority_fee_accounts: tuple[str, ...] = ()
    # SOLANA_COMMITMENT: what the confirmation wait waits for and verify_nft reads at.
    solana_commitment: str = DEFAULT_SOLANA_COMMITMENT
    # METADATA_URI_STYLE and METADATA_GATEWAY_URL (metadata_links_from_env).
    metadata_uri_style: str = "ipfs"
    metadata_gateway_url: str = ""
    # WEBHOOK_URL and WEBHOOK_SECRET(_FILE) (webhooks_from_env): () when notices are not pushed.
    webhook_urls: tuple[str, ...] = ()
    webhook_secrets: tuple[SecretStr, ...] = ()
    # MINT_ADMISSION_LIMIT: mints between claim and pivot, fleet-wide; None: no limit.
    admission_limit: int | None = None
    # TASK_QUEUE_CAPACITY: the backlog the queue alert compares with (mintsaga_task_queue_capacity).
    task_queue_capacity: int = DEFAULT_TASK_QUEUE_CAPACITY

    @property
    def gateways_in_order(self) -> tuple[str, ...]:
        """Every gateway reads go through: IPFS_DEDICATED_GATEWAY first, then IPFS_GATEWAYS."""
        first = (self.ipfs_dedicated_gateway,) if self.ipfs_dedicated_gateway else ()
        return tuple(dict.fromkeys((*first, *self.ipfs_gateways)))

    @property
    def temporal_address(self) -> str:
        return self.temporal.address

    @property
    def temporal_namespace(self) -> str:
        return self.temporal.namespace

    @property
    def temporal_security(self) -> TemporalSecurity:
        return self.temporal.security

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
        endpoints = _named_urls(
            env, "SOLANA_RPC_ENDPOINTS", "the Solana RPC endpoints, primary first"
        )
        pinata_rpm, pinata_data_rpm = pinata_limits_from_env(env)
        gateways = _url_list(env, "IPFS_GATEWAYS", "the IPFS gateways to read through")
        uri_style, metadata_gateway = metadata_links_from_env(env, gateways)
        webhook_urls, webhook_secrets = webhooks_from_env(env)
        admission = _int(env, "MINT_ADMISSION_LIMIT", 0, minimum=0)
        return cls(
            temporal=TemporalTarget.from_env(env),
            task_queue=env.get("TEMPORAL_TASK_QUEUE", "").strip() or "mint-saga",
            database_url=SecretStr(_required_secret(env, "DATABASE_URL", "the Postgres database")),
            db_pool_min=pool_min,
            db_pool_max=pool_max,
            solana_rpc_endpoints=endpoints,
            # The longest wait for one endpoint's answer (solana/rpc.py: inside an activity the
            # attempt's time left, shared among the endpoints still to ask, may be shorter).
            solana_timeout_s=_int(env, "SOLANA_TIMEOUT_MS", 5_000, minimum=100) / 1000,
            solana_requests_per_s=rate_limits_from_env(
                env, "SOLANA_RPC_REQUESTS_PER_S", len(endpoints)
            ),
            solana_sends_per_s=rate_limits_from_env(env, "SOLANA_RPC_SENDS_PER_S", len(endpoints)),
            solana_emergency_endpoints=emergency_endpoints_from_env(env, endpoints),
            solana_max_slot_lag=_int(env, "SOLANA_MAX_SLOT_LAG", DEFAULT_MAX_SLOT_LAG, minimum=0)
            or None,
            solana_priority_fee_cap=priority_fee_cap_from_env(env),
            solana_operator_priority_fee_cap=operator_fee_cap_from_env(env),
            solana_priority_fee_percentile=_int(
                env,
                "SOLANA_PRIORITY_FEE_PERCENTILE",
                DEFAULT_PRIORITY_FEE_PERCENTILE,
                minimum=0,
                maximum=100,
            ),
            solana_spend_limit_lamports_per_hour=round(
                _float(
                    env,
                    SPEND_LIMIT_SETTING,
                    DEFAULT_SPEND_LIMIT_SOL_PER_HOUR,
                    minimum=0.0,
                )
                * LAMPORTS_PER_SOL
            ),
            pinata_api_url=_url(
                "PINATA_API_URL",
                env.get("PINATA_API_URL", "").strip() or "https://api.pinata.cloud",
            ),
            pinata_jwt=SecretStr(_required_secret(env, "PINATA_JWT", "the Pinata API token")),
            pinata_requests_per_minute=pinata_rpm,
            pinata_data_requests_per_minute=pinata_data_rpm,
            kubo_api_url=_url(
                "KUBO_API_URL",
                _required(env, "KUBO_API_URL", "the backup IPFS provider (Kubo RPC)"),
            ),
            ipfs_gateways=gateways,
            ipfs_dedicated_gateway=dedicated_gateway_from_env(env),
            metadata_uri_style=uri_style,
            metadata_gateway_url=metadata_gateway,
            mint_key_seed=SecretStr(
                _required_secret(
                    env, "MINT_KEY_SEED", "the secret that derives each mint's keypair"
                )
            ),
            mint_authority_keypair=keypair,
            mint_update_authority=update_authority_from_env(env),
            mint_group_authority_keypair=group_authority_from_env(env),
            mint_image_dir=Path(image_dir) if image_dir else None,
            image_max_bytes=_int(env, "MINT_IMAGE_MAX_BYTES", 10 * 2**20, minimum=1),
            image_allow_private_urls=bool_setting(env, "MINT_IMAGE_ALLOW_PRIVATE_URLS"),
            image_memory_budget_bytes=_int(
                env, "MINT_IMAGE_MEMORY_BUDGET_BYTES", 128 * 2**20, minimum=1
            ),
            metrics_port=_int(env, "METRICS_PORT", 0, minimum=0, maximum=65535),
            tuning=WorkerTuning.from_env(env, pinata_requests_per_minute=pinata_rpm),
            solana_priority_fee_estimator=priority_fee_estimator_from_env(env),
            solana_priority_fee_accounts=priority_fee_accounts_from_env(env),
            solana_commitment=commitment_from_env(env),
            webhook_urls=webhook_urls,
            webhook_secrets=webhook_secrets,
            admission_limit=admission or None,
            task_queue_capacity=_int(
                env, "TASK_QUEUE_CAPACITY", DEFAULT_TASK_QUEUE_CAPACITY, minimum=1
            ),
        )
