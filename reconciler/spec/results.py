"""What validating one file yields, kept light so the cache can read it without the models."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from reconciler.spec.diagnostics import Diagnostic

if TYPE_CHECKING:
    from reconciler.spec.models import Document, Fleet

FLEET_FILE = "fleet.yaml"

# Facts: (kind, name, doc_index, labels, detail) - small, picklable, enough for references.
# detail is None for a document that is itself invalid: it exists, but nothing more is known.
Facts = tuple[str, str, int, dict[str, str], tuple[Any, ...] | None]


@dataclasses.dataclass(slots=True)
class FileResult:
    path: str
    diagnostics: list[Diagnostic]
    facts: list[Facts]
    documents: list[tuple[int, Document]]  # (index in the file, model) of every valid document
    fleet: Fleet | None = None
    packed: bytes | None = None  # the documents pickled, as a worker process hands them back
