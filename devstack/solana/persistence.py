"""What survives a restart of the local chain: accounts, signature history, the slot counter.

One sqlite connection in WAL mode with ``synchronous=NORMAL``: a commit per transaction costs
tens of microseconds, so writing through never becomes the bottleneck (LiteSVM itself lands
about a thousand NFT transactions a second). Blockhashes are not kept: after a restart every
earlier blockhash is unknown, as it would be to a node that missed those blocks.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from solders.account import Account
from solders.pubkey import Pubkey

from devstack.solana.history import TxRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    pubkey     BLOB PRIMARY KEY,
    lamports   INTEGER NOT NULL,
    data       BLOB NOT NULL,
    owner      BLOB NOT NULL,
    executable INTEGER NOT NULL,
    rent_epoch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS signatures (
    signature  TEXT PRIMARY KEY,
    slot       INTEGER NOT NULL,
    block_time INTEGER NOT NULL,
    tx         BLOB NOT NULL,
    meta       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chain (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class LedgerStore:
    """The ledger's sqlite file under its state folder."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(state_dir / "ledger.sqlite3", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- reading it back on start ------------------------------------------------------------

    def chain_value(self, key: str) -> int | None:
        row = self._db.execute("SELECT value FROM chain WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def accounts(self) -> Iterator[tuple[Pubkey, Account]]:
        rows = self._db.execute(
            "SELECT pubkey, lamports, data, owner, executable, rent_epoch FROM accounts"
        )
        for pubkey, lamports, data, owner, executable, rent_epoch in rows:
            yield (
                Pubkey(pubkey),
                Account(
                    lamports=lamports,
                    data=bytes(data),
                    owner=Pubkey(owner),
                    executable=bool(executable),
                    rent_epoch=_from_i64(rent_epoch),
                ),
            )

    def signature(self, signature: str) -> TxRecord | None:
        row = self._db.execute(
            "SELECT signature, slot, block_time, tx, meta FROM signatures WHERE signature = ?",
            (signature,),
        ).fetchone()
        if row is None:
            return None
        sig, slot, block_time, tx, meta = row
        return TxRecord.from_stored(sig, slot, block_time, bytes(tx), json.loads(meta))

    # -- writing through ---------------------------------------------------------------------

    def save_chain(self, slot: int, block_height: int) -> None:
        self._db.executemany(
            "INSERT INTO chain (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (("slot", slot), ("block_height", block_height)),
        )

    def save_transaction(
        self, record: TxRecord, accounts: Iterable[tuple[Pubkey, Account | None]]
    ) -> None:
        """One landed transaction and every account it wrote, in one sqlite transaction."""
        db = self._db
        db.execute("BEGIN")
        try:
            db.execute(
                "INSERT OR REPLACE INTO signatures (signature, slot, block_time, tx, meta) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    record.signature,
                    record.slot,
                    record.block_time,
                    record.tx_bytes,
                    json.dumps(record.stored_meta()),
                ),
            )
            for pubkey, account in accounts:
                if account is None or account.lamports == 0:
                    db.execute("DELETE FROM accounts WHERE pubkey = ?", (bytes(pubkey),))
                    continue
                db.execute(
                    "INSERT OR REPLACE INTO accounts "
                    "(pubkey, lamports, data, owner, executable, rent_epoch) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        bytes(pubkey),
                        account.lamports,
                        bytes(account.data),
                        bytes(account.owner),
                        int(account.executable),
                        _to_i64(account.rent_epoch),
                    ),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _to_i64(value: int) -> int:
    """sqlite integers are signed 64-bit; rent_epoch is often u64::MAX."""
    return value - 2**64 if value > 2**63 - 1 else value


def _from_i64(value: int) -> int:
    return value + 2**64 if value < 0 else value
