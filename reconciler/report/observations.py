"""What the providers see right now, as `fleet observe` shows it: a table (see `report.table`),
addresses, or the same fields as JSON or YAML, long values shortened (see `reconciler.bounded`)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from rich.console import Console

from providers.base import Observation
from reconciler.bounded import shorten, shorten_all
from reconciler.kinds import kind_at
from reconciler.report.table import Cell, cell, write_table

_STYLES = {"observed": "green", "unknown": "yellow", "absent": "red"}
COLUMNS = ("ADDRESS", "STATE", "POWER", "DETAIL", "NOTES")
WIDE_COLUMNS = (*COLUMNS, "OBSERVED")


def observations_table(
    observations: Sequence[Observation], console: Console, *, wide: bool = False, headers: bool = True
) -> None:
    rows: list[list[Cell]] = []
    for o in observations:
        notes = f"{o.reason.value}: {shorten(o.detail)}" if o.reason else "; ".join(map(shorten, o.warnings))
        kind = kind_at(o.address)
        row = [
            cell(o.address),
            Cell(o.state.value, _STYLES[o.state.value]),
            cell(o.fields.get("power", "")),
            cell(kind.observed_detail(o.fields) if kind is not None else ""),
            cell(notes),
        ]
        if wide:
            row.append(Cell(f"{o.observed_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"))
        rows.append(row)
    write_table(console, WIDE_COLUMNS if wide else COLUMNS, rows, headers=headers)


def observations_summary(observations: Sequence[Observation]) -> str:
    """`3 resources: 1 observed, 2 unknown` (each state counted once)."""
    states = Counter(o.state.value for o in observations)
    counts = ", ".join(
        f"{states[state]} {state}" for state in ("observed", "absent", "unknown") if states[state]
    )
    noun = "resource" if len(observations) == 1 else "resources"
    return f"{len(observations)} {noun}" + (f": {counts}" if counts else "")


def observations_data(observations: Sequence[Observation]) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = shorten_all(
        [
            {
                "address": o.address,
                "state": o.state.value,
                "observedAt": o.observed_at.isoformat(),
                "fields": json.loads(json.dumps(dict(o.fields), default=str)),
                "reason": o.reason.value if o.reason else None,
                "detail": o.detail or None,
                "warnings": list(o.warnings),
            }
            for o in observations
        ]
    )
    return data


def observations_json(observations: Sequence[Observation]) -> str:
    return json.dumps(observations_data(observations), indent=2, default=str)
