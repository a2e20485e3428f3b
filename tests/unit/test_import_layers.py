"""The package's layers: every import inside `src/mintsaga` goes downward, none goes round.

    foundation   addresses, errors, http_errors, settings, stages, process_exit, temporal_client,
                 notices
    1            observability, resilience
    2            codec
    3            solana, ipfs, db (the services), workflows
    4            activities, api, webhooks
    5            worker, cli
    6            mintsaga/__init__ (the public surface)

A module may import its own part (`mintsaga.solana.*` from `mintsaga.solana.*`) and any part of
a lower layer; parts of one layer never import each other, except foundation modules (which
must not import in a circle). Imports under `if TYPE_CHECKING:` count too: a type from a higher
layer is a design smell as much as a call is. On top of the layers, no two modules import each
other, directly or through others.

Run it alone to see the graph it checked: `pytest tests/unit/test_import_layers.py -s`.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.paths import ROOT

SRC = ROOT / "src"
PACKAGE = SRC / "mintsaga"

FOUNDATION = (
    "addresses",
    "errors",
    "http_errors",
    "settings",
    "setting_readers",
    "temporal_settings",
    "worker_tuning",
    "stages",
    "process_exit",
    "temporal_client",
    "notices",
)
LAYERS: dict[str, int] = {
    **dict.fromkeys(FOUNDATION, 0),
    "observability": 1,
    "resilience": 1,
    "codec": 2,
    "solana": 3,
    "ipfs": 3,
    "db": 3,
    "workflows": 3,
    "activities": 4,
    "api": 4,
    "webhooks": 4,  # the dispatcher beside the worker: db, observability, settings
    "worker": 5,
    "cli": 5,
    "__init__": 6,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """`mintsaga.solana.rpc` -> `solana`; the package root is `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The `mintsaga` modules a file imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a import b`: the module `a.b` when there is one, else (a name) `a` itself.
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                for a in node.names
            ]
        else:
            continue
        found.update(name for name in names if name == "mintsaga" or name.startswith("mintsaga."))
    return found


def module_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(path, known) - {name} for name, path in found.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for importer, imported in sorted(graph.items()):
        here = part_of(importer)
        for target in sorted(imported):
            there = part_of(target)
            if there == here or target == "mintsaga":
                if target == "mintsaga" and here != "__init__":
                    problems.append(f"{importer} imports the package root (import the module)")
                continue
            if here not in LAYERS or there not in LAYERS:
                problems.append(f"{importer} -> {target}: part {here or there} has no layer")
            elif LAYERS[there] > LAYERS[here]:
                layers = f"{here} {LAYERS[here]} -> {there} {LAYERS[there]}"
                problems.append(f"{importer} -> {target}: upward ({layers})")
            elif LAYERS[there] == LAYERS[here] and LAYERS[here] != 0:
                problems.append(f"{importer} -> {target}: sideways within layer {LAYERS[here]}")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def part_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    parts: dict[str, set[str]] = defaultdict(set)
    for importer, imported in graph.items():
        parts[part_of(importer)].update(
            part_of(t) for t in imported if part_of(t) != part_of(importer) and t != "mintsaga"
        )
    return parts


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {part_of(name) for name in modules()}
    assert parts == set(LAYERS), f"unlisted: {parts - set(LAYERS)}; gone: {set(LAYERS) - parts}"


def test_imports_only_go_downward() -> None:
    graph = module_graph()
    parts = part_graph(graph)
    for part in sorted(parts, key=lambda p: (LAYERS.get(p, 99), p)):
        print(f"{LAYERS.get(part, '?')} {part:14} -> {', '.join(sorted(parts[part])) or '-'}")
    assert layer_violations(graph) == []


def test_no_import_cycles_between_parts_or_modules() -> None:
    graph = module_graph()
    assert cycles(part_graph(graph)) == []
    assert cycles(graph) == []


def test_the_checker_sees_an_upward_and_a_circular_import() -> None:
    # The checks themselves, on a made-up graph: an activity imported by a service, and a loop.
    graph = {
        "mintsaga.solana.rpc": {"mintsaga.activities.solana"},
        "mintsaga.activities.solana": {"mintsaga.solana.rpc"},
        "mintsaga.ipfs.kubo": {"mintsaga.db.mint_store"},
    }
    problems = layer_violations(graph)
    assert any("upward" in p and p.startswith("mintsaga.solana.rpc") for p in problems)
    assert any("sideways" in p and p.startswith("mintsaga.ipfs.kubo") for p in problems)
    assert cycles(graph) == [["mintsaga.activities.solana", "mintsaga.solana.rpc"]]
