"""`mintsaga events [--after CURSOR] [--limit N] [--follow]`: the cursor feed as JSON lines.

One line per notice, oldest first, each the JSON object `MintNotice.feed_line()` gives
(``id``, ``cursor``, ``type``, ``timestamp``, ``data``): a backend reads on from the last
``cursor`` it printed. ``--follow`` keeps polling (every second) and prints notices as they are
recorded, until interrupted. Reads DATABASE_URL (or DATABASE_URL_FILE), not Temporal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from mintsaga.api.events import DEFAULT_LIMIT, follow_events, list_events
from mintsaga.notices import MintNotice

__all__ = ["add_events_command", "cmd_events"]


def _print_line(notice: MintNotice) -> None:
    print(json.dumps(notice.feed_line(), default=str), flush=True)


async def cmd_events(_client: Any, args: argparse.Namespace) -> int:
    """Print the feed after ``--after``; with ``--follow``, go on printing new notices."""
    if args.follow:
        try:
            async for notice in follow_events(args.after, limit=args.limit):
                _print_line(notice)
        except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels the command; end cleanly
            return 0
        return 0  # pragma: no cover - following ends only when interrupted
    for notice in await list_events(args.after, args.limit):
        _print_line(notice)
    return 0


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a cursor is 0 or more, not {value}")
    return value


def _limit(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"from 1 to 1000, not {value}")
    return value


def add_events_command(commands: Any) -> None:
    """Register `events` with the CLI's subcommands (cli/main.py's parser)."""
    events = commands.add_parser(
        "events",
        help="the notices (mint.in_progress ... mint.minted) as JSON lines, from a cursor"
        " (DATABASE_URL)",
    )
    events.add_argument(
        "--after",
        type=_non_negative,
        default=0,
        metavar="CURSOR",
        help="only notices after this cursor (a line's `cursor`; default 0: from the first)",
    )
    events.add_argument(
        "--limit",
        type=_limit,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N notices per read (1-1000, default {DEFAULT_LIMIT})",
    )
    events.add_argument(
        "--follow", action="store_true", help="keep polling and print new notices as they come"
    )
    events.set_defaults(func=cmd_events, temporal=False)
