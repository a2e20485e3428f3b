"""The worker's configuration, read once from the environment.

Every error names the variable at fault and never echoes a secret's value. Secrets are kept as
`SecretStr`, so printing the settings shows `**********`. Each secret setting (`DATABASE_URL`,
`PINATA_JWT`, `MINT_KEY_SEED`, `TEMPORAL_API_KEY`, the codec's `MINTSAGA_CODEC_KEYS` and
`MINTSAGA_CODEC_TOKEN`) may instead name a file holding it: `NAME_FILE` (`secret_from_env`).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretBytes, SecretStr
from temporalio.envconfig import ClientConfigProfile
from temporalio.service import TLSConfig

from mintsaga.errors import endpoint_name

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


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _required(env: Mapping[str, str], name: str, what: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name} is not set: it names {what}")
    return value


FILE_SUFFIX = "_FILE"


def _read_setting_file(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"{setting}: cannot read {path} ({exc.strerror or exc})") from None


def secret_from_env(
    env: Mapping[str, str], name: str, what: str = "", *, required: bool = True
) -> str | None:
    """A secret setting: `NAME` holds the value, or `NAME_FILE` the path of a file holding it
    (a mounted Kubernetes or compose secret; surrounding whitespace, the final newline too, is
    dropped). Both set, the file unreadable or empty, or (when `required`) neither set: a
    SettingsError naming the variable, never the value. None when optional and unset."""
    file_setting = name + FILE_SUFFIX
    value = env.get(name, "").strip()
    path = env.get(file_setting, "").strip()
    if value and path:
        raise SettingsError(
            f"{name} and {file_setting} are both set: set one (the value, or the path of a file"
            " holding it)"
        )
    if path:
        try:
            value = _read_setting_file(file_setting, path).decode().strip()
        except UnicodeDecodeError:
            raise SettingsError(f"{file_setting}: {path} is not UTF-8 text") from None
        if not value:
            raise SettingsError(f"{file_setting}: {path} is empty")
    if value:
        return value
    if required:
        raise SettingsError(
            f"{name} is not set (nor {file_setting}, a file holding it): it names {what}"
        )
    return None


def _required_secret(env: Mapping[str, str], name: str, what: str) -> str:
    value = secret_from_env(env, name, what)
    assert value is not None  # required: missing raises
    return value


def _url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name}: {parts.scheme or 'no'} scheme; expected an http(s) URL")
    return value.rstrip("/")


def _url_list(env: Mapping[str, str], name: str, what: str) -> tuple[str, ...]:
    items = [item.strip() for item in _required_secret(env, name, what).split(",") if item.strip()]
    if not items:
        raise SettingsError(f"{name} is empty: it lists {what}, comma-separated")
    return tuple(_url(name, item) for item in items)


def _named_urls(env: Mapping[str, str], name: str, what: str) -> tuple[str, ...]:
    """`_url_list`, each URL's name (`endpoint_name`: the URL without its key) unique: the
    runtime settings and the breakers know endpoints by those names."""
    urls = _url_list(env, name, what)
    names = [endpoint_name(url) for url in urls]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SettingsError(
            f"{name}: {', '.join(twice)} is listed twice (the same URL, or the same one with"
            " another key): each endpoint must be told apart without its key"
        )
    return urls


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


def bool_setting(env: Mapping[str, str], name: str) -> bool:
    """A true/false setting: unset, 0, false or no is false; 1, true or yes is true."""
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise SettingsError(f"{name}: {raw!r} is not a boolean (use true or false)")


def _pem_file(
    env: Mapping[str, str], name: str, what: str, shown: str | None = None
) -> bytes | None:
    """The PEM file whose path `name` holds; errors name `shown` (the variable really set)."""
    path = env.get(name, "").strip()
    if not path:
        return None
    data = _read_setting_file(shown or name, path)
    if b"-----BEGIN " not in data:
        raise SettingsError(f"{shown or name}: {path} is not PEM text; expected {what}")
    return data


# The SDK's own names (temporalio.envconfig, the Temporal CLI; the table at
# https://docs.temporal.io/references/client-environment-configuration) -> the names this
# project used before it followed them, still read as aliases.
TEMPORAL_TLS_ALIASES = {
    "TEMPORAL_TLS_CLIENT_CERT_PATH": "TEMPORAL_TLS_CERT",
    "TEMPORAL_TLS_CLIENT_KEY_PATH": "TEMPORAL_TLS_KEY",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH": "TEMPORAL_TLS_CA",
}


def with_temporal_aliases(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with each alias (`TEMPORAL_TLS_CERT`, ...) copied to the SDK's name
    (`TEMPORAL_TLS_CLIENT_CERT_PATH`, ...); both set to different values: a SettingsError."""
    found = dict(env)
    for name, alias in TEMPORAL_TLS_ALIASES.items():
        ours, theirs = env.get(alias, "").strip(), env.get(name, "").strip()
        if ours and theirs and ours != theirs:
            raise SettingsError(f"{name} and {alias} (its older name) differ: set one")
        if ours and not theirs:
            found[name] = ours
    return found


