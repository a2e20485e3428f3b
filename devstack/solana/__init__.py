"""A local Solana JSON-RPC: LiteSVM executes, the ledger plays the cluster, RPC apps serve it.

- ``ledger``       slots, blockhash window, send/simulate, signature history (``SolanaLedger``)
- ``rpc``          the JSON-RPC 2.0 server with fault injection (``build_rpc_app``)
- ``parsed``       ``jsonParsed`` for SPL Token / Token-2022 accounts
- ``history``      signature records and their RPC renderings
- ``versions``     recent account versions for ``finalized`` reads
- ``persistence``  the sqlite file that survives restarts
- ``errors``       JSON-RPC and transaction errors, worded like Agave
"""

from devstack.solana.ledger import SolanaLedger
from devstack.solana.rpc import build_rpc_app

__all__ = ["SolanaLedger", "build_rpc_app"]
