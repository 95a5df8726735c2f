"""The audit trail as `fleet history` shows it: who ran what, why, on which revision, and how
every action ended; a table of runs (see `report.table`), run names, or the same fields as JSON
or YAML. What users wrote (a reason, an incident, a message) is shown shortened when long (see
`reconciler.bounded`); the store keeps it whole."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from rich.console import Console

from reconciler.bounded import shorten, shorten_all
from reconciler.report.table import Cell, cell, write_table
from reconciler.state import RunRecord

_STATUS_STYLES = {"succeeded": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}
COLUMNS = ("RUN", "STARTED", "KIND", "STATUS", "BY", "REVISION", "ACTIONS")
WIDE_COLUMNS = (*COLUMNS, "REASON", "INCIDENT", "CHANGES")


def history_data(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = shorten_all(
        json.loads(
            json.dumps(
                [
                    {
                        **{k: v for k, v in dataclasses.asdict(r).items() if k != "actions"},
                        "actions": [dataclasses.asdict(a) for a in r.actions],
                    }
                    for r in runs
                ],
                default=str,
            )
        )
    )
    return data


def history_json(runs: Sequence[RunRecord]) -> str:
    return json.dumps(history_data(runs), indent=2)


def _actions(run: RunRecord) -> str:
    """`3 succeeded, 1 failed`, or `-` for a run that changed nothing."""
    results = Counter(a.result for a in run.actions)
    return ", ".join(f"{count} {result}" for result, count in sorted(results.items())) or "-"


def _changes(run: RunRecord) -> str:
    return "; ".join(
        f"{shorten(a.address)} {shorten(a.action)}: {a.result}"
        + (f" ({shorten(a.message)})" if a.message else "")
        for a in run.actions
    )


def history_table(
    runs: Sequence[RunRecord], console: Console, *, wide: bool = False, headers: bool = True
) -> None:
    rows: list[list[Cell]] = []
    for r in runs:
        kind = r.kind + (" EMERGENCY" if r.emergency else "") + (" broke-lock" if r.broke_lock else "")
        row = [
            Cell(str(r.id)),
            Cell(f"{r.started_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"),
            cell(kind),
            Cell(r.status, _STATUS_STYLES.get(r.status, "")),
            cell(r.operator),
            cell(r.revision or "-"),
            Cell(_actions(r)),
        ]
        if wide:
            row += [cell(r.reason or "-"), cell(r.incident or "-"), cell(_changes(r) or "-")]
        rows.append(row)
    write_table(console, WIDE_COLUMNS if wide else COLUMNS, rows, headers=headers)
