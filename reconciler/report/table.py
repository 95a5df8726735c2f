"""Tables as kubectl prints them: columns padded to their widest cell and three spaces apart,
never cut and never wrapped, whatever the terminal width and whether or not there is one, so
`awk`, `cut` and `grep` read them. Cells are shortened when long (see `reconciler.bounded`),
which bounds every line. Counts are the CLI's notes, on stderr, so a pipe gets rows only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from reconciler.bounded import shorten

GAP = "   "


@dataclasses.dataclass(frozen=True, slots=True)
class Cell:
    text: str
    style: str = ""


def cell(value: object, style: str = "") -> Cell:
    return Cell(shorten(str(value)), style)


def write_table(
    console: Console,
    columns: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    *,
    headers: bool = True,
) -> None:
    """Print `rows` under `columns`; the last column is not padded (no trailing blanks)."""
    widths = [len(name) if headers else 0 for name in columns]
    for row in rows:
        for index, item in enumerate(row):
            widths[index] = max(widths[index], len(item.text))
    lines: list[Text] = []
    if headers:
        lines.append(_line([Cell(name, "bold") for name in columns], widths))
    lines.extend(_line(row, widths) for row in rows)
    for line in lines:
        console.print(line, soft_wrap=True, crop=False, overflow="ignore", no_wrap=True)


def _line(row: Sequence[Cell], widths: Sequence[int]) -> Text:
    line = Text()
    last = len(row) - 1
    for index, item in enumerate(row):
        line.append(item.text, style=item.style or None)
        if index < last:
            line.append(" " * (widths[index] - len(item.text)) + GAP)
    line.rstrip()
    return line
