"""Solana: the RPC pool with failover, the mint's derived keys, fees, the NFT's instructions and
the minter that builds, signs, sends and confirms its transaction."""
