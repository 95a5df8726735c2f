"""The one loader of a fleet repo at a revision: every caller (validate, get, inventory, plan,
apply, drift, reconcile, the controller) reads specs through `load_revision`.

It reads fleet.yaml first (its limits, rules and excludes shape everything else), validates
every other spec file (from the cache when its blob is known, in worker processes when many
are new), then runs the cross-document checks over all of them. A revision validated before
is answered from the cache, its documents included. What it returns says whether the revision
may be acted on (`errors`); it never drops a document that failed quietly: a document that
fails validation is an error of the revision, never a document that is missing.
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

from reconciler import __version__
from reconciler.errors import PermanentError
from reconciler.memory import collector_paused
from reconciler.source.snapshot import Snapshot, SourceFile
from reconciler.spec import models
from reconciler.spec.cache import SpecCache, pack_documents, unpack_documents
from reconciler.spec.diagnostics import Diagnostic, Severity, error, sorted_diagnostics
from reconciler.spec.references import check_references
from reconciler.spec.results import FLEET_FILE, FileResult
from reconciler.spec.validate import (
    FileSettings,
    rules_digest,
    settings_from_fleet,
    validate_file,
    validate_files,
)
from reconciler.spec.yamlload import Locator, load_yaml

# Below this many files to parse, worker processes cost more than they save.
PARALLEL_THRESHOLD = 64


@dataclasses.dataclass(frozen=True, slots=True)
class LoadedDocument:
    """A valid document and where it was read from."""

    path: str
    index: int
    document: models.Document


@dataclasses.dataclass(frozen=True)
class LoadedRevision:
    """A fleet repo at one revision: every diagnostic, and the documents that are valid on their own."""

    source: str  # what was read, for people ("working tree PATH", "REPO at REV (COMMIT)")
    commit: str | None  # None for a working tree
    diagnostics: tuple[Diagnostic, ...]
    counts: dict[str, int]  # documents per kind, valid or not
    files: int
    parsed: int  # spec files parsed in this load (fleet.yaml, always read, not counted)
    from_cache: bool
    fleet: models.Fleet | None
    documents: tuple[LoadedDocument, ...] = ()  # empty when loaded without documents

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.WARNING]

    @property
    def revision(self) -> str:
        """The revision a plan or an audit record names: the commit, or `working-tree`."""
        return self.commit or "working-tree"

    def summary(self) -> str:
        kinds = ", ".join(f"{count} {kind}" for kind, count in self.counts.items()) or "no documents"
        return f"{self.source}: {self.files} files, {kinds}"


class InvalidRevision(PermanentError):
    """The revision has error diagnostics: nothing may be observed as missing, planned or changed."""

    def __init__(self, revision: LoadedRevision, *, message: str | None = None) -> None:
        count = len(revision.errors)
        super().__init__(
            message
            or f"{revision.source} is invalid ({count} error{'' if count == 1 else 's'}); nothing was done",
            hint="fix the errors above (`fleet validate` shows the same), then run again",
        )
        self.revision = revision


def require_valid(revision: LoadedRevision) -> LoadedRevision:
    """The validation gate: a revision with any error is refused as a whole."""
    if revision.errors:
        raise InvalidRevision(revision)
    return revision


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
        for chunk, done in zip(chunks, pool.map(_validate_packed, work, [settings] * len(work)), strict=True):
            for i, result in zip(chunk, done, strict=True):
                if result.packed is not None:
                    result.documents = unpack_documents(result.packed)
                results[i] = result
    return [r for r in results if r is not None]


def _validate_packed(batch: Sequence[tuple[str, bytes]], settings: FileSettings) -> list[FileResult]:
    """In a worker: validate, and pickle the documents once, for both the way back and the cache."""
    results = validate_files(batch, settings)
    for result in results:
        if result.fleet is None:
            result.packed, result.documents = pack_documents(result.documents), []
    return results


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _fleet(snapshot: Snapshot) -> tuple[SourceFile | None, FileResult | None]:
    entry = next((f for f in snapshot.files if f.path == FLEET_FILE), None)
    if entry is None:
        return None, None
    return entry, validate_file(FLEET_FILE, snapshot.read(entry), FileSettings())


def _raw_excludes(snapshot: Snapshot) -> list[str]:
    """spec.exclude of a fleet.yaml that is itself invalid, so its errors do not multiply."""
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
    rules and excludes, included), what the source refused, and the fleet version and rules."""
    return hashlib.sha256(
        "\n".join(
            [__version__, rules_digest()]
            + [f"{f.path}\0{f.blob_id}" for f in snapshot.files]
            + [f"{p.path}\0{p.code}\0{p.message}" for p in snapshot.problems]
        ).encode()
    ).hexdigest()


