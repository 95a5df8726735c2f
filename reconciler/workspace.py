"""Load and validate a fleet repo at a revision: the glue between `source` and `spec`.

It reads fleet.yaml first (its limits, rules and excludes shape everything else),
validates every other spec file (from the cache when its blob is known, in
worker processes when many are new), then runs the cross-document checks over
all of them. A whole revision already validated is answered from the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import os
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import __version__
from reconciler.source.snapshot import Snapshot, SourceFile
from reconciler.spec.cache import SpecCache
from reconciler.spec.diagnostics import Diagnostic, error, sorted_diagnostics
from reconciler.spec.results import FLEET_FILE, FileResult

if TYPE_CHECKING:
    from reconciler.spec import models
    from reconciler.spec.validate import FileSettings

# Below this many files to parse, worker processes cost more than they save.
PARALLEL_THRESHOLD = 64


@dataclasses.dataclass(frozen=True, slots=True)
class Validation:
    source: str
    diagnostics: list[Diagnostic]
    documents: dict[str, int]
    files: int
    parsed: int  # spec files parsed in this run (fleet.yaml, always read, not counted)
    from_cache: bool

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity.value == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity.value == "warning"]


@cache
def _glob_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip().lstrip("./") if pattern.startswith("./") else pattern.strip()
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    if pattern.endswith("/"):
        out += ".*"
    return re.compile(f"^{out}$")


def is_excluded(path: str, patterns: Sequence[str]) -> bool:
    return any(_glob_regex(p).match(path) for p in patterns)


def _parallel(batch: list[tuple[str, bytes]], settings: FileSettings, workers: int) -> list[FileResult]:
    from reconciler.spec.validate import validate_files

    if workers <= 1 or len(batch) < PARALLEL_THRESHOLD:
        return validate_files(batch, settings)
    # Deal the files out largest first so the chunks weigh about the same, then put the
    # results back in the order of `batch`: callers zip them with their own keys.
    order = sorted(range(len(batch)), key=lambda i: -len(batch[i][1]))
    chunks: list[list[int]] = [[] for _ in range(workers * 4)]
    for position, i in enumerate(order):
        chunks[position % len(chunks)].append(i)
    context = multiprocessing.get_context("fork")
    results: list[FileResult | None] = [None] * len(batch)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        work = [[batch[i] for i in chunk] for chunk in chunks]
        for chunk, done in zip(chunks, pool.map(validate_files, work, [settings] * len(work)), strict=True):
            for i, result in zip(chunk, done, strict=True):
                results[i] = result
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _fleet(snapshot: Snapshot) -> tuple[SourceFile | None, FileResult | None]:
    from reconciler.spec.validate import FileSettings, validate_file

    entry = next((f for f in snapshot.files if f.path == FLEET_FILE), None)
    if entry is None:
        return None, None
    return entry, validate_file(FLEET_FILE, snapshot.read(entry), FileSettings())


def _raw_excludes(snapshot: Snapshot) -> list[str]:
    """spec.exclude of a fleet.yaml that is itself invalid, so its errors do not multiply."""
    from reconciler.spec.yamlload import load_yaml

    entry = next((f for f in snapshot.files if f.path == FLEET_FILE), None)
    if entry is None:
        return []
    loaded = load_yaml(FLEET_FILE, snapshot.read(entry))
    for document in loaded.documents:
        spec = document.get("spec") if isinstance(document, dict) else None
        excludes = spec.get("exclude") if isinstance(spec, dict) else None
        if isinstance(excludes, list) and all(isinstance(e, str) for e in excludes):
            return excludes
    return []


def spec_files(snapshot: Snapshot, fleet: models.Fleet | None) -> list[SourceFile]:
    excludes = fleet.spec.exclude if fleet else _raw_excludes(snapshot)
    return [f for f in snapshot.files if f.path != FLEET_FILE and not is_excluded(f.path, excludes)]


def revision_key(snapshot: Snapshot) -> str:
    """Names the content of a whole revision: every YAML file (fleet.yaml, and so the limits,
    rules and excludes, included), what the source refused, and the fleet version."""
    return hashlib.sha256(
        "\n".join(
            [__version__]
            + [f"{f.path}\0{f.blob_id}" for f in snapshot.files]
            + [f"{p.path}\0{p.code}\0{p.message}" for p in snapshot.problems]
        ).encode()
    ).hexdigest()


def validate_snapshot(snapshot: Snapshot, cache: SpecCache | None = None, workers: int = 1) -> Validation:
    """Every diagnostic of the repo. A revision seen before costs no parsing at all."""
    key = revision_key(snapshot)
    if cache is not None:
        hit = cache.get_revision(key)
        if hit is not None:
            return Validation(
                snapshot.description, hit["diagnostics"], hit["documents"], hit["files"], 0, True
            )
    validation = _validate(snapshot, cache, workers)
    if cache is not None:
        cache.put_revision(
            key,
            {
                "diagnostics": validation.diagnostics,
                "documents": validation.documents,
                "files": validation.files,
            },
        )
    return validation


def _validate(snapshot: Snapshot, cache: SpecCache | None, workers: int) -> Validation:
    from reconciler.spec.references import check_references
    from reconciler.spec.validate import settings_from_fleet

    fleet_entry, fleet_result = _fleet(snapshot)
    fleet = fleet_result.fleet if fleet_result else None
    settings = settings_from_fleet(fleet)
    fingerprint = settings.fingerprint()
    entries = spec_files(snapshot, fleet)

    keys = [SpecCache.file_key(fingerprint, f.blob_id, f.path) for f in entries]
    cached = cache.get_files(keys) if cache is not None else {}
    missing = [(key, f) for key, f in zip(keys, entries, strict=True) if key not in cached]
    parsed = _parallel([(f.path, snapshot.read(f)) for _, f in missing], settings, workers)
    if cache is not None and parsed:
        cache.put_files(zip([key for key, _ in missing], parsed, strict=True))
    results: list[FileResult] = [cached[k] for k in keys if k in cached] + parsed
    if fleet_result is not None:
        results.append(fleet_result)

    diagnostics: list[Diagnostic] = [d for r in results for d in r.diagnostics]
    for problem in snapshot.problems:
        diagnostics.append(
            error(problem.code, problem.message, problem.path, line=1, col=1, hint=problem.hint)
        )
    cross = check_references(fleet, FLEET_FILE if fleet_entry else None, [(r.path, r.facts) for r in results])
    diagnostics.extend(_locate_all(snapshot, cross))

    documents = Counter(fact[0] for r in results for fact in r.facts)
    validation = Validation(
        snapshot.description,
        sorted_diagnostics(diagnostics),
        dict(sorted(documents.items())),
        len(entries) + (1 if fleet_entry else 0),
        len(parsed),
        False,
    )
    return validation


def _locate_all(snapshot: Snapshot, diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    from reconciler.spec.yamlload import locate

    by_path = {f.path: f for f in snapshot.files}
    data: dict[str, bytes] = {}
    out = []
    for d in diagnostics:
        if d.line == 0 and d.path in by_path:
            if d.path not in data:
                data[d.path] = snapshot.read(by_path[d.path])
            line, col = locate(data[d.path], d.doc_index, d.field_path)
            d = dataclasses.replace(d, line=line, col=col)
        out.append(d)
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class LoadedDocument:
    path: str
    index: int
    document: models.Document
    raw: dict[str, Any]


def load_documents(snapshot: Snapshot) -> list[LoadedDocument]:
    """Every valid document of the repo as a model, in path order (for `fleet get`)."""
    from reconciler.spec import models
    from reconciler.spec.validate import settings_from_fleet
    from reconciler.spec.yamlload import load_yaml

    _, fleet_result = _fleet(snapshot)
    fleet = fleet_result.fleet if fleet_result else None
    settings = settings_from_fleet(fleet)
    loaded: list[LoadedDocument] = []
    if fleet is not None:
        loaded.append(LoadedDocument(FLEET_FILE, 0, fleet, fleet.model_dump(mode="json", by_alias=True)))
    for entry in spec_files(snapshot, fleet):
        data = snapshot.read(entry)
        result = load_yaml(entry.path, data, settings.limits)
        for index, raw in enumerate(result.documents):
            if not isinstance(raw, dict):
                continue
            kind = raw.get("kind")
            if kind not in models.KINDS or kind == "Fleet":
                continue
            try:
                document = models.KINDS[kind].model_validate(raw)
            except ValueError:
                continue
            loaded.append(LoadedDocument(entry.path, index, document, raw))
    return loaded


def cache_path(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fleet"