def _tls_setting_name(env: Mapping[str, str], name: str) -> str:
    """The variable a TLS setting came from, for messages: the alias when only it is set."""
    alias = TEMPORAL_TLS_ALIASES[name]
    return alias if env.get(alias, "").strip() and not env.get(name, "").strip() else name


def _sibling(present: str, name: str) -> str:
    """`name`, or its older alias when the setting beside it (`present`) was an older name."""
    return TEMPORAL_TLS_ALIASES[name] if present in TEMPORAL_TLS_ALIASES.values() else name


class TemporalSecurity(BaseModel):
    """How the worker and the starter reach a secured Temporal: Temporal Cloud or a cluster
    with TLS. Plaintext without an API key (the devstack, an in-cluster server) by default.
    The names are the Temporal SDK's (`temporalio.envconfig`), checked here more strictly than
    the SDK does, each error naming the variable.

    `TEMPORAL_API_KEY` (or `TEMPORAL_API_KEY_FILE`): sent as a bearer token; turns TLS on
    unless `TEMPORAL_TLS=false`. `TEMPORAL_TLS_CLIENT_CERT_PATH` and
    `TEMPORAL_TLS_CLIENT_KEY_PATH` (or their older names `TEMPORAL_TLS_CERT`, `TEMPORAL_TLS_KEY`):
    paths of the client's PEM certificate and key, for mTLS (both or neither).
    `TEMPORAL_TLS_SERVER_CA_CERT_PATH` (or `TEMPORAL_TLS_CA`): the PEM CA that signed the
    server's certificate (default: the system's roots). `TEMPORAL_TLS_SERVER_NAME`: the name to
    send (SNI) and verify the server's certificate against, when it is not the host of
    `TEMPORAL_ADDRESS`. Any of these turns TLS on; `TEMPORAL_TLS=true` turns it on with none.
    """

    model_config = ConfigDict(frozen=True)

    api_key: SecretStr | None = None
    tls: bool = False
    client_cert: bytes | None = None
    client_key: SecretBytes | None = None
    server_ca: bytes | None = None
    server_name: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TemporalSecurity:
        given = os.environ if env is None else env
        env = with_temporal_aliases(given)
        api_key = secret_from_env(env, "TEMPORAL_API_KEY", required=False)
        cert_name = _tls_setting_name(given, "TEMPORAL_TLS_CLIENT_CERT_PATH")
        key_name = _tls_setting_name(given, "TEMPORAL_TLS_CLIENT_KEY_PATH")
        ca_name = _tls_setting_name(given, "TEMPORAL_TLS_SERVER_CA_CERT_PATH")
        cert = _pem_file(
            env, "TEMPORAL_TLS_CLIENT_CERT_PATH", "the client's certificate", cert_name
        )
        key = _pem_file(env, "TEMPORAL_TLS_CLIENT_KEY_PATH", "the client's private key", key_name)
        if (cert is None) != (key is None):
            # The missing one is named the way the present one was set (older name or SDK's).
            if key is None:
                key_name = _sibling(cert_name, "TEMPORAL_TLS_CLIENT_KEY_PATH")
            else:
                cert_name = _sibling(key_name, "TEMPORAL_TLS_CLIENT_CERT_PATH")
            missing = key_name if key is None else cert_name
            raise SettingsError(
                f"{missing} is not set: mTLS needs both the client's certificate"
                f" ({cert_name}) and key ({key_name}), paths of PEM files"
            )
        ca = _pem_file(
            env, "TEMPORAL_TLS_SERVER_CA_CERT_PATH", "the CA certificate of the server's", ca_name
        )
        server_name = env.get("TEMPORAL_TLS_SERVER_NAME", "").strip() or None
        tls_settings = [
            name
            for name, value in (
                (cert_name, cert),
                (ca_name, ca),
                ("TEMPORAL_TLS_SERVER_NAME", server_name),
            )
            if value
        ]
        if env.get("TEMPORAL_TLS", "").strip():
            tls = bool_setting(env, "TEMPORAL_TLS")
            if not tls and tls_settings:
                raise SettingsError(
                    f"TEMPORAL_TLS is false, but {', '.join(tls_settings)} need TLS: unset one"
                )
        else:
            tls = bool(tls_settings) or api_key is not None
        return cls(
            api_key=SecretStr(api_key) if api_key else None,
            tls=tls,
            client_cert=cert,
            client_key=SecretBytes(key) if key else None,
            server_ca=ca,
            server_name=server_name,
        )

    def connect_options(self) -> dict[str, Any]:
        """The `api_key` and `tls` keywords of `Client.connect`."""
        tls: bool | TLSConfig = self.tls
        if self.tls and (self.client_cert or self.server_ca or self.server_name):
            tls = TLSConfig(
                server_root_ca_cert=self.server_ca,
                domain=self.server_name,
                client_cert=self.client_cert,
                client_private_key=self.client_key.get_secret_value() if self.client_key else None,
            )
        return {
            "api_key": self.api_key.get_secret_value() if self.api_key else None,
            "tls": tls,
        }


