"""A drift report as a pull request's (or an issue's) body: what drifted, from what to what, since
when, enforced or only observed, where the spec now says so, and what merging or closing does.

The body stays under GitHub's 65,536 characters: rows past the room are counted, not shown.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from reconciler.bounded import shorten
from reconciler.kinds.adopt import DriftedField, SpecEdits
from reconciler.plan.model import Finding, format_time

MAX_CHARS = 60_000


@dataclasses.dataclass(frozen=True)
class DriftScope:
    """The drift of one scope (a site), and the spec edits that adopt it."""

    scope: str
    revision: str
    drifted: tuple[DriftedField, ...]
    edits: SpecEdits
    first_seen: Mapping[tuple[str, str], datetime]


def drift_marker(scope: str) -> str:
    return f"<!-- fleet:drift:{scope} -->"


def drift_title(view: DriftScope) -> str:
    count = len(view.drifted)
    return f"fleet: adopt drift in {view.scope} ({count} field{'s' if count != 1 else ''})"


def drift_body(view: DriftScope, *, as_issue: bool = False, max_chars: int = MAX_CHARS) -> str:
    adopted = {(a.drifted.address, a.drifted.field): a for a in view.edits.adopted}
    refused = {(n.drifted.address, n.drifted.field): n for n in view.edits.not_adopted}
    head = [
        drift_marker(view.scope),
        f"### Drift in {view.scope}",
        "",
        f"{len(view.drifted)} field(s) of live resources differ from the specs at `{view.revision[:12]}`, "
        "changed outside fleet and for longer than the grace period.",
        "",
    ]
    if as_issue:
        head += [
            "Adopt it by editing the specs to the live values, or let enforcement put enforced fields "
            "back; observe-only fields stay drifted and are reported again.",
            "",
        ]
    else:
        head += [
            f"- **Merging** adopts the drift: the specs take the live values ({len(view.edits.adopted)} "
            "field(s), one line each).",
            "- **Closing** lets enforcement revert enforced fields on its next pass; observe-only fields "
            "stay drifted and are reported again.",
            "",
        ]
    rows = []
    for drifted in view.drifted:
        key = (drifted.address, drifted.field)
        seen = view.first_seen.get(key)
        how = "observe-only" if drifted.finding is Finding.OBSERVE_ONLY else "enforced"
        if key in adopted:
            where = f"`{adopted[key].path}:{adopted[key].line}`"
        elif key in refused:
            where = f"not in the specs: {_cell(refused[key].reason)}"
        else:
            where = "-"
        rows.append(
            f"| `{_tick(shorten(drifted.address))}` | `{_tick(shorten(drifted.field))}` "
            f"| {_cell(_json(drifted.live))} | {format_time(seen) if seen else '-'} | {how} | {where} |\n"
        )
    table = (
        "| resource | field | live value | first seen | policy | adopted in |\n|---|---|---|---|---|---|\n"
    )
    text = "\n".join(head) + "\n" + table
    shown = 0
    for row in rows:
        if len(text) + len(row) + 200 > max_chars:
            break
        text += row
        shown += 1
    if shown < len(rows):
        text += f"\n... {len(rows) - shown} more fields: run `fleet drift` for all of them\n"
    return text


def _json(value: Any) -> str:
    return shorten(json.dumps(value, sort_keys=True, default=str), 200)


def _tick(text: str) -> str:
    return text.replace("`", "'")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")
