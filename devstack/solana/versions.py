"""Recent account versions, so a ``finalized`` read sees the chain as of 32 slots ago.

A real node answers ``commitment: finalized`` from its rooted bank: a mint created a moment
ago is not there yet. LiteSVM keeps only the latest state, so the ledger records, for every
account a transaction wrote, its state before the first write and after each write, and
drops what is older than the finalized slot.
"""

from __future__ import annotations

from collections import deque

from solders.account import Account
from solders.pubkey import Pubkey

_BEFORE_ANY = -1


class AccountVersions:
    def __init__(self) -> None:
        self._versions: dict[Pubkey, list[tuple[int, Account | None]]] = {}
        self._written: deque[tuple[int, Pubkey]] = deque()

    def record(
        self, pubkey: Pubkey, before: Account | None, after: Account | None, slot: int
    ) -> None:
        versions = self._versions.get(pubkey)
        if versions is None:
            versions = self._versions[pubkey] = [(_BEFORE_ANY, before)]
        versions.append((slot, after))
        self._written.append((slot, pubkey))

    def at(self, pubkey: Pubkey, slot: int) -> tuple[bool, Account | None]:
        """``(True, state at slot)`` if it changed after ``slot``, else ``(False, None)``."""
        versions = self._versions.get(pubkey)
        if not versions:
            return False, None
        for written_at, account in reversed(versions):
            if written_at <= slot:
                return True, account
        return True, versions[0][1]

    def prune(self, finalized_slot: int) -> None:
        """Forget versions no finalized read can need any more."""
        while self._written and self._written[0][0] <= finalized_slot:
            _, pubkey = self._written.popleft()
            versions = self._versions.get(pubkey)
            if versions is None:
                continue
            keep = [v for v in versions[1:] if v[0] > finalized_slot]
            if not keep:
                del self._versions[pubkey]  # the latest state is final: LiteSVM has it
                continue
            base = [v for v in versions if v[0] <= finalized_slot][-1][1]
            self._versions[pubkey] = [(_BEFORE_ANY, base), *keep]

    def clear(self) -> None:
        self._versions.clear()
        self._written.clear()
