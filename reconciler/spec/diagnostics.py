"""Diagnostics: every problem found in a fleet repo, with where it is and what to do.

A diagnostic may be created before its line is known (for example a cross-document
check that only knows the document and the field path); `locate` fills the line
and column in later from the YAML source.

A diagnostic may quote what a user wrote (a name, a value, a key), which may be megabytes
long: its message, hint and address are shortened when it is made, so no check can forget,
and its path and field when it is shown (the engine matches diagnostics to files by path).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
from collections.abc import Iterable
from typing import Any

from reconciler.bounded import LIMIT, MESSAGE_LIMIT, shorten

YamlPath = tuple[str | int, ...]


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclasses.dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem. `line` and `col` are 1-based; 0 means unknown."""

    severity: Severity
    code: str
    message: str
    path: str
    line: int = 0
    col: int = 0
    address: str | None = None
    hint: str | None = None
    doc_index: int | None = None
    field_path: YamlPath = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", shorten(self.message, MESSAGE_LIMIT))
        if self.hint is not None:
            object.__setattr__(self, "hint", shorten(self.hint, MESSAGE_LIMIT))
        if self.address is not None:
            object.__setattr__(self, "address", shorten(self.address, LIMIT))

    @property
    def shown_path(self) -> str:
        return shorten(self.path)

    @property
    def shown_field(self) -> str | None:
        return shorten(".".join(str(p) for p in self.field_path)) or None

    def render(self) -> str:
        where = self.shown_path
        if self.line:
            where += f":{self.line}:{self.col or 1}"
        text = f"{where}: {self.severity.value}[{self.code}]: {self.message}"
        if self.address:
            text += f" [{self.address}]"
        if self.hint:
            text += f"\n    = help: {self.hint}"
        return text

    def as_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            "path": self.shown_path,
            "line": self.line,
            "col": self.col,
            "address": self.address,
            "field": self.shown_field,
            "hint": self.hint,
        }

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.path, self.line, self.col, self.code, self.message)


def error(
    code: str,
    message: str,
    path: str,
    *,
    line: int = 0,
    col: int = 0,
    address: str | None = None,
    hint: str | None = None,
    doc_index: int | None = None,
    field_path: YamlPath = (),
) -> Diagnostic:
    return Diagnostic(Severity.ERROR, code, message, path, line, col, address, hint, doc_index, field_path)


def warning(
    code: str,
    message: str,
    path: str,
    *,
    line: int = 0,
    col: int = 0,
    address: str | None = None,
    hint: str | None = None,
    doc_index: int | None = None,
    field_path: YamlPath = (),
) -> Diagnostic:
    return Diagnostic(Severity.WARNING, code, message, path, line, col, address, hint, doc_index, field_path)


SUGGEST_MAX = 100
"""No name fleet suggests (a field, a kind, a resource) is longer; a longer word is no typo of one."""


def closest(word: str, candidates: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The candidate most like `word`, for a "did you mean" hint, or None. difflib's cost grows
    with the product of the lengths and with the number of candidates: a word or candidate over
    `SUGGEST_MAX` characters is never compared, and among thousands of candidates only those that
    start like `word` are."""
    if len(word) > SUGGEST_MAX:
        return None
    pool = sorted(c for c in candidates if len(c) <= SUGGEST_MAX)
    if len(pool) > 2000:
        pool = [c for c in pool if c[:4] == word[:4]][:2000]
    close = difflib.get_close_matches(word, pool, n=1, cutoff=cutoff)
    return close[0] if close else None


def sorted_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return sorted(set(diagnostics), key=Diagnostic.sort_key)
