"""Where things are, for tests in any folder under tests/."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout
HISTORIES = ROOT / "tests" / "histories"  # stored workflow histories, replayed by tests/replay
