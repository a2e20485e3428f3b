"""Local IPFS providers for the devstack: one blockstore behind several HTTP faces.

- ``IpfsStore``          content by CID on disk, pins per provider (pinata, kubo) in sqlite
- ``build_pinata_app``   Pinata's pinning API (primary provider)
- ``build_kubo_app``     Kubo's RPC subset (backup provider)
- ``build_gateway_app``  a read-only gateway serving whatever some provider pins
"""

from devstack.ipfs.gateway import build_gateway_app
from devstack.ipfs.kubo import build_kubo_app
from devstack.ipfs.limits import PinataLimits
from devstack.ipfs.pinata import build_pinata_app
from devstack.ipfs.store import IpfsStore

__all__ = [
    "IpfsStore",
    "PinataLimits",
    "build_gateway_app",
    "build_kubo_app",
    "build_pinata_app",
]
