"""The package's public surface: what `import mintsaga` offers a backend, and the two commands.

`mintsaga.__all__` is a contract (as httpx's tests/test_exported_members.py keeps theirs): a
name added or removed here is a decision, not an accident of a refactor.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import mintsaga

PUBLIC = [
    "Attribute",
    "CollectionCreated",
    "ErrorInfo",
    "ImageRef",
    "MintNotice",
    "MintOptions",
    "MintRequest",
    "MintResult",
    "MintStatus",
    "NoticeType",
    "RetryOverrides",
    "StarterError",
    "StatusView",
    "compensate",
    "connect",
    "create_collection",
    "get_status",
    "list_collections",
    "list_events",
    "list_mints",
    "mint_timeline",
    "request_from_json",
    "retry",
    "start_mint",
    "stuck_mints",
    "task_queue",
    "workflow_id_for",
]


def test_all_is_the_public_contract_and_every_name_resolves() -> None:
    assert mintsaga.__all__ == PUBLIC
    for name in mintsaga.__all__:
        member = getattr(mintsaga, name)
        assert member.__module__.startswith("mintsaga."), name
        assert name in dir(mintsaga)
    with pytest.raises(AttributeError, match="no attribute 'stop_mint'"):
        _ = mintsaga.stop_mint  # type: ignore[attr-defined]


def test_importing_the_package_loads_none_of_its_clients() -> None:
    # A workflow sandbox, the probe and a backend that needs one model pay only for what they use.
    code = (
        "import sys, mintsaga; heavy = [m for m in ('asyncpg', 'httpx', 'temporalio.client',"
        " 'mintsaga.api.mints') if m in sys.modules]; print(heavy)"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("script", "target", "usage"),
    [
        ("mintsaga", "mintsaga.cli.main:main", "usage: mintsaga"),
        ("mintsaga-worker", "mintsaga.worker:main", "usage: mintsaga-worker"),
    ],
)
def test_the_console_scripts_are_installed_and_print_their_usage(
    script: str, target: str, usage: str
) -> None:
    scripts = importlib.metadata.entry_points(group="console_scripts")
    assert [entry.value for entry in scripts if entry.name == script] == [target]
    executable = Path(sys.executable).parent / script
    ran = subprocess.run([str(executable), "--help"], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(usage)
