"""The audit trail as `fleet history` shows it: who ran what, why, on which revision, and how
every action ended. What users wrote (a reason, an incident, a message) is shown shortened when
long (see `reconciler.bounded`); the store keeps it whole."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from reconciler.bounded import shorten, shorten_all
from reconciler.state import RunRecord


def history_json(runs: Sequence[RunRecord]) -> str:
    return json.dumps(
        shorten_all(
            [
                {
                    **{k: v for k, v in dataclasses.asdict(r).items() if k != "actions"},
                    "actions": [dataclasses.asdict(a) for a in r.actions],
                }
                for r in runs
            ]
        ),
        indent=2,
        default=str,
    )


def render_history(runs: Sequence[RunRecord], console: Console) -> None:
    for r in runs:
        flags = " EMERGENCY" if r.emergency else ""
        flags += " broke-lock" if r.broke_lock else ""
        header = (
            f"run {r.id}  {r.kind}  {r.status}{flags}  {r.started_at:%Y-%m-%d %H:%M:%S} UTC  "
            f"by {shorten(r.operator)}"
        )
        console.print(Text(header, style="bold"))
        details = [f"revision {shorten(str(r.revision))}"]
        if r.reason:
            details.append(f"reason: {shorten(r.reason)}")
        if r.incident:
            details.append(f"incident: {shorten(r.incident)}")
        console.print(Text("    " + "; ".join(details)))
        for a in r.actions:
            console.print(
                Text(
                    f"    {shorten(a.address)}  {shorten(a.action)}: {shorten(a.result)}"
                    + (f" ({shorten(a.message)})" if a.message else "")
                )
            )
    if not runs:
        console.print("no runs recorded")