# Set in the environment, these decide the API key and TLS (else a TOML profile's do).
TEMPORAL_SECURITY_SETTINGS = (
    "TEMPORAL_API_KEY",
    "TEMPORAL_API_KEY_FILE",
    "TEMPORAL_TLS",
    "TEMPORAL_TLS_SERVER_NAME",
    *TEMPORAL_TLS_ALIASES,
    *TEMPORAL_TLS_ALIASES.values(),
)


class TemporalTarget(BaseModel):
    """Which Temporal to reach and how: what `mintsaga.temporal_client.connect` needs.

    Read with the Temporal SDK's own environment configuration (`temporalio.envconfig`, the
    same as the `temporal` CLI's: https://docs.temporal.io/references/client-environment-configuration):
    `TEMPORAL_ADDRESS` (default 127.0.0.1:7233), `TEMPORAL_NAMESPACE` (default `default`),
    `TEMPORAL_GRPC_META_*`, and a TOML profile (`TEMPORAL_CONFIG_FILE`, `TEMPORAL_PROFILE`)
    where one exists. The API key and TLS come from `TemporalSecurity` (stricter checks, a
    `_FILE` secret, the older names) when any of them is set in the environment, else from
    the profile.
    """

    model_config = ConfigDict(frozen=True)

    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    security: TemporalSecurity = TemporalSecurity()
    rpc_metadata: dict[str, str] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TemporalTarget:
        env = os.environ if env is None else env
        security = TemporalSecurity.from_env(env)  # strict checks first, each naming its variable
        config_file = env.get("TEMPORAL_CONFIG_FILE", "").strip()
        if config_file and not Path(config_file).is_file():  # the SDK would silently skip it
            raise SettingsError(f"TEMPORAL_CONFIG_FILE: {config_file} is not a file")
        # The SDK's default file (~/.config/temporalio/temporal.toml) is read only when asked
        # for: a developer's Temporal Cloud profile must not redirect the devstack's clients.
        asked = any(env.get(n, "").strip() for n in ("TEMPORAL_CONFIG_FILE", "TEMPORAL_PROFILE"))
        try:
            profile = ClientConfigProfile.load(
                override_env_vars=with_temporal_aliases(env), disable_file=not asked
            )
            config: dict[str, Any] = dict(profile.to_client_connect_config())
        except Exception as exc:  # the SDK's ConfigError (a malformed file, no such profile)
            raise SettingsError(f"TEMPORAL_CONFIG_FILE / TEMPORAL_PROFILE: {exc}") from exc
        if not any(env.get(name, "").strip() for name in TEMPORAL_SECURITY_SETTINGS):
            security = _security_from_profile(config, security)
        return cls(
            address=str(config.get("target_host") or "").strip()
            or cls.model_fields["address"].default,
            namespace=str(config.get("namespace") or "").strip()
            or cls.model_fields["namespace"].default,
            security=security,
            rpc_metadata=dict(config.get("rpc_metadata") or {}),
        )

    def connect_options(self) -> dict[str, Any]:
        """The keywords of `Client.connect` but the converter, interceptors and runtime."""
        return {
            "target_host": self.address,
            "namespace": self.namespace,
            "rpc_metadata": dict(self.rpc_metadata),
            **self.security.connect_options(),
        }