def load_revision(
    snapshot: Snapshot, cache: SpecCache | None = None, workers: int = 1, *, documents: bool = True
) -> LoadedRevision:
    """Every diagnostic of the revision and (unless `documents` is False) its valid documents.

    A revision seen before costs no parsing at all: its diagnostics come from the revision
    cache and its documents from the file cache."""
    with collector_paused(keep=documents):
        return _load_revision(snapshot, cache, workers, documents)


def _load_revision(
    snapshot: Snapshot, cache: SpecCache | None, workers: int, documents: bool
) -> LoadedRevision:
    fleet_entry, fleet_result = _fleet(snapshot)
    fleet = fleet_result.fleet if fleet_result else None
    settings = settings_from_fleet(fleet)
    entries = spec_files(snapshot, fleet)
    fingerprint = settings.fingerprint()
    keys = [SpecCache.file_key(fingerprint, f.blob_id, f.path) for f in entries]
    key = revision_key(snapshot)
    hit = cache.get_revision(key) if cache is not None else None
    if hit is not None and cache is not None:
        found: tuple[LoadedDocument, ...] | None = ()
        if documents:
            found = _cached_documents(cache, keys, entries, fleet)
        if found is not None:
            return LoadedRevision(
                snapshot.description,
                snapshot.commit,
                tuple(hit["diagnostics"]),
                hit["documents"],
                hit["files"],
                0,
                True,
                fleet,
                found,
            )
    loaded = _load(snapshot, cache, workers, fleet_entry, fleet_result, settings, entries, keys)
    if cache is not None:
        cache.put_revision(
            key,
            {"diagnostics": list(loaded.diagnostics), "documents": loaded.counts, "files": loaded.files},
        )
    return loaded if documents else dataclasses.replace(loaded, documents=())


def _cached_documents(
    cache: SpecCache, keys: list[str], entries: list[SourceFile], fleet: models.Fleet | None
) -> tuple[LoadedDocument, ...] | None:
    """The documents of every file from the cache; None when any file's are missing."""
    stored = cache.get_documents(keys)
    if len(stored) != len(keys):
        return None
    found = [LoadedDocument(FLEET_FILE, 0, fleet)] if fleet is not None else []
    for entry, key in zip(entries, keys, strict=True):
        found.extend(LoadedDocument(entry.path, index, document) for index, document in stored[key])
    return tuple(found)


def _load(
    snapshot: Snapshot,
    cache: SpecCache | None,
    workers: int,
    fleet_entry: SourceFile | None,
    fleet_result: FileResult | None,
    settings: FileSettings,
    entries: list[SourceFile],
    keys: list[str],
) -> LoadedRevision:
    fleet = fleet_result.fleet if fleet_result else None
    cached = cache.get_files(keys) if cache is not None else {}
    stored = cache.get_documents([k for k in keys if k in cached]) if cache is not None else {}
    missing = [
        (key, f) for key, f in zip(keys, entries, strict=True) if key not in cached or key not in stored
    ]
    parsed = _parallel([(f.path, snapshot.read(f)) for _, f in missing], settings, workers)
    if cache is not None and parsed:
        cache.put_files(zip([key for key, _ in missing], parsed, strict=True))
    fresh = dict(zip((key for key, _ in missing), parsed, strict=True))
    results: list[FileResult] = []
    for k in keys:
        if k in fresh:
            results.append(fresh[k])
        else:
            result = cached[k]
            result.documents = stored[k]
            results.append(result)
    if fleet_result is not None:
        results.append(fleet_result)

    diagnostics: list[Diagnostic] = [d for r in results for d in r.diagnostics]
    for problem in snapshot.problems:
        diagnostics.append(
            error(problem.code, problem.message, problem.path, line=1, col=1, hint=problem.hint)
        )
    cross = check_references(fleet, FLEET_FILE if fleet_entry else None, [(r.path, r.facts) for r in results])
    diagnostics.extend(_locate_all(snapshot, cross))
    counts = Counter(fact[0] for r in results for fact in r.facts)
    documents = [LoadedDocument(FLEET_FILE, 0, fleet)] if fleet is not None else []
    documents.extend(
        LoadedDocument(r.path, index, document)
        for r in results
        if r.fleet is None
        for index, document in r.documents
    )
    return LoadedRevision(
        snapshot.description,
        snapshot.commit,
        tuple(sorted_diagnostics(diagnostics)),
        dict(sorted(counts.items())),
        len(entries) + (1 if fleet_entry else 0),
        len(parsed),
        False,
        fleet,
        tuple(documents),
    )


def _locate_all(snapshot: Snapshot, diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    by_path = {f.path: f for f in snapshot.files}
    locators: dict[str, Locator] = {}
    out = []
    for d in diagnostics:
        if d.line == 0 and d.path in by_path:
            if d.path not in locators:
                locators[d.path] = Locator(snapshot.read(by_path[d.path]))
            line, col = locators[d.path](d.doc_index, d.field_path)
            d = dataclasses.replace(d, line=line, col=col)
        out.append(d)
    return out
