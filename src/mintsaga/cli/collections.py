"""`mintsaga collection create|list` (api/collections.py).

    mintsaga collection create --key KEY --name NAME --symbol SYM --max-size N
                               [--image PATH] [--description TEXT] [--json]
    mintsaga collection rotate-authority --key KEY --new-keypair FILE
    mintsaga collection list [--json]

`create` runs with a worker's settings (it pins like a mint and signs with the system wallet);
`list` needs DATABASE_URL only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mintsaga.api.collections import (
    CollectionCreated,
    create_collection,
    list_collections,
    rotate_group_authority,
)
from mintsaga.api.errors import StarterError
from mintsaga.api.switches import database_url
from mintsaga.errors import ServiceError
from mintsaga.setting_readers import SettingsError
from mintsaga.settings import Settings

__all__ = ["add_collection_parser", "cmd_collection"]


def add_collection_parser(commands: Any) -> None:
    """The `collection` command and its actions, on the CLI's subparsers."""
    collection = commands.add_parser("collection", help="verified collections: create, list")
    actions = collection.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create", help="make a collection once (again: prints the same address, sends nothing)"
    )
    create.add_argument("--key", required=True, help="its name in requests (`collection`)")
    create.add_argument("--name", required=True, help="the collection NFT's name")
    create.add_argument("--symbol", required=True, help="the collection NFT's symbol")
    create.add_argument("--max-size", required=True, type=int, help="members at most, for good")
    create.add_argument("--image", type=Path, default=None, help="the collection's image file")
    create.add_argument("--description", default="", help="its metadata's description")
    create.add_argument("--json", action="store_true", help="end with one JSON line")
    rotate = actions.add_parser(
        "rotate-authority",
        help="hand the group authority from MINT_GROUP_AUTHORITY_KEYPAIR to another keypair",
    )
    rotate.add_argument("--key", required=True, help="the collection's key")
    rotate.add_argument(
        "--new-keypair", required=True, type=Path, help="the new authority's keypair file"
    )
    listing = actions.add_parser("list", help="every collection, with its members")
    listing.add_argument("--json", action="store_true", help="one JSON object")
    collection.set_defaults(func=cmd_collection, temporal=False)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def cmd_collection(_client: object, args: argparse.Namespace) -> int:
    if args.action == "list":
        try:
            rows = await list_collections(database_url())
        except ServiceError as exc:
            raise StarterError(f"collection list: {exc}") from exc
        if args.json:
            out = [CollectionCreated(r, sent=False).as_json() for r in rows]
            for item in out:
                item.pop("sent")
            print(json.dumps({"collections": out}, sort_keys=True))
        elif not rows:
            print("no collections (`mintsaga collection create --key ...`)")
        for row in [] if args.json else rows:
            state = "" if row.created else "  (being created)"
            print(
                f"{row.key}  {row.address}  {row.members}/{row.max_size} members"
                f"  {row.name!r}{state}"
            )
        return 0
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise StarterError(
            f"collection {args.action} runs with a worker's settings: {exc}"
        ) from exc
    if args.action == "rotate-authority":
        row = await rotate_group_authority(
            settings, key=args.key, new_keypair=args.new_keypair, progress=_progress
        )
        print(f"collection {row.key}'s group authority is {row.group_authority}")
        return 0
    done = await create_collection(
        settings,
        key=args.key,
        name=args.name,
        symbol=args.symbol,
        max_size=args.max_size,
        image=args.image,
        description=args.description,
        progress=_progress,
    )
    if args.json:
        print(json.dumps(done.as_json(), sort_keys=True))
    else:
        verb = "created" if done.sent else "exists"
        print(f"collection {done.collection.key} {verb}: {done.collection.address}")
    return 0