def _security_from_profile(
    config: Mapping[str, Any], default: TemporalSecurity
) -> TemporalSecurity:
    """The API key and TLS a TOML profile set, as a TemporalSecurity (`default` when none)."""
    api_key, tls = config.get("api_key"), config.get("tls")
    if api_key is None and tls is None:
        return default
    fields: dict[str, Any] = {"api_key": SecretStr(api_key) if api_key else None}
    if isinstance(tls, TLSConfig):
        fields |= {
            "tls": True,
            "client_cert": tls.client_cert,
            "client_key": SecretBytes(tls.client_private_key) if tls.client_private_key else None,
            "server_ca": tls.server_root_ca_cert,
            "server_name": tls.domain,
        }
    else:
        fields["tls"] = bool(tls)
    return TemporalSecurity(**fields)


# -- worker tuning and the fleet-wide Pinata rate -------------------------------------------

# Pinata's plans (https://docs.pinata.cloud/account-management/limits): Free 60 requests a
# minute, Picnic 250, Fiesta 500, and on every plan 30 a minute for the /data/* routes
# (testAuthentication, pinList). PINATA_REQUESTS_PER_MINUTE names the account's plan and has no
# default (a wrong guess is a 429 storm on a free account or a fleet held back on a paid one);
# this is the rate `WorkerTuning()` assumes when built without one (the free plan's).
PINATA_REQUESTS_PER_MINUTE = 60
PINATA_DATA_REQUESTS_PER_MINUTE = 30
# The share of it the fleet's Pinata activities may use. The rest is for what the task queue's
# limit does not pace: the health checks (an upload and an unpin each probe, one schedule for
# the whole fleet), operators' tools, and the burst Temporal's token bucket lets through after
# a lull.
PINATA_HEADROOM = 0.8
# Pinata requests per activity on the Pinata queue: 0 for check_ipfs (it asks no Pinata
# endpoint: activities/ipfs.py), 1 for upload_image and upload_metadata, 2 for release_pins
# (image and metadata unpinned). The worst mix, every mint rolled back after its uploads,
# averages (0 + 1 + 1 + 2) / 4 = 1; the happy path (0 + 1 + 1) / 3 = 0.67.
PINATA_REQUESTS_PER_ACTIVITY = 1.0


def pinata_activities_per_second(requests_per_minute: int = PINATA_REQUESTS_PER_MINUTE) -> float:
    """The task-queue-wide activity rate that keeps the whole fleet under a Pinata plan of
    `requests_per_minute`: for the free plan's 60, 60 x 0.8 / 60 / 1 = 0.8 activities a
    second."""
    return round(requests_per_minute * PINATA_HEADROOM / 60 / PINATA_REQUESTS_PER_ACTIVITY, 3)


