"""No module of the product is over 600 lines (issue 13): a file past that holds more than one job
and is split by moving a cohesive part into a module of its own (as settings.py, solana/rpc.py
and solana/prepare.py were)."""

from __future__ import annotations

from pathlib import Path

from tests.paths import ROOT

PACKAGE = ROOT / "src" / "mintsaga"
MAX_LINES = 600


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def oversized(package: Path, limit: int = MAX_LINES) -> list[str]:
    """`mintsaga/x.py: N lines` for every Python file under `package` (named from the folder
    that holds it) longer than `limit`, longest first."""
    found = [(line_count(path), path) for path in sorted(package.rglob("*.py"))]
    return [
        f"{path.relative_to(package.parent)}: {lines} lines"
        for lines, path in sorted(found, key=lambda item: -item[0])
        if lines > limit
    ]


def test_no_module_is_over_600_lines() -> None:
    over = oversized(PACKAGE)
    assert not over, f"over {MAX_LINES} lines (split by job): " + "; ".join(over)


def test_the_check_names_a_long_file_and_its_length(tmp_path: Path) -> None:
    (tmp_path / "short.py").write_text("x = 1\n" * MAX_LINES)
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    found = oversized(tmp_path)
    assert len(found) == 1
    assert found[0].endswith(f"part/long.py: {MAX_LINES + 1} lines"), found
