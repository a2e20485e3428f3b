"""How the CLI prints: tables, status blocks, one JSON object per `--json` answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mintsaga.db.runtime_settings import RuntimeSettings, SettingChange
from mintsaga.workflows.models import (
    StatusView,
)


def _print_json(model: Any) -> None:
    data = model.model_dump(mode="json") if hasattr(model, "model_dump") else model
    print(json.dumps(data, sort_keys=True, default=str))


def _print_status(view: StatusView) -> None:
    print(f"mint {view.mint_id}: {view.status} at {view.stage}")
    print(f"  owner         {view.owner}")
    print(f"  mint address  {view.mint_address or '-'}")
    if view.collection:
        print(f"  collection    {view.collection}")
    print(f"  image         {view.image_cid or '-'}")
    print(f"  metadata      {view.metadata_cid or '-'}")
    print(f"  signature     {view.signature or '-'}")
    print(f"  past pivot    {view.past_pivot}")
    if view.awaiting_operator:
        since = f" since {view.awaiting_since:%Y-%m-%d %H:%M:%S %Z}" if view.awaiting_since else ""
        steps = ", ".join(view.awaiting_steps) or view.awaiting_step
        print(f"  WAITING at {steps}{since}: retry or compensate with `mintsaga`")
    if view.last_error:
        error = view.last_error
        print(f"  last error    {error.step}: {error.type} ({error.kind}): {error.message}")
    if view.reason:
        print(f"  reason        {view.reason}")


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_cell(error: dict[str, Any] | None, limit: int = 80) -> str:
    if not error:
        return "-"
    return _clip(f"{error.get('type') or 'error'}: {error.get('message', '')}", limit)


def _print_stuck(rows: list[dict[str, Any]], *, as_json: bool) -> int:
    if as_json:
        _print_json({"stuck": rows})
        return 0
    if not rows:
        print("no stuck mints")
        return 0
    table = [("MINT_ID", "STAGE", "WAITING AT", "WAITING FOR", "LAST ERROR")]
    for row in rows:
        waited = "?" if row["waiting_s"] is None else _age(row["waiting_s"])
        table.append(
            (
                row["mint_id"],
                row["stage"] or "-",
                ",".join(row["awaiting_steps"]) or "?",
                waited,
                _error_cell(row["last_error"]),
            )
        )
    for line in _table(table):
        print(line)
    for row in rows:
        if row["note"]:
            print(f"{row['mint_id']}: {row['note']}")
    print(
        f"{len(rows)} mint(s) waiting: `mintsaga show MINT_ID` for the story, then"
        " `mintsaga retry MINT_ID` or `mintsaga compensate MINT_ID`"
    )
    return 0


def _print_change(change: SettingChange) -> None:
    print(f"{change.describe()}, by {change.by} at {change.at:%Y-%m-%d %H:%M:%S %Z}")
    if change.previous_by and change.changed:
        print(f"  (last set by {change.previous_by})")


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _rate(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value * 100:.0f}%"
    return "-"


def _breaker_table(reports: list[dict[str, Any]], settings: RuntimeSettings) -> list[str]:
    rows = [("WORKER", "NAME", "STATE", "OVERRIDE", "TRIPS", "SUCCESS", "AGE")]
    for report in reports:
        snapshot = report["snapshot"]
        override = str(snapshot.get("override") or "none")
        wanted = settings.breaker_overrides.get(report["name"], "none")
        if wanted != override:
            override += f" (set: {wanted})"
        rows.append(
            (
                report["worker_id"],
                report["name"],
                str(snapshot.get("state", "-")),
                override,
                str(snapshot.get("trips", "-")),
                _rate(snapshot.get("success_rate")),
                _age(report["age_s"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
