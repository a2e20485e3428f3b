"""The least environment `Settings.from_env` accepts, for the settings tests: every required
variable, nothing optional set (the worker's defaults); `extra` adds or overrides."""

from __future__ import annotations

from pathlib import Path


def settings_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    keypair = tmp_path / "payer.json"
    keypair.write_text("[]")
    return {
        "DATABASE_URL": "postgresql://x@localhost/db",
        "SOLANA_RPC_ENDPOINTS": "http://127.0.0.1:8899",
        "PINATA_JWT": "jwt",
        "KUBO_API_URL": "http://127.0.0.1:5001",
        "PINATA_REQUESTS_PER_MINUTE": "60",
        "IPFS_GATEWAYS": "http://127.0.0.1:8080",
        "MINT_KEY_SEED": "00" * 32,
        "MINT_AUTHORITY_KEYPAIR": str(keypair),
        "MINT_UPDATE_AUTHORITY": "none",
        **extra,
    }
