"""python -m mintsaga.codec serve [--host H] [--port P] | keygen [KEY_ID]

`serve` runs the codec server (codec/server.py) with MINTSAGA_CODEC_KEYS, MINTSAGA_CODEC_TOKEN and
MINTSAGA_CODEC_UI_ORIGIN from the environment; `keygen` prints a new `KEY_ID:BASE64_KEY` pair for
MINTSAGA_CODEC_KEYS (docs/payload-encryption.md, "Rotating a key", has the procedure).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from mintsaga.codec.payloads import new_key_entry
from mintsaga.codec.server import DEFAULT_PORT, serve, server_settings_from_env
from mintsaga.observability.logging import configure_logging
from mintsaga.setting_readers import SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mintsaga.codec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    served = commands.add_parser("serve", help="run the codec server for the Temporal UI and CLI")
    served.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    served.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"({DEFAULT_PORT})")
    keygen = commands.add_parser("keygen", help="print a new KEY_ID:BASE64_KEY pair")
    keygen.add_argument("key_id", nargs="?", default=None, help="its id (default: kYYYYMMDD)")
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            print(new_key_entry(args.key_id))
            return 0
        configure_logging()
        settings = server_settings_from_env()
    except SettingsError as exc:
        print(f"codec: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings, args.host, args.port))
    except OSError as exc:  # the port is taken
        print(f"codec: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
