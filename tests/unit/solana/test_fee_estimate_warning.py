"""The worker's start-up warning when the priority fee estimate would read ~0 on a real cluster
(issue 15): the `rpc` estimator with no SOLANA_PRIORITY_FEE_ACCOUNTS, against endpoints off this
machine. The devstack and the tests (loopback endpoints) stay quiet."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mintsaga.settings import Settings, priority_fee_blind_warning
from mintsaga.worker import warn_if_fee_estimate_blind
from tests.unit.solana.settings_env import settings_env

BUSY = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
MAINNET = "https://mainnet.helius-rpc.com/?api-key=k"
DEVSTACK = ("http://127.0.0.1:8899", "http://localhost:8900", "http://[::1]:8901")


def test_rpc_without_accounts_on_a_remote_endpoint_warns_naming_both_settings() -> None:
    warning = priority_fee_blind_warning("rpc", (), (MAINNET,))
    assert warning is not None
    assert "SOLANA_PRIORITY_FEE_ESTIMATOR" in warning
    assert "SOLANA_PRIORITY_FEE_ACCOUNTS" in warning
    assert "\n" not in warning  # one line
    assert "api-key" not in warning and "helius-rpc.com" not in warning  # no endpoint, no key


@pytest.mark.parametrize(
    ("estimator", "accounts", "endpoints"),
    [
        ("helius", (), (MAINNET,)),  # the provider's estimator sees the whole market
        ("rpc", (BUSY,), (MAINNET,)),  # busy accounts sampled
        ("rpc", (), DEVSTACK),  # the devstack and the tests
        ("rpc", (), ()),
    ],
)
def test_quiet_when_the_estimate_is_not_blind_or_the_chain_is_local(
    estimator: str, accounts: tuple[str, ...], endpoints: tuple[str, ...]
) -> None:
    assert priority_fee_blind_warning(estimator, accounts, endpoints) is None


def test_one_remote_endpoint_among_local_ones_warns() -> None:
    assert priority_fee_blind_warning("rpc", (), (*DEVSTACK, "https://rpc.example")) is not None
    # A private address is not this machine: a node in the cluster may well serve mainnet.
    assert priority_fee_blind_warning("rpc", (), ("http://10.0.0.7:8899",)) is not None


def test_the_worker_logs_it_once_at_start_from_its_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mintsaga.worker")
    warn_if_fee_estimate_blind(Settings.from_env(settings_env(tmp_path)))  # loopback
    assert not caplog.records
    # The deploy defaults: estimator and accounts unset, a provider's endpoints.
    remote = settings_env(tmp_path, SOLANA_RPC_ENDPOINTS="https://rpc-1.example")
    warn_if_fee_estimate_blind(Settings.from_env(remote))
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "SOLANA_PRIORITY_FEE_ACCOUNTS" in record.getMessage()
    caplog.clear()
    # An emergency endpoint counts too; busy accounts silence it.
    emergency = settings_env(tmp_path, SOLANA_EMERGENCY_ENDPOINTS="https://emergency.example")
    warn_if_fee_estimate_blind(Settings.from_env(emergency))
    assert len(caplog.records) == 1
    caplog.clear()
    named = {**remote, "SOLANA_PRIORITY_FEE_ACCOUNTS": BUSY}
    warn_if_fee_estimate_blind(Settings.from_env(named))
    assert not caplog.records
