"""Collections (issue 18): `mintsaga collection create|list` and the same in Python.

A collection is a Token-2022 NFT whose mint holds a TokenGroup with a max size; mints naming
its key join it in their own transaction (docs/design.md, "Collections"). Creating one runs
where a worker's settings are (it signs with the system wallet, like a mint): its image and
metadata are pinned like a mint's (Pinata, Kubo as backup), its row is written before anything
is sent, and its address is derived from MINT_KEY_SEED and the key. Running it again finds the
row (or the account on chain) and sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from mintsaga.api.errors import StarterError
from mintsaga.db.collections import CollectionRow, CollectionSpec
from mintsaga.db.mint_store import MintStore
from mintsaga.db.wallet_spend import spend_breaker_open
from mintsaga.errors import ServiceError
from mintsaga.ipfs.cid import compute_cid
from mintsaga.ipfs.gateways import GatewayReader
from mintsaga.ipfs.images import sniff_image_type
from mintsaga.ipfs.kubo import KuboClient
from mintsaga.ipfs.metadata import ContentLinks, UriStyle, metaplex_metadata
from mintsaga.ipfs.pinata import PinataClient
from mintsaga.ipfs.provider_cids import ProviderCids
from mintsaga.ipfs.uploads import IpfsUploader
from mintsaga.settings import GROUP_AUTHORITY_SETTING, Settings
from mintsaga.solana.mint_keys import derive_collection_keypair, load_keypair_file, parse_seed
from mintsaga.solana.minter import SolanaMinter
from mintsaga.solana.rpc import SolanaRpc
from mintsaga.workflows.models import COLLECTION_KEY_PATTERN, MAX_NAME_BYTES, MAX_SYMBOL_BYTES

__all__ = [
    "CollectionCreated",
    "create_collection",
    "list_collections",
    "rotate_group_authority",
]

MAX_COLLECTION_SIZE = 1_000_000_000
SEND_ROUNDS = 3  # signed again with a fresh blockhash when one expired unlanded
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
PROVIDERS = ("pinata", "kubo")  # where an upload may land (ipfs/uploads.py)


@dataclass(frozen=True)
class CollectionCreated:
    """The collection, and whether this call sent its transaction (False: it existed)."""

    collection: CollectionRow
    sent: bool

    def as_json(self) -> dict[str, Any]:
        row = self.collection
        return {
            "key": row.key,
            "address": row.address,
            "name": row.name,
            "symbol": row.symbol,
            "uri": row.uri,
            "max_size": row.max_size,
            "members": row.members,
            "group_authority": row.group_authority,
            "update_authority": row.update_authority,
            "signature": row.signature,
            "sent": self.sent,
        }


def _checked(key: str, name: str, symbol: str, max_size: int) -> None:
    if not re.fullmatch(COLLECTION_KEY_PATTERN, key):
        raise StarterError(
            f"--key {key!r}: a collection key is 1-64 characters of a-z, 0-9, '.', '_' and '-',"
            " starting with a letter or digit"
        )
    if not name or len(name.encode()) > MAX_NAME_BYTES:
        raise StarterError(f"--name: 1 to {MAX_NAME_BYTES} bytes of UTF-8")
    if not symbol or len(symbol.encode()) > MAX_SYMBOL_BYTES:
        raise StarterError(f"--symbol: 1 to {MAX_SYMBOL_BYTES} bytes of UTF-8")
    if not 1 <= max_size <= MAX_COLLECTION_SIZE:
        raise StarterError(f"--max-size: 1 to {MAX_COLLECTION_SIZE}")


@contextlib.asynccontextmanager
async def _uploader(settings: Settings) -> AsyncIterator[IpfsUploader]:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as http:
        pinata = PinataClient(settings.pinata_api_url, settings.pinata_jwt.get_secret_value(), http)
        kubo = KuboClient(settings.kubo_api_url, http)
        gateways = GatewayReader(
            list(settings.ipfs_gateways), http, dedicated=settings.ipfs_dedicated_gateway
        )
        yield IpfsUploader(
            pinata,
            kubo,
            provider_cids=ProviderCids(http, kubo_api_url=settings.kubo_api_url, gateways=gateways),
        )


async def _metadata_uri(
    settings: Settings,
    store: MintStore,
    *,
    key: str,
    name: str,
    symbol: str,
    description: str,
    image: Path | None,
    progress: Callable[[str], None],
) -> str:
    """Pin the image (if any) and the collection's metadata JSON; the metadata's link. The
    same inputs give the same bytes, so a second run finds the same CIDs."""
    links = ContentLinks(cast(UriStyle, settings.metadata_uri_style), settings.metadata_gateway_url)
    keyvalues = {"collection": key}
    async with _uploader(settings) as uploader:
        if image is None:
            document = json.dumps(
                {"name": name, "symbol": symbol, "description": description},
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode()
        else:
            try:
                data = await asyncio.to_thread(image.read_bytes)
            except OSError as exc:
                raise StarterError(f"--image {image}: cannot be read ({exc.strerror})") from None
            if len(data) > settings.image_max_bytes:
                raise StarterError(
                    f"--image {image}: {len(data)} bytes, over MINT_IMAGE_MAX_BYTES"
                    f" ({settings.image_max_bytes})"
                )
            content_type = sniff_image_type(data)
            if content_type is None:
                raise StarterError(f"--image {image}: not a PNG, JPEG, GIF, WebP or SVG image")
            progress(f"pinning the image ({len(data)} bytes)")
            await store.hold_collection_pin(key, await compute_cid(data), PROVIDERS)
            pinned = await uploader.upload(
                data,
                filename=image.name,
                name=f"collection-{key}-image",
                keyvalues={**keyvalues, "kind": "image"},
                content_type=content_type,
            )
            await store.hold_collection_pin(key, pinned.cid, PROVIDERS)
            document = metaplex_metadata(
                name=name,
                symbol=symbol,
                description=description,
                image_cid=pinned.cid,
                attributes=(),
                image_content_type=content_type,
                links=links,
            )
        progress("pinning the metadata")
        await store.hold_collection_pin(key, await compute_cid(document), PROVIDERS)
        pinned = await uploader.upload(
            document,
            filename="metadata.json",
            name=f"collection-{key}-metadata",
            keyvalues={**keyvalues, "kind": "metadata"},
            content_type="application/json",
        )
        await store.hold_collection_pin(key, pinned.cid, PROVIDERS)
    return links.uri(pinned.cid)


async def create_collection(
    settings: Settings,
    *,
    key: str,
    name: str,
    symbol: str,
    max_size: int,
    image: Path | None = None,
    description: str = "",
    progress: Callable[[str], None] = lambda _line: None,
) -> CollectionCreated:
    """Make collection ``key`` once (see the module docstring); ``progress`` is told each
    step. Raises StarterError naming the bad argument or missing setting."""
    _checked(key, name, symbol, max_size)
    if settings.mint_group_authority_keypair is None:
        raise StarterError(
            f"{GROUP_AUTHORITY_SETTING} is not set: a collection's members are signed in by its"
            " group authority, a keypair the workers hold (docs/design.md, Authorities)"
        )
    payer, group_authority = (
        _keys(settings.mint_authority_keypair, None),
        _keys(settings.mint_group_authority_keypair, GROUP_AUTHORITY_SETTING),
    )
    _distinct(settings, payer, group_authority.pubkey(), GROUP_AUTHORITY_SETTING)
    collection = derive_collection_keypair(
        parse_seed(settings.mint_key_seed.get_secret_value()), key
    )
    store = await MintStore.connect(
        settings.database_url.get_secret_value(), min_size=1, max_size=2
    )
    try:
        existing = await store.collection(key)
        if existing is not None and existing.created:
            progress(f"collection {key} exists at {existing.address}: nothing sent")
            return CollectionCreated(existing, sent=False)
        if existing is not None:  # an earlier run stopped: its metadata was pinned, reuse it
            uri = existing.uri
        else:
            uri = await _metadata_uri(
                settings,
                store,
                key=key,
                name=name,
                symbol=symbol,
                description=description,
                image=image,
                progress=progress,
            )
        row = await store.begin_collection(
            CollectionSpec(
                key=key,
                address=str(collection.pubkey()),
                name=name,
                symbol=symbol,
                uri=uri,
                max_size=max_size,
                group_authority=str(group_authority.pubkey()),
                update_authority=settings.mint_update_authority,
            )
        )
        async with SolanaRpc(
            settings.solana_rpc_endpoints, timeout=settings.solana_timeout_s
        ) as rpc:
            minter = SolanaMinter(
                rpc,
                payer,
                parse_seed(settings.mint_key_seed.get_secret_value()),
                priority_fee_cap=settings.solana_priority_fee_cap,
                priority_fee_percentile=settings.solana_priority_fee_percentile,
                update_authority=settings.mint_update_authority,
            )
            signature = await _land(
                minter,
                row,
                collection,
                group_authority.pubkey(),
                progress,
                reserve=lambda key, cost: _reserve(
                    store,
                    minter,
                    key,
                    cost,
                    settings.solana_spend_limit_lamports_per_hour,
                ),
            )
        done = await store.mark_collection_created(key, signature)
        progress(f"collection {key} is at {done.address}")
        return CollectionCreated(done, sent=signature is not None)
    except ServiceError as exc:
        raise StarterError(f"collection create {key}: {exc}") from exc
    finally:
        await store.close()


async def _land(
    minter: SolanaMinter,
    row: CollectionRow,
    collection: Keypair,
    group_authority: Pubkey,
    progress: Callable[[str], None],
    *,
    reserve: Callable[[str, int], Awaitable[None]],
) -> str | None:
    """The collection's transaction, sent and confirmed; None when the chain already holds the
    group (an earlier run sent it and stopped before recording it)."""
    for _ in range(SEND_ROUNDS):
        if await _on_chain(minter, row.address):
            progress(f"the chain already holds collection {row.key}: nothing sent")
            return None
        signed = await minter.prepare_collection(
            row.key,
            collection,
            name=row.name,
            symbol=row.symbol,
            uri=row.uri,
            max_size=row.max_size,
            group_authority=group_authority,
            reserve=lambda cost: reserve(row.key, cost),
        )
        progress(f"sending {signed.signature}")
        await _send(minter, signed.tx_base64, progress)
        if await _confirmed(minter, signed.signature, signed.last_valid_block_height):
            progress("confirmed")
            return signed.signature
        progress("its blockhash expired before it landed: signing again")
    raise StarterError(f"collection {row.key}: not landed after {SEND_ROUNDS} blockhashes")


async def rotate_group_authority(
    settings: Settings,
    *,
    key: str,
    new_keypair: Path,
    progress: Callable[[str], None] = lambda _line: None,
) -> CollectionRow:
    """Hand collection ``key``'s group authority from this worker's MINT_GROUP_AUTHORITY_KEYPAIR
    to the keypair in ``new_keypair`` (token-group ``UpdateGroupAuthority``, signed by the
    current one), then record it. Again, or after a run that sent and stopped: nothing sent.
    Give the workers the new keypair as MINT_GROUP_AUTHORITY_KEYPAIR afterwards: until then a
    mint joining the collection waits for an operator (GroupAuthorityMismatch), nothing
    signed."""
    if settings.mint_group_authority_keypair is None:
        raise StarterError(f"{GROUP_AUTHORITY_SETTING} is not set: it must be the current key")
    current = _keys(settings.mint_group_authority_keypair, GROUP_AUTHORITY_SETTING)
    new = _keys(new_keypair, "--new-keypair")
    payer = _keys(settings.mint_authority_keypair, None)
    _distinct(settings, payer, new.pubkey(), "--new-keypair")
    dsn = settings.database_url.get_secret_value()
    store = await MintStore.connect(dsn, min_size=1, max_size=2)
    try:
        row = await store.collection(key)
        if row is None or not row.created:
            raise StarterError(f"collection {key!r} does not exist (or is being created)")
        if row.group_authority == str(new.pubkey()):
            progress(f"collection {key}'s group authority is {new.pubkey()} already: nothing sent")
            return row
        if row.group_authority != str(current.pubkey()):
            raise StarterError(
                f"collection {key}'s group authority is {row.group_authority}, not this"
                f" {GROUP_AUTHORITY_SETTING} ({current.pubkey()}): only the current key can"
                " hand it on"
            )
        async with SolanaRpc(
            settings.solana_rpc_endpoints, timeout=settings.solana_timeout_s
        ) as rpc:
            minter = SolanaMinter(
                rpc,
                payer,
                parse_seed(settings.mint_key_seed.get_secret_value()),
                priority_fee_cap=settings.solana_priority_fee_cap,
                priority_fee_percentile=settings.solana_priority_fee_percentile,
            )
            for _ in range(SEND_ROUNDS):
                on_chain = await minter.nft_state(row.address, str(payer.pubkey()))
                if on_chain is None or on_chain.group is None:
                    raise StarterError(f"collection {key}: no group at {row.address} on chain")
                if on_chain.group.update_authority == str(new.pubkey()):
                    progress("the chain already names the new authority: nothing sent")
                    break
                signed = await minter.prepare_group_authority_rotation(
                    key,
                    row.address,
                    current,
                    new.pubkey(),
                    reserve=lambda cost: _reserve(
                        store, minter, key, cost, settings.solana_spend_limit_lamports_per_hour
                    ),
                )
                progress(f"sending {signed.signature}")
                await _send(minter, signed.tx_base64, progress)
                if await _confirmed(minter, signed.signature, signed.last_valid_block_height):
                    progress("confirmed")
                    break
                progress("its blockhash expired before it landed: signing again")
            else:
                raise StarterError(f"collection {key}: rotation not landed after {SEND_ROUNDS}")
        return await store.set_group_authority(key, str(current.pubkey()), str(new.pubkey()))
    except ServiceError as exc:
        raise StarterError(f"collection rotate-authority {key}: {exc}") from exc
    finally:
        await store.close()


def _keys(path: Path | None, setting: str | None) -> Keypair:
    """A keypair file, its problem named as StarterError (never a key byte)."""
    assert path is not None
    try:
        return load_keypair_file(path, **({"setting": setting} if setting else {}))
    except ValueError as exc:  # KeyMaterialError: names the setting and the file
        raise StarterError(str(exc)) from None


def _distinct(settings: Settings, payer: Keypair, key: Pubkey, what: str) -> None:
    """The group authority is a key of its own: neither the system wallet nor the cold
    metadata authority (which must stay off the workers)."""
    if key == payer.pubkey():
        raise StarterError(f"{what} is the system wallet's key: give the group its own")
    if str(key) == settings.mint_update_authority:
        raise StarterError(
            f"{what} is MINT_UPDATE_AUTHORITY's key, which must stay off the workers: give the"
            " group its own"
        )


async def _send(minter: SolanaMinter, tx_base64: str, progress: Callable[[str], None]) -> None:
    """Send; an unanswered send is not a failure (it may have landed): the status tells."""
    try:
        await minter.send(tx_base64)
    except ServiceError as exc:
        if not exc.retryable:
            raise
        progress(f"no clear answer to the send ({exc.code}): looking for its status")


async def _confirmed(minter: SolanaMinter, signature: str, last_valid_block_height: int) -> bool:
    """True once ``signature`` is confirmed; False when its blockhash expired unlanded."""
    while True:
        status = await minter.signature_status(signature)
        if status.found and status.err is not None:
            raise StarterError(f"transaction {signature} failed: {status.err}")
        if status.found and status.confirmation_status in ("confirmed", "finalized"):
            return True
        if await minter.block_height() > last_valid_block_height:
            return False
        await asyncio.sleep(1.0)


async def _on_chain(minter: SolanaMinter, address: str) -> bool:
    state = await minter.nft_state(address, str(minter.payer))
    return state is not None and state.group is not None


async def _reserve(
    store: MintStore, minter: SolanaMinter, key: str, lamports: int, limit: int
) -> None:
    """The fleet-wide spend breaker counts the collection's transaction like a mint's."""
    window = await store.reserve_spend(
        minter.payer, f"collection:{key}", lamports, limit_lamports=limit
    )
    if not window.granted:
        raise spend_breaker_open(f"collection:{key}", lamports, window, endpoint=None)


async def list_collections(database_url: str) -> list[CollectionRow]:
    """Every collection with its member count (minted or minting)."""
    store = await MintStore.connect(database_url, min_size=1, max_size=1)
    try:
        return await store.collections()
    finally:
        await store.close()
