"""python -m devstack up [--detach] [--codec] [--solana-profiles SPEC] [--fee-market SPEC]
[--pinata-plan NAME] | down [--wipe] | env | status

Every command takes ``--state-dir`` (default ``.devstack``, or ``DEVSTACK_DIR``).
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from devstack.config import GATEWAYS, SOLANA_ENDPOINTS, StackConfig
from devstack.ipfs.kubo_config import KuboConfigError
from devstack.ipfs.limits import PLANS, PlanError
from devstack.ipfs.recursive import GatewayBehaviourError, parse_gateway_spec
from devstack.profiles import PROFILES, ProfileError, parse_profile_spec
from devstack.solana.fee_market import FeeMarketError, parse_fee_market_spec
from devstack.supervisor import StackError, Supervisor


def _config(args: argparse.Namespace) -> StackConfig:
    """The stack's config: the saved one while it runs, else the arguments over the saved one."""
    state_dir = StackConfig.create(args.state_dir).state_dir
    saved = StackConfig.load(state_dir) if (state_dir / "stack.json").exists() else None
    given: dict[str, Any] = {
        "port_offset": getattr(args, "port_offset", None),
        "slot_ms": getattr(args, "slot_ms", None),
        "pinata_requests_per_minute": getattr(args, "pinata_rpm", None),
        "pinata_plan": getattr(args, "pinata_plan", None),
        "codec": getattr(args, "codec", None),
        "solana_profiles": _profiles_arg(getattr(args, "solana_profiles", None)),
        "fee_market": _fee_market_arg(getattr(args, "fee_market", None)),
        "gateways": _gateways_arg(getattr(args, "gateways", None)),
        "kubo_profile": getattr(args, "kubo_profile", None),
    }
    if saved is not None:
        running = Supervisor(saved, progress=lambda _: None).pid("emulators") is not None
        if args.command != "up" or running:
            changed = [k for k, v in given.items() if v is not None and v != getattr(saved, k)]
            if changed:
                raise StackError(
                    f"{', '.join(changed)}: the stack in {state_dir} is running with other "
                    "settings; run `python -m devstack down` first"
                )
            return saved
        # A new plan without --pinata-rpm takes the new plan's limit, not the saved one.
        keep = set(given) - ({"pinata_requests_per_minute"} if given["pinata_plan"] else set())
        given = {
            k: v if v is not None or k not in keep else getattr(saved, k) for k, v in given.items()
        }
    try:
        return StackConfig.create(state_dir, **given)
    except FeeMarketError as exc:
        raise StackError(f"DEVSTACK_FEE_MARKET: {exc}") from exc
    except ProfileError as exc:
        raise StackError(f"DEVSTACK_SOLANA_PROFILES: {exc}") from exc
    except PlanError as exc:
        raise StackError(f"--pinata-plan / DEVSTACK_PINATA_PLAN: {exc}") from exc
    except GatewayBehaviourError as exc:
        raise StackError(f"DEVSTACK_GATEWAYS: {exc}") from exc
    except KuboConfigError as exc:
        raise StackError(f"--kubo-profile / DEVSTACK_KUBO_PROFILE: {exc}") from exc


