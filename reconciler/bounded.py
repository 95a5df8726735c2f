"""Bounded output: a value that comes from a user is shown at most a few hundred characters long.

A Machine's name, a config variable, a path or a run's reason may be megabytes long, and a
diagnostic, a plan or a report that quotes it would repeat all of it. Everything fleet shows
people quotes such values through `shorten`, which keeps the start and the end of a long string
and says in between how much was cut: `abc…[8,388,308 characters cut]…xyz`. A string that is
short enough comes back unchanged (the same object).

Only what is shown is shortened. What fleet keeps to work with (documents, a saved plan, the
state store, diagnostics' paths) stays exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

LIMIT = 300
"""The longest a single value (a name, a path, a field value, a reason) is shown."""

MESSAGE_LIMIT = 1000
"""The longest a sentence that quotes values (a diagnostic's message, an error line) is shown."""

MAX_LINES = 250
"""The most lines a multi-line value (a plan entry's detail, a configuration diff) is shown with."""

_MARKER = re.compile(r"…\[[0-9,]+ characters cut\]…")


def _marker(cut: int) -> str:
    return f"…[{cut:,} characters cut]…"


def shorten(text: str, limit: int = LIMIT) -> str:
    """`text` if it is at most `limit` characters long; else its start and end around a marker
    saying how many characters were left out, `limit` characters in all (or the marker alone,
    when `limit` is shorter than the marker)."""
    if len(text) <= limit:
        return text
    # The marker's length depends on the count it shows, which depends on the marker's length:
    # grow the cut until it holds (it only grows, by a digit or a comma at most, so this ends).
    cut = len(text) - limit
    while True:
        keep = max(0, limit - len(_marker(cut)))
        if len(text) - keep == cut:
            break
        cut = len(text) - keep
    head = keep - keep // 2
    tail = keep // 2
    return text[:head] + _marker(cut) + text[len(text) - tail :]


def shorten_lines(text: str, limit: int = LIMIT, max_lines: int = MAX_LINES) -> str:
    """A multi-line text with each line shortened, and at most `max_lines` lines: the last one
    shown says how many more were left out. A one-line text is shortened as by `shorten`."""
    if len(text) <= limit:
        return text
    if "\n" not in text:
        return shorten(text, limit)
    lines = text.split("\n")
    kept = lines if len(lines) <= max_lines else lines[: max_lines - 1]
    shown = [shorten(line, limit) for line in kept]
    if len(lines) > max_lines:
        shown.append(f"…[{len(lines) - len(kept):,} more lines cut]…")
    elif all(new is old for new, old in zip(shown, lines, strict=True)):
        return text
    return "\n".join(shown)


def shorten_all(value: Any, limit: int = LIMIT) -> Any:
    """A JSON-like value (mappings, lists, tuples, strings, numbers) with every string shortened:
    keys by `shorten`, string values by `shorten_lines`. Tuples come back as lists. When nothing
    is cut, the value itself comes back (`shorten_all(v) is v`), so a caller can tell."""
    if isinstance(value, str):
        return shorten_lines(value, limit)
    if isinstance(value, Mapping):
        items = [
            (shorten(k, limit) if isinstance(k, str) else k, shorten_all(v, limit)) for k, v in value.items()
        ]
        if all(k is old[0] and v is old[1] for (k, v), old in zip(items, value.items(), strict=True)):
            return value
        return dict(items)
    if isinstance(value, list | tuple):
        shown = [shorten_all(v, limit) for v in value]
        if all(new is old for new, old in zip(shown, value, strict=True)):
            return value
        return shown
    return value


def redact(text: str, secrets: Iterable[str], mask: str = "***") -> str:
    """`text` with every secret (of at least three characters) replaced by `mask`, including the
    piece of one that a shortened text still shows at either side of its marker."""
    secrets = [s for s in secrets if len(s) >= 3]
    for secret in secrets:
        text = text.replace(secret, mask)
    marker = _MARKER.search(text)
    if marker is None or not secrets:
        return text
    head, tail = text[: marker.start()], text[marker.end() :]
    for secret in secrets:
        for size in range(min(len(head), len(secret) - 1), 2, -1):
            if head.endswith(secret[:size]):
                head = head[:-size] + mask
                break
        for size in range(min(len(tail), len(secret) - 1), 2, -1):
            if tail.startswith(secret[-size:]):
                tail = mask + tail[size:]
                break
    return head + marker.group() + tail