def pinata_limits_from_env(env: Mapping[str, str]) -> tuple[int, int]:
    """(PINATA_REQUESTS_PER_MINUTE, PINATA_DATA_REQUESTS_PER_MINUTE): the account's plan,
    required, and its /data/* limit (30, Pinata's documented figure for every plan)."""
    name = "PINATA_REQUESTS_PER_MINUTE"
    if not env.get(name, "").strip():
        raise SettingsError(
            f"{name} is not set: it names the Pinata plan's request limit (60 on the free plan,"
            " 250 Picnic, 500 Fiesta: https://docs.pinata.cloud/account-management/limits)"
        )
    rpm = _int(env, name, PINATA_REQUESTS_PER_MINUTE, minimum=1)
    data = _int(env, "PINATA_DATA_REQUESTS_PER_MINUTE", PINATA_DATA_REQUESTS_PER_MINUTE, minimum=1)
    return rpm, data


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a number") from None
    if not value >= minimum or value == float("inf"):  # NaN fails the first test
        raise SettingsError(f"{name}: {raw} is not a finite number >= {minimum:g}")
    return value


class Pollers(BaseModel):
    """How many long polls a worker keeps open on a task queue: at most `maximum`, or, with
    `minimum` set, as many between the two as the server's backlog hints ask for (autoscaling)."""

    model_config = ConfigDict(frozen=True)

    maximum: int = 5  # the Temporal SDK's default
    minimum: int | None = None  # None: a fixed maximum; set: autoscaling between the two


def _pollers(env: Mapping[str, str], name: str, *, least: int) -> Pollers:
    """`N` (at most N polls), `auto` (autoscaling, `least`..100) or `auto:MIN:MAX`."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return Pollers()
    usage = f"use a number of pollers (at least {least}), auto, or auto:MIN:MAX"
    if raw == "auto":
        return Pollers(minimum=least, maximum=100)
    if raw.startswith("auto:"):
        bounds = raw.removeprefix("auto:").split(":")
        if len(bounds) != 2 or not all(b.isdigit() for b in bounds):
            raise SettingsError(f"{name}: {raw!r} is not auto:MIN:MAX; {usage}")
        low, high = (int(b) for b in bounds)
        if not least <= low <= high:
            raise SettingsError(f"{name}: {raw!r} needs {least} <= MIN <= MAX")
        return Pollers(minimum=low, maximum=high)
    if not raw.isdigit() or int(raw) < least:
        raise SettingsError(f"{name}: {raw!r}: {usage}")
    return Pollers(maximum=int(raw))


class WorkerTuning(BaseModel):
    """How much one worker process takes on, and how it stops (docs/configuration.md, "Worker
    settings")."""

    model_config = ConfigDict(frozen=True)

    max_concurrent_activities: int = 100  # per task queue the process serves
    max_concurrent_workflow_tasks: int = 100
    max_cached_workflows: int = 1000  # the sticky cache; 0: every task replays the history
    workflow_pollers: Pollers = Pollers()
    activity_pollers: Pollers = Pollers()
    drain_s: int = 30  # after SIGTERM: running activities get this long to finish
    # Temporal's task-queue-wide limit on the Pinata queue, for the whole fleet; None: no limit.
    pinata_activities_per_second: float | None = pinata_activities_per_second()

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, pinata_requests_per_minute: int | None = None
    ) -> WorkerTuning:
        """From `env`; the Pinata queue's rate is PINATA_ACTIVITIES_PER_SECOND when set, else
        what the plan (`pinata_requests_per_minute`, the free plan's when None) allows."""
        cached = _int(env, "WORKER_MAX_CACHED_WORKFLOWS", 1000, minimum=0)
        plan_rate = pinata_activities_per_second(
            pinata_requests_per_minute or PINATA_REQUESTS_PER_MINUTE
        )
        rate = _float(env, "PINATA_ACTIVITIES_PER_SECOND", plan_rate)
        return cls(
            max_concurrent_activities=_int(env, "WORKER_MAX_CONCURRENT_ACTIVITIES", 100, minimum=1),
            max_concurrent_workflow_tasks=_int(
                env, "WORKER_MAX_CONCURRENT_WORKFLOW_TASKS", 100, minimum=1
            ),
            max_cached_workflows=cached,
            # With a sticky cache, the SDK needs two workflow pollers (sticky and normal queue).
            workflow_pollers=_pollers(env, "WORKER_WORKFLOW_POLLERS", least=2 if cached else 1),
            activity_pollers=_pollers(env, "WORKER_ACTIVITY_POLLERS", least=1),
            drain_s=_int(env, "WORKER_DRAIN_S", 30, minimum=0),
            pinata_activities_per_second=rate or None,
        )


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
