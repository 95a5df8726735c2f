"""The audit trail as `fleet history` shows it: who ran what, why, on which revision, and how
every action ended."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from reconciler.state import RunRecord


def history_json(runs: Sequence[RunRecord]) -> str:
    return json.dumps(
        [
            {
                **{k: v for k, v in dataclasses.asdict(r).items() if k != "actions"},
                "actions": [dataclasses.asdict(a) for a in r.actions],
            }
            for r in runs
        ],
        indent=2,
        default=str,
    )


def render_history(runs: Sequence[RunRecord], console: Console) -> None:
    for r in runs:
        flags = " EMERGENCY" if r.emergency else ""
        flags += " broke-lock" if r.broke_lock else ""
        header = (
            f"run {r.id}  {r.kind}  {r.status}{flags}  {r.started_at:%Y-%m-%d %H:%M:%S} UTC  by {r.operator}"
        )
        console.print(Text(header, style="bold"))
        details = [f"revision {r.revision}"]
        if r.reason:
            details.append(f"reason: {r.reason}")
        if r.incident:
            details.append(f"incident: {r.incident}")
        console.print("    " + "; ".join(details))
        for a in r.actions:
            console.print(
                f"    {a.address}  {a.action}: {a.result}" + (f" ({a.message})" if a.message else "")
            )
    if not runs:
        console.print("no runs recorded")
