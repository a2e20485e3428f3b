"""Which Temporal the worker and the starter reach, and how: address, namespace, API key, TLS.

`TemporalTarget` reads the Temporal SDK's own environment configuration (`temporalio.envconfig`)
and, when set, the stricter `TemporalSecurity` (API key and TLS, each error naming its
variable); the older TLS names are read as aliases (`TEMPORAL_TLS_ALIASES`).
`mintsaga.temporal_client.connect` connects with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretBytes, SecretStr
from temporalio.envconfig import ClientConfigProfile
from temporalio.service import TLSConfig

from mintsaga.setting_readers import (
    SettingsError,
    _read_setting_file,
    bool_setting,
    secret_from_env,
)


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
