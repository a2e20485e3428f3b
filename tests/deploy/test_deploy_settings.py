"""Secrets from mounted files (`NAME_FILE`) and the Temporal connection's API key and TLS settings.

Pure: settings parsed from dictionaries and temporary files, no server. The connections these
settings make are tested against the devstack in tests/deploy/test_deploy_runtime.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.service import TLSConfig

import mintsaga
from mintsaga.api.switches import database_url
from mintsaga.codec import data_converter_from_env, keys_from_env
from mintsaga.codec.payloads import new_key_entry
from mintsaga.codec.server import server_settings_from_env
from mintsaga.observability.logging import secrets_from_env
from mintsaga.setting_readers import SettingsError, secret_from_env
from mintsaga.settings import Settings
from mintsaga.temporal_settings import TemporalSecurity, TemporalTarget
from tests.paths import ROOT

SEED = "ab" * 32
JWT = "eyJhbGciOiJIUzI1NiJ9.pinata-token-for-tests"
DSN = "postgresql://mintsaga:s3cret-password@db.example:5432/mintsaga"
WORKER_SECRETS = {"DATABASE_URL": DSN, "PINATA_JWT": JWT, "MINT_KEY_SEED": SEED}


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


def plain_env(tmp_path: Path) -> dict[str, str]:
    """Every required worker setting except the secrets."""
    return {
        "SOLANA_RPC_ENDPOINTS": "https://rpc-1.example,https://rpc-2.example",
        "KUBO_API_URL": "http://kubo.example:5001",
        "PINATA_REQUESTS_PER_MINUTE": "60",
        "IPFS_GATEWAYS": "https://gw.example",
        "MINT_AUTHORITY_KEYPAIR": write(tmp_path, "keypair.json", "[1, 2, 3]"),
        "MINT_UPDATE_AUTHORITY": "none",
    }


# -- NAME or NAME_FILE ---------------------------------------------------------------------------


def test_a_secret_comes_from_the_variable_or_from_the_file_it_names(tmp_path: Path) -> None:
    assert secret_from_env({"PINATA_JWT": f"  {JWT} "}, "PINATA_JWT") == JWT
    path = write(tmp_path, "jwt", JWT + "\n")  # a file written by `echo` ends with a newline
    assert secret_from_env({"PINATA_JWT_FILE": path}, "PINATA_JWT") == JWT
    assert secret_from_env({}, "PINATA_JWT", required=False) is None


def test_both_set_neither_set_empty_or_unreadable_each_name_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "jwt", JWT)
    with pytest.raises(SettingsError, match="PINATA_JWT and PINATA_JWT_FILE are both set") as both:
        secret_from_env({"PINATA_JWT": JWT, "PINATA_JWT_FILE": path}, "PINATA_JWT")
    with pytest.raises(SettingsError, match=r"PINATA_JWT is not set \(nor PINATA_JWT_FILE"):
        secret_from_env({}, "PINATA_JWT", "the Pinata API token")
    empty = write(tmp_path, "empty", "\n")
    with pytest.raises(SettingsError, match=f"PINATA_JWT_FILE: {empty} is empty"):
        secret_from_env({"PINATA_JWT_FILE": empty}, "PINATA_JWT")
    missing = str(tmp_path / "nowhere")
    with pytest.raises(SettingsError, match=f"PINATA_JWT_FILE: cannot read {missing}"):
        secret_from_env({"PINATA_JWT_FILE": missing}, "PINATA_JWT")
    with pytest.raises(SettingsError, match=r"PINATA_JWT_FILE: cannot read .*directory"):
        secret_from_env({"PINATA_JWT_FILE": str(tmp_path)}, "PINATA_JWT")
    binary = write(tmp_path, "binary", b"\xff\xfe\x00")
    with pytest.raises(SettingsError, match=r"PINATA_JWT_FILE: .* is not UTF-8 text"):
        secret_from_env({"PINATA_JWT_FILE": binary}, "PINATA_JWT")
    assert JWT not in str(both.value)  # an error never shows the value


def test_the_worker_reads_every_secret_from_files(tmp_path: Path) -> None:
    env = plain_env(tmp_path)
    for name, value in WORKER_SECRETS.items():
        env[f"{name}_FILE"] = write(tmp_path, name.lower(), value + "\n")
    env["SOLANA_RPC_ENDPOINTS_FILE"] = write(
        tmp_path, "rpc", "https://rpc.example/?api-key=k1,https://backup.example\n"
    )
    del env["SOLANA_RPC_ENDPOINTS"]
    settings = Settings.from_env(env)
    assert settings.database_url.get_secret_value() == DSN
    assert settings.pinata_jwt.get_secret_value() == JWT
    assert settings.mint_key_seed.get_secret_value() == SEED
    assert settings.solana_rpc_endpoints == (
        "https://rpc.example/?api-key=k1",
        "https://backup.example",
    )
    assert JWT not in repr(settings) and SEED not in repr(settings)


@pytest.mark.parametrize("name", [*WORKER_SECRETS, "SOLANA_RPC_ENDPOINTS"])
def test_the_worker_refuses_a_secret_given_twice_or_not_at_all(tmp_path: Path, name: str) -> None:
    env = {**plain_env(tmp_path), **WORKER_SECRETS}
    env[f"{name}_FILE"] = write(tmp_path, "value", env[name])
    with pytest.raises(SettingsError, match=f"^{name} and {name}_FILE are both set"):
        Settings.from_env(env)
    del env[name], env[f"{name}_FILE"]
    with pytest.raises(SettingsError, match=f"^{name} is not set \\(nor {name}_FILE"):
        Settings.from_env(env)


def test_the_worker_process_stops_with_the_variable_named(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "PINATA"))},
        **plain_env(tmp_path),
        **WORKER_SECRETS,
        "PINATA_JWT_FILE": str(tmp_path / "not-mounted"),
    }
    del env["PINATA_JWT"]
    ran = subprocess.run(
        [sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 2, ran.stderr
    assert f"PINATA_JWT_FILE: cannot read {tmp_path / 'not-mounted'}" in ran.stderr


def test_the_codec_keys_and_token_come_from_files_too(tmp_path: Path) -> None:
    entry = new_key_entry("k1")
    token = "a-codec-token-of-some-length"
    env = {
        "MINTSAGA_CODEC_KEYS_FILE": write(tmp_path, "keys", entry + "\n"),
        "MINTSAGA_CODEC_TOKEN_FILE": write(tmp_path, "token", token + "\n"),
    }
    keys = keys_from_env(env)
    assert keys is not None and keys.ids == ["k1"]
    assert data_converter_from_env(env).payload_codec is not None
    server = server_settings_from_env(env)
    assert server.token == token and server.keys.ids == ["k1"]
    with pytest.raises(SettingsError, match="MINTSAGA_CODEC_KEYS and MINTSAGA_CODEC_KEYS_FILE"):
        keys_from_env({**env, "MINTSAGA_CODEC_KEYS": entry})
    with pytest.raises(SettingsError, match="MINTSAGA_CODEC_TOKEN_FILE: cannot read"):
        server_settings_from_env({**env, "MINTSAGA_CODEC_TOKEN_FILE": str(tmp_path / "none")})


def test_the_log_guard_knows_the_values_read_from_files(tmp_path: Path) -> None:
    env = {f"{name}_FILE": write(tmp_path, name, value) for name, value in WORKER_SECRETS.items()}
    env["TEMPORAL_API_KEY_FILE"] = write(tmp_path, "api-key", "tmprl-api-key-value\n")
    found = secrets_from_env(env)
    assert {JWT, SEED, "s3cret-password", "tmprl-api-key-value"} <= set(found)
    assert DSN not in found  # a DSN gives its password only
    # A broken file is the settings' error to report; the guard still starts.
    assert secrets_from_env({"PINATA_JWT_FILE": str(tmp_path / "none")}) == []


def test_migrations_and_the_starter_read_database_url_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL_FILE", write(tmp_path, "dsn", DSN + "\n"))
    assert database_url() == DSN
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "none"))
    with pytest.raises(mintsaga.StarterError, match="DATABASE_URL_FILE: cannot read"):
        database_url()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_URL")}
    env["DATABASE_URL_FILE"] = str(tmp_path / "none")
    ran = subprocess.run(
        [sys.executable, "-m", "mintsaga.db.migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 1
    assert f"DATABASE_URL_FILE: cannot read {tmp_path / 'none'}" in ran.stderr


# -- Temporal: API key and TLS -------------------------------------------------------------------


def pem_files(tmp_path: Path) -> dict[str, str]:
    return {
        "TEMPORAL_TLS_CERT": write(tmp_path, "client.pem", b"-----BEGIN CERTIFICATE-----\nA\n"),
        "TEMPORAL_TLS_KEY": write(tmp_path, "client.key", b"-----BEGIN PRIVATE KEY-----\nB\n"),
        "TEMPORAL_TLS_CA": write(tmp_path, "ca.pem", b"-----BEGIN CERTIFICATE-----\nC\n"),
    }


def test_plaintext_without_a_key_by_default() -> None:
    security = TemporalSecurity.from_env({})
    assert security.connect_options() == {"api_key": None, "tls": False}


def test_an_api_key_turns_tls_on_unless_told_otherwise(tmp_path: Path) -> None:
    assert TemporalSecurity.from_env({"TEMPORAL_API_KEY": "k-123"}).connect_options() == {
        "api_key": "k-123",
        "tls": True,
    }
    from_file = {"TEMPORAL_API_KEY_FILE": write(tmp_path, "key", "k-456\n")}
    assert TemporalSecurity.from_env(from_file).connect_options()["api_key"] == "k-456"
    plaintext = TemporalSecurity.from_env({"TEMPORAL_API_KEY": "k-1", "TEMPORAL_TLS": "false"})
    assert plaintext.connect_options() == {"api_key": "k-1", "tls": False}
    assert "k-1" not in repr(plaintext)
    with pytest.raises(SettingsError, match="TEMPORAL_API_KEY and TEMPORAL_API_KEY_FILE"):
        TemporalSecurity.from_env({"TEMPORAL_API_KEY": "k", **from_file})


def test_mtls_files_become_the_tls_config(tmp_path: Path) -> None:
    files = pem_files(tmp_path)
    security = TemporalSecurity.from_env({**files, "TEMPORAL_TLS_SERVER_NAME": "temporal.test"})
    tls = security.connect_options()["tls"]
    assert isinstance(tls, TLSConfig)
    assert tls.client_cert == Path(files["TEMPORAL_TLS_CERT"]).read_bytes()
    assert tls.client_private_key == Path(files["TEMPORAL_TLS_KEY"]).read_bytes()
    assert tls.server_root_ca_cert == Path(files["TEMPORAL_TLS_CA"]).read_bytes()
    assert tls.domain == "temporal.test"
    assert b"BEGIN PRIVATE KEY" not in repr(security).encode()
    server_only = TemporalSecurity.from_env({"TEMPORAL_TLS_CA": files["TEMPORAL_TLS_CA"]})
    only = server_only.connect_options()["tls"]
    assert isinstance(only, TLSConfig) and only.client_cert is None
    assert TemporalSecurity.from_env({"TEMPORAL_TLS": "true"}).connect_options()["tls"] is True


def test_tls_settings_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    files = pem_files(tmp_path)
    with pytest.raises(SettingsError, match=r"^TEMPORAL_TLS_KEY is not set: mTLS needs both"):
        TemporalSecurity.from_env({"TEMPORAL_TLS_CERT": files["TEMPORAL_TLS_CERT"]})
    with pytest.raises(SettingsError, match=r"^TEMPORAL_TLS_CERT is not set: mTLS needs both"):
        TemporalSecurity.from_env({"TEMPORAL_TLS_KEY": files["TEMPORAL_TLS_KEY"]})
    not_pem = write(tmp_path, "cert.der", b"\x30\x82\x01\x0a")
    with pytest.raises(SettingsError, match=f"^TEMPORAL_TLS_CA: {not_pem} is not PEM"):
        TemporalSecurity.from_env({"TEMPORAL_TLS_CA": not_pem})
    with pytest.raises(SettingsError, match=r"^TEMPORAL_TLS_CERT: cannot read"):
        TemporalSecurity.from_env({**files, "TEMPORAL_TLS_CERT": str(tmp_path / "none")})
    with pytest.raises(SettingsError, match="TEMPORAL_TLS is false, but TEMPORAL_TLS_CA need"):
        TemporalSecurity.from_env(
            {"TEMPORAL_TLS": "false", "TEMPORAL_TLS_CA": files["TEMPORAL_TLS_CA"]}
        )
    with pytest.raises(SettingsError, match="TEMPORAL_TLS: 'maybe' is not a boolean"):
        TemporalSecurity.from_env({"TEMPORAL_TLS": "maybe"})


def test_the_worker_settings_carry_the_temporal_security(tmp_path: Path) -> None:
    env = {**plain_env(tmp_path), **WORKER_SECRETS, "TEMPORAL_API_KEY": "k-9"}
    assert Settings.from_env(env).temporal_security.connect_options()["api_key"] == "k-9"
    with pytest.raises(SettingsError, match="TEMPORAL_TLS_KEY is not set"):
        Settings.from_env({**env, "TEMPORAL_TLS_CERT": pem_files(tmp_path)["TEMPORAL_TLS_CERT"]})


def test_the_starter_refuses_bad_tls_settings_before_connecting(tmp_path: Path) -> None:
    env = {**os.environ, "TEMPORAL_TLS_CERT": pem_files(tmp_path)["TEMPORAL_TLS_CERT"]}
    env.pop("TEMPORAL_TLS_KEY", None)
    ran = subprocess.run(
        [sys.executable, "starter.py", "list"],
        cwd=ROOT,
        env={**env, "TEMPORAL_ADDRESS": "127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 2
    assert "starter: TEMPORAL_TLS_KEY is not set" in ran.stderr


def test_the_sdks_tls_names_are_read_and_the_older_ones_are_aliases(tmp_path: Path) -> None:
    files = pem_files(tmp_path)
    sdk_names = {
        "TEMPORAL_TLS_CLIENT_CERT_PATH": files["TEMPORAL_TLS_CERT"],
        "TEMPORAL_TLS_CLIENT_KEY_PATH": files["TEMPORAL_TLS_KEY"],
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": files["TEMPORAL_TLS_CA"],
    }
    by_sdk_name = TemporalSecurity.from_env(sdk_names)
    assert by_sdk_name == TemporalSecurity.from_env(files)  # the older names, same settings
    tls = by_sdk_name.connect_options()["tls"]
    assert isinstance(tls, TLSConfig)
    assert tls.client_cert == Path(files["TEMPORAL_TLS_CERT"]).read_bytes()
    assert tls.server_root_ca_cert == Path(files["TEMPORAL_TLS_CA"]).read_bytes()
    other = write(tmp_path, "other.pem", b"-----BEGIN CERTIFICATE-----\nD\n")
    with pytest.raises(SettingsError, match="TEMPORAL_TLS_SERVER_CA_CERT_PATH and TEMPORAL_TLS_CA"):
        TemporalSecurity.from_env({**sdk_names, "TEMPORAL_TLS_CA": other})
    with pytest.raises(SettingsError, match=r"^TEMPORAL_TLS_CLIENT_KEY_PATH is not set: mTLS"):
        TemporalSecurity.from_env({"TEMPORAL_TLS_CLIENT_CERT_PATH": files["TEMPORAL_TLS_CERT"]})


def test_the_temporal_target_follows_the_sdks_environment_configuration(tmp_path: Path) -> None:
    assert TemporalTarget.from_env({}).connect_options() == {
        "target_host": "127.0.0.1:7233",
        "namespace": "default",
        "rpc_metadata": {},
        "api_key": None,
        "tls": False,
    }
    env = {
        "TEMPORAL_ADDRESS": "temporal.internal:7233",
        "TEMPORAL_NAMESPACE": "mints",
        "TEMPORAL_GRPC_META_X_TEAM": "minting",
    }
    target = TemporalTarget.from_env(env)
    assert (target.address, target.namespace) == ("temporal.internal:7233", "mints")
    assert target.rpc_metadata == {"x-team": "minting"}
    # A TOML profile (the `temporal` CLI's file) gives what the environment does not.
    profile = tmp_path / "temporal.toml"
    profile.write_text(
        '[profile.prod]\naddress = "mints.a1b2c.tmprl.cloud:7233"\nnamespace = "mints.a1b2c"\n'
        'api_key = "k-from-profile"\n'
    )
    files = {"TEMPORAL_CONFIG_FILE": str(profile), "TEMPORAL_PROFILE": "prod"}
    from_profile = TemporalTarget.from_env(files)
    assert from_profile.address == "mints.a1b2c.tmprl.cloud:7233"
    assert from_profile.namespace == "mints.a1b2c"
    assert from_profile.connect_options()["api_key"] == "k-from-profile"
    assert from_profile.connect_options()["tls"] is True  # an API key turns TLS on
    assert "k-from-profile" not in repr(from_profile)
    # The environment wins over the profile, the API key and TLS included.
    mixed = TemporalTarget.from_env(
        {**files, "TEMPORAL_ADDRESS": "127.0.0.1:7233", "TEMPORAL_API_KEY": "k-env"}
    )
    assert mixed.address == "127.0.0.1:7233"
    assert mixed.connect_options()["api_key"] == "k-env"
    with pytest.raises(SettingsError, match=r"^TEMPORAL_CONFIG_FILE: .* is not a file"):
        TemporalTarget.from_env({"TEMPORAL_CONFIG_FILE": str(tmp_path / "missing.toml")})
    with pytest.raises(SettingsError, match=r"TEMPORAL_PROFILE: .*'staging' not found"):
        TemporalTarget.from_env({**files, "TEMPORAL_PROFILE": "staging"})
