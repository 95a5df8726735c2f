"""Diagnostics as `fleet validate` prints them: `file:line:col: severity[code]: message [address]`
and a `= help:` line, or as JSON objects. Every command that refuses an invalid revision prints
them the same way."""

from __future__ import annotations

import json
from collections.abc import Iterable

from rich.console import Console
from rich.text import Text

from reconciler.spec.diagnostics import Diagnostic


def render_diagnostics(diagnostics: Iterable[Diagnostic], console: Console) -> None:
    for d in diagnostics:
        style = "bold red" if d.severity.value == "error" else "bold yellow"
        where = d.shown_path + (f":{d.line}:{d.col or 1}" if d.line else "")
        line = Text()
        line.append(where, style="bold")
        line.append(": ")
        line.append(f"{d.severity.value}[{d.code}]", style=style)
        line.append(f": {d.message}")
        if d.address:
            line.append(f" [{d.address}]", style="cyan")
        console.print(line)
        if d.hint:
            console.print(Text(f"    = help: {d.hint}", style="dim"))


def diagnostics_json(diagnostics: Iterable[Diagnostic]) -> str:
    return json.dumps([d.as_json() for d in diagnostics], indent=2)


def counted(count: int, noun: str) -> str:
    """`1 error`, `3 errors`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
