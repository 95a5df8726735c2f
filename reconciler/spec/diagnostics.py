"""Diagnostics: every problem found in a fleet repo, with where it is and what to do.

A diagnostic may be created before its line is known (for example a cross-document
check that only knows the document and the field path); `locate` fills the line
and column in later from the YAML source.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from typing import Any

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

    def render(self) -> str:
        where = self.path
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
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "address": self.address,
            "field": ".".join(str(p) for p in self.field_path) or None,
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


def sorted_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return sorted(set(diagnostics), key=Diagnostic.sort_key)
