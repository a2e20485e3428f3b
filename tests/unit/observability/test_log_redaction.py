"""The log guard scrubs the keys of the configured endpoint URLs from any line, however a
library quotes the URL (its own exception text, a retry message), not only `endpoint` fields."""

from __future__ import annotations

import io
import logging

from mintsaga.observability.logging import configure_logging, secrets_from_env

HELIUS_KEY = "0f4b6a1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b"
QUICKNODE_TOKEN = "3f2a9c1b7d4e8f0a6b5c2d1e9f8a7b6c5d4e3f2a"
HOST_KEY = "5f3e2d1c0b9a8f7e"
GATEWAY_TOKEN = "gw-token-0123456789abcdef"
ENV = {
    "SOLANA_RPC_ENDPOINTS": (
        f"https://mainnet.helius-rpc.com/?api-key={HELIUS_KEY},"
        f"https://name.solana-mainnet.quiknode.pro/{QUICKNODE_TOKEN}/,"
        f"https://mintsaga-{HOST_KEY}.mainnet.rpcpool.com"
    ),
    "IPFS_GATEWAYS": f"https://gw.example.com/?pinataGatewayToken={GATEWAY_TOKEN}",
    "KUBO_API_URL": "http://kubo:5001",
    "PINATA_REQUESTS_PER_MINUTE": "60",
}


def test_the_keys_in_endpoint_settings_never_reach_a_line() -> None:
    found = secrets_from_env(ENV)
    assert {HELIUS_KEY, QUICKNODE_TOKEN, HOST_KEY, GATEWAY_TOKEN} <= set(found)
    assert not {"kubo", "5001", "mainnet", "name"} & set(found)  # words stay readable

    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging({**ENV, "LOG_FORMAT": "text"}, stream=stream)
    try:
        logging.getLogger("solana.rpc").warning(
            "HTTP error for url https://name.solana-mainnet.quiknode.pro/%s/ (key %s, host %s)",
            QUICKNODE_TOKEN,
            HELIUS_KEY,
            f"mintsaga-{HOST_KEY}.mainnet.rpcpool.com",
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    line = stream.getvalue()
    assert "name.solana-mainnet.quiknode.pro/***/" in line and "mintsaga-***" in line
    assert not any(key in line for key in (QUICKNODE_TOKEN, HELIUS_KEY, HOST_KEY))
