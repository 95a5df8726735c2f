"""What the providers see right now, as `fleet observe` shows it: a table or JSON, long values
shortened (see `reconciler.bounded`)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from providers.base import Observation
from reconciler.bounded import shorten, shorten_all
from reconciler.kinds import kind_at

_STYLES = {"observed": "green", "unknown": "yellow", "absent": "red"}


def observations_table(observations: Sequence[Observation], console: Console) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ADDRESS", "STATE", "POWER", "DETAIL", "NOTES"):
        table.add_column(column, no_wrap=column != "NOTES")
    for o in observations:
        notes = f"{o.reason.value}: {shorten(o.detail)}" if o.reason else "; ".join(map(shorten, o.warnings))
        kind = kind_at(o.address)
        table.add_row(
            Text(shorten(o.address)),
            Text(o.state.value, style=_STYLES[o.state.value]),
            Text(shorten(str(o.fields.get("power", "")))),
            Text(shorten(kind.observed_detail(o.fields)) if kind is not None else ""),
            Text(notes),
        )
    console.print(table)
    unknown = sum(1 for o in observations if o.state.value == "unknown")
    console.print(Text(f"{len(observations)} observed, {unknown} unknown", style="dim"))


def observations_json(observations: Sequence[Observation]) -> str:
    return json.dumps(
        shorten_all(
            [
                {
                    "address": o.address,
                    "state": o.state.value,
                    "observedAt": o.observed_at.isoformat(),
                    "fields": dict(o.fields),
                    "reason": o.reason.value if o.reason else None,
                    "detail": o.detail or None,
                    "warnings": list(o.warnings),
                }
                for o in observations
            ]
        ),
        indent=2,
        default=str,
    )
