"""IPFS: CIDs computed locally, uploads to Pinata with Kubo as the backup, gateway reads, the
image fetch and the NFT's metadata JSON."""