def _fee_market_arg(spec: str | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    try:
        return parse_fee_market_spec(spec)
    except FeeMarketError as exc:
        raise StackError(f"--fee-market: {exc}") from exc


def _gateways_arg(spec: str | None) -> dict[str, dict[str, Any]] | None:
    if spec is None:
        return None
    try:
        return parse_gateway_spec(spec, GATEWAYS)
    except GatewayBehaviourError as exc:
        raise StackError(f"--gateways: {exc}") from exc


def _profiles_arg(spec: str | None) -> dict[str, str] | None:
    if spec is None:
        return None
    try:
        return parse_profile_spec(spec, SOLANA_ENDPOINTS)
    except ProfileError as exc:
        raise StackError(f"--solana-profiles: {exc}") from exc


def cmd_up(args: argparse.Namespace) -> int:
    config = _config(args)
    if config.funding_endpoint is None:
        raise StackError(
            f"--solana-profiles: {config.solana_profiles} leaves no endpoint that serves reads;"
            " `up` funds the system wallet through one (default, rate-limited or no-history)"
        )
    supervisor = Supervisor(config, progress=lambda line: print(f"  {line}", file=sys.stderr))
    print(f"devstack: starting in {config.state_dir}", file=sys.stderr)
    seconds = supervisor.up()
    print(f"devstack: up in {seconds:.1f} s", file=sys.stderr)
    _print_env(config)
    if args.detach:
        print(
            f"devstack: stop it with `python -m devstack down --state-dir {config.state_dir}`",
            file=sys.stderr,
        )
        return 0
    print("devstack: running in the foreground; Ctrl-C stops it", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        signal.pause()
    supervisor.down()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    config = _config(args)
    Supervisor(config, progress=lambda line: print(f"  {line}", file=sys.stderr)).down(
        wipe=args.wipe
    )
    print("devstack: down", file=sys.stderr)
    return 0


def _print_env(config: StackConfig) -> None:
    for name, value in config.worker_env().items():
        print(f"export {name}={shlex.quote(value)}")


def cmd_env(args: argparse.Namespace) -> int:
    _print_env(_config(args))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    config = _config(args)
    status = Supervisor(config, progress=lambda _: None).status()
    width = max(len(name) for name in status)
    for name, up in status.items():
        where = config.ports.get(name, "")
        print(f"{name:<{width}}  {'up' if up else 'down':<4}  {where}")
    return 0 if all(status.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the stack keeps its state (default .devstack)",
    )
    # Also accepted after the command (`down --state-dir X`), where people tend to put it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, parents=[common])

    up = command("up", "start every service (idempotent)")
    up.add_argument("--detach", action="store_true", help="return once everything is ready")
    up.add_argument("--port-offset", type=int, default=None, help="added to every default port")
    up.add_argument("--slot-ms", type=int, default=None, help="milliseconds per slot (400)")
    up.add_argument(
        "--pinata-rpm",
        type=int,
        default=None,
        help="Pinata requests a minute before 429, over the plan's (0 = no limit)",
    )
    up.add_argument(
        "--pinata-plan",
        default=None,
        metavar="NAME",
        help=f"Pinata plan whose limits the emulator enforces ({', '.join(PLANS)}; default"
        " picnic; also DEVSTACK_PINATA_PLAN; kept by later `up`s)",
    )
    up.add_argument(
        "--codec",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="encrypt payloads (dev key) and run the codec server for the Temporal UI"
        " (also DEVSTACK_CODEC=1; kept by later `up`s until `--no-codec`)",
    )
    up.add_argument(
        "--solana-profiles",
        default=None,
        metavar="SPEC",
        help="provider profile per Solana endpoint, e.g. solana-1=rate-limited,solana-2=no-history"
        f" (profiles: {', '.join(PROFILES)}; also DEVSTACK_SOLANA_PROFILES; kept by later `up`s;"
        " '' for all default)",
    )
    up.add_argument(
        "--fee-market",
        default=None,
        metavar="SPEC",
        help="background fee-market load, e.g. 0.8 or busy_fraction=1,min_fee=2000,max_fee=20000"
        " (devstack.solana.fee_market; also DEVSTACK_FEE_MARKET; kept by later `up`s; '' off)",
    )
    up.add_argument(
        "--gateways",
        default=None,
        metavar="SPEC",
        help="gateway behaviour, e.g."
        " 'gateway-1:recursive,appear_after_s=20,cache_after_unpin_s=600' (devstack.ipfs.recursive;"
        " ';' between gateways; also DEVSTACK_GATEWAYS; kept by later `up`s; '' for the plain"
        " local gateways)",
    )
    up.add_argument(
        "--kubo-profile",
        default=None,
        metavar="NAME",
        help="the Kubo node's Import profile (unixfs-v1-2025, unixfs-v0-2015, legacy-cid-v0 or"
        " default; also DEVSTACK_KUBO_PROFILE; kept by later `up`s)",
    )
    up.set_defaults(func=cmd_up)

    down = command("down", "stop every service, leaving no process behind")
    down.add_argument("--wipe", action="store_true", help="also delete the state folder")
    down.set_defaults(func=cmd_down)

    command("env", "print export lines for the worker").set_defaults(func=cmd_env)
    command("status", "which services are up").set_defaults(func=cmd_status)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except StackError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 2
    except ProfileError as exc:  # DEVSTACK_SOLANA_PROFILES, read with every command
        print(f"devstack: DEVSTACK_SOLANA_PROFILES: {exc}", file=sys.stderr)
        return 2
    except PlanError as exc:  # DEVSTACK_PINATA_PLAN, read with every command
        print(f"devstack: DEVSTACK_PINATA_PLAN: {exc}", file=sys.stderr)
        return 2
    except GatewayBehaviourError as exc:  # DEVSTACK_GATEWAYS, read with every command
        print(f"devstack: DEVSTACK_GATEWAYS: {exc}", file=sys.stderr)
        return 2
    except KuboConfigError as exc:  # DEVSTACK_KUBO_PROFILE, read with every command
        print(f"devstack: DEVSTACK_KUBO_PROFILE: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
