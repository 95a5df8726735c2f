"""The one loader of a fleet repo at a revision: every caller (validate, get, inventory, plan,
apply, drift, reconcile, the controller) reads specs through `load_revision`.

It reads fleet.yaml first (its limits, rules and excludes shape everything else), validates
every other spec file (from the cache when its blob is known, in worker processes when many
are new), then runs the cross-document checks over all of them. A revision validated before
is answered from the cache, its documents included. A revision loaded from a `base` revision
this process loaded (the engine's previous one: the controller's next commit) starts from what
that load kept: only the files whose blobs differ are read, and only the cross-document checks
their facts touch run again (`references.CrossIndex`), with the same checks and the same
diagnostics as a whole load. What it returns says whether the revision may be acted on
(`errors`); it never drops a document that failed quietly: a document that fails validation is
an error of the revision, never a document that is missing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import multiprocessing
import os
import re
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from typing import Any, TypeVar

from reconciler import __version__
from reconciler.errors import PermanentError
from reconciler.memory import collector_paused
from reconciler.source.snapshot import Snapshot, SourceFile
from reconciler.spec import models
from reconciler.spec.cache import SpecCache, pack_documents, unpack_documents
from reconciler.spec.diagnostics import Diagnostic, Severity, error, sorted_diagnostics
from reconciler.spec.references import CrossIndex
from reconciler.spec.results import FLEET_FILE, Facts, FileResult
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

T = TypeVar("T")
_MEMO_LOCK = threading.RLock()


@dataclasses.dataclass(frozen=True, slots=True)
class LoadedDocument:
    """A valid document and where it was read from."""

    path: str
    index: int
    document: models.Document


# An index of a revision's documents: a key -> the addresses of the documents that have it.
Index = dict[str, set[str]]


@dataclasses.dataclass(frozen=True)
class Edit:
    """How a revision differs from the one it was loaded from (its base): the documents of the
    files that changed, as the base had them and as the revision has them."""

    base: weakref.ReferenceType[LoadedRevision]  # not kept alive by the revisions after it
    before: tuple[models.Document, ...]
    after: tuple[models.Document, ...]
    # The base's indexes (`LoadedRevision.index`), which the revision takes over when it is first
    # asked for one, even after the base is gone; kept until then. Only when both revisions are
    # valid: no address is then held twice, so taking an edited document's address off a key
    # leaves no other document's behind.
    indexes: dict[str, Index] | None

    def of(self, base: LoadedRevision) -> Edit | None:
        """This edit when `base` is the revision it starts from; None otherwise."""
        return self if self.base() is base else None


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
    # What a load derived from this one starts from (see `load_revision`'s `base`).
    carried: Carried = dataclasses.field(default_factory=lambda: Carried(None), compare=False, repr=False)
    # Indexes of the documents that callers work out once per revision (see `derived`).
    memo: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    # Indexes by key (see `index`), apart from `memo`: a revision loaded from this one takes them.
    indexes: dict[str, Index] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    # What changed since the revision this one was loaded from (None: loaded whole).
    edit: Edit | None = dataclasses.field(default=None, compare=False, repr=False)

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

    # Maps of the documents, each made once per revision: a caller that passes over the same
    # revision again and again (the controller) does not walk 100,000 documents every time.

    @functools.cached_property
    def by_address(self) -> dict[str, LoadedDocument]:
        """Every valid document (the Fleet's too) by address."""
        return {d.document.address: d for d in self.documents}

    @functools.cached_property
    def resources(self) -> dict[str, models.Document]:
        """Every valid document but the Fleet, by address."""
        return {a: d.document for a, d in self.by_address.items() if d.document.kind_name != "Fleet"}

    @functools.cached_property
    def paths(self) -> dict[str, str]:
        """The file of every valid document, by address."""
        return {a: d.path for a, d in self.by_address.items()}

    @functools.cached_property
    def machines(self) -> dict[str, models.Machine]:
        """The valid Machines by name."""
        return {d.metadata.name: d for d in self.resources.values() if isinstance(d, models.Machine)}

    def derived(self, name: str, make: Callable[[], T]) -> T:
        """An index of this revision's documents that a higher layer works out (what refers to
        what, who reads which directory): made by `make` once, then kept with the revision."""
        with _MEMO_LOCK:
            if name not in self.memo:
                self.memo[name] = make()
            found: T = self.memo[name]
            return found

    def index(self, name: str, keys: Callable[[models.Document], Iterable[str]]) -> Index:
        """The index `name` of the documents, by the `keys` of each: made once per revision. A
        revision loaded from a base that made it takes the base's (the base makes its own anew if
        asked again) and updates it with the edited documents: a one-file commit costs what the
        file holds, not what the fleet holds."""
        with _MEMO_LOCK:
            if name in self.indexes:
                return self.indexes[name]
            carried = self.edit.indexes if self.edit is not None else None
            taken = carried.pop(name, None) if carried is not None else None
            if taken is None:
                taken = {}
                for loaded in self.documents:
                    for key in keys(loaded.document):
                        taken.setdefault(key, set()).add(loaded.document.address)
            else:
                assert self.edit is not None
                for document in self.edit.before:
                    for key in keys(document):
                        holders = taken.get(key)
                        if holders is not None:
                            holders.discard(document.address)
                            if not holders:
                                del taken[key]
                for document in self.edit.after:
                    for key in keys(document):
                        taken.setdefault(key, set()).add(document.address)
            self.indexes[name] = taken
            return taken


# Where a diagnostic points: path, blob id, document index, field path.
_Where = tuple[str, str, int | None, tuple[str | int, ...]]


@dataclasses.dataclass(slots=True)
class _File:
    """What a load keeps of one file: its cache key, its own diagnostics and its valid documents
    (none for a file holding a Fleet document, as a whole load has it)."""

    key: str
    diagnostics: list[Diagnostic]
    documents: tuple[LoadedDocument, ...]


@dataclasses.dataclass(slots=True)
class _LoadState:
    """Everything a load worked out, file by file, for a load derived from it to update."""

    fingerprint: str  # of the FileSettings the files were checked with
    fleet_blob: str | None
    fleet_result: FileResult | None
    files: dict[str, _File]  # every spec file, fleet.yaml included
    cross: CrossIndex
    counts: Counter[str]
    located: dict[_Where, tuple[int, int]]  # the line and column of cross-document diagnostics


class Carried:
    """The state a load leaves for the next load derived from it. That load takes it (and
    changes it in place), so a revision is the base of at most one other."""

    def __init__(self, state: _LoadState | None) -> None:
        self._state = state
        self._lock = threading.Lock()

    def take(self) -> _LoadState | None:
        with self._lock:
            state, self._state = self._state, None
        return state


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


def _fleet(
    snapshot: Snapshot, state: _LoadState | None
) -> tuple[SourceFile | None, FileResult | None, _LoadState | None]:
    """fleet.yaml's entry and result, and `state` when it was loaded with the same fleet.yaml
    (None otherwise: a new fleet.yaml changes the limits, rules, sites and credentials of all)."""
    entry = next((f for f in snapshot.files if f.path == FLEET_FILE), None)
    if state is not None and state.fleet_blob == (entry.blob_id if entry else None):
        return entry, state.fleet_result, state
    if entry is None:
        return None, None, None
    return entry, validate_file(FLEET_FILE, snapshot.read(entry), FileSettings()), None


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
    snapshot: Snapshot,
    cache: SpecCache | None = None,
    workers: int = 1,
    *,
    documents: bool = True,
    base: LoadedRevision | None = None,
) -> LoadedRevision:
    """Every diagnostic of the revision and (unless `documents` is False) its valid documents.

    A revision seen before costs no parsing at all: its diagnostics come from the revision
    cache and its documents from the file cache. With `base`, a revision loaded before in this
    process with the same fleet.yaml, only what changed since `base` is read and checked again
    (and `base` can be no other revision's base after that)."""
    with collector_paused(keep=documents):
        return _load_revision(snapshot, cache, workers, documents, base)


def _load_revision(
    snapshot: Snapshot, cache: SpecCache | None, workers: int, documents: bool, base: LoadedRevision | None
) -> LoadedRevision:
    carried = base.carried.take() if base is not None and documents else None
    fleet_entry, fleet_result, state = _fleet(snapshot, carried)
    fleet = fleet_result.fleet if fleet_result else None
    settings = settings_from_fleet(fleet)
    entries = spec_files(snapshot, fleet)
    fingerprint = settings.fingerprint()
    keys = [SpecCache.file_key(fingerprint, f.blob_id, f.path) for f in entries]
    key = revision_key(snapshot)
    if state is not None and state.fingerprint == fingerprint:
        assert base is not None  # the state is carried from it
        loaded = _load_changed(snapshot, cache, workers, state, settings, entries, keys, base)
        if cache is not None:
            cache.put_revision(
                key,
                {"diagnostics": list(loaded.diagnostics), "documents": loaded.counts, "files": loaded.files},
            )
        return loaded
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
    if documents:
        return loaded
    return dataclasses.replace(loaded, documents=(), carried=Carried(None), memo={}, indexes={})


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
    """The whole revision: every file from the cache or parsed, every cross-document check."""
    fleet = fleet_result.fleet if fleet_result else None
    state = _LoadState(
        settings.fingerprint(),
        fleet_entry.blob_id if fleet_entry else None,
        fleet_result,
        {},
        CrossIndex(fleet, FLEET_FILE if fleet_entry else None),
        Counter(),
        {},
    )
    results, parsed = _file_results(snapshot, cache, workers, settings, entries, keys)
    changed = list(zip(keys, results, strict=True))
    if fleet_result is not None:
        changed.append(("", fleet_result))
    return _revision(snapshot, state, entries, changed, (), parsed)


def _load_changed(
    snapshot: Snapshot,
    cache: SpecCache | None,
    workers: int,
    state: _LoadState,
    settings: FileSettings,
    entries: list[SourceFile],
    keys: list[str],
    base: LoadedRevision,
) -> LoadedRevision:
    """The revision from the state of a load with the same fleet.yaml: the files whose blobs
    differ are read (from the cache, or parsed) and the others kept."""
    wanted = [
        (key, entry)
        for key, entry in zip(keys, entries, strict=True)
        if (kept := state.files.get(entry.path)) is None or kept.key != key
    ]
    present = {entry.path for entry in entries} | ({FLEET_FILE} if state.fleet_blob is not None else set())
    removed = [path for path in state.files if path not in present]
    results, parsed = _file_results(
        snapshot, cache, workers, settings, [e for _, e in wanted], [k for k, _ in wanted]
    )
    changed = list(zip((k for k, _ in wanted), results, strict=True))
    touched = [*removed, *(r.path for r in results)]
    before = {p: state.files[p].documents if p in state.files else () for p in touched}
    revision = _revision(snapshot, state, entries, changed, removed, parsed)
    after = {p: state.files[p].documents if p in state.files else () for p in touched}
    edit = Edit(
        weakref.ref(base),
        tuple(d.document for documents in before.values() for d in documents),
        tuple(d.document for documents in after.values() for d in documents),
        base.indexes if not base.errors and not revision.errors else None,
    )
    revision.__dict__["edit"] = edit  # frozen: set once, before anyone sees the revision
    _carry_maps(base, revision, before, after)
    return revision


def _carry_maps(
    base: LoadedRevision,
    revision: LoadedRevision,
    before: Mapping[str, Sequence[LoadedDocument]],
    after: Mapping[str, Sequence[LoadedDocument]],
) -> None:
    """Give `revision` the maps of its documents that `base` has made (`by_address`, `resources`,
    `paths`, `machines`), as copies of `base`'s with the documents of the changed files put in
    place: an edit costs what the files hold, not what the fleet holds. Only when the changed
    files hold the same addresses, in the same order, as before (the maps are then exactly what
    a walk of every document makes); otherwise the maps are made whole when first asked for."""
    made = base.__dict__
    if "by_address" not in made or revision.fleet is not base.fleet:
        return  # not made yet, or fleet.yaml changed
    edits: list[tuple[LoadedDocument, LoadedDocument]] = []
    for path, was in before.items():
        now = after[path]
        if [d.document.address for d in was] != [d.document.address for d in now]:
            return
        edits.extend(zip(was, now, strict=True))
    by_address: dict[str, LoadedDocument] = dict(made["by_address"])
    for old, new in edits:
        if by_address.get(old.document.address) is not old or new.document.kind_name == "Fleet":
            return  # the address is held twice (the map keeps another document), or a Fleet
        by_address[new.document.address] = new
    carried: dict[str, Any] = {"by_address": by_address}
    if "resources" in made:
        resources = dict(made["resources"])
        resources.update((new.document.address, new.document) for _, new in edits)
        carried["resources"] = resources
    if "paths" in made:
        carried["paths"] = dict(made["paths"])
    if "machines" in made:
        machines = dict(made["machines"])
        for _, new in edits:
            if isinstance(new.document, models.Machine):
                machines[new.document.metadata.name] = new.document
        carried["machines"] = machines
    revision.__dict__.update(carried)


def _file_results(
    snapshot: Snapshot,
    cache: SpecCache | None,
    workers: int,
    settings: FileSettings,
    entries: list[SourceFile],
    keys: list[str],
) -> tuple[list[FileResult], int]:
    """The result of each file (in order), from the cache or parsed; and how many were parsed."""
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
    return results, len(parsed)


def _revision(
    snapshot: Snapshot,
    state: _LoadState,
    entries: list[SourceFile],
    changed: Sequence[tuple[str, FileResult]],
    removed: Iterable[str],
    parsed: int,
) -> LoadedRevision:
    """Put the `changed` files' results (by cache key) and the `removed` files into `state`, check
    again what they touch, and make the revision of what `state` holds then. A whole load is
    this with every file changed, from an empty state."""
    replaced: dict[str, Sequence[Facts] | None] = {}
    for path in removed:
        state.counts.subtract(fact[0] for fact in state.cross.files.get(path, ()))
        del state.files[path]
        replaced[path] = None
    for key, result in changed:
        path = result.path
        state.counts.subtract(fact[0] for fact in state.cross.files.get(path, ()))
        state.counts.update(fact[0] for fact in result.facts)
        state.files[path] = _File(
            key,
            result.diagnostics,
            ()
            if result.fleet is not None
            else tuple(LoadedDocument(path, index, document) for index, document in result.documents),
        )
        replaced[path] = result.facts
    state.cross.replace(replaced)
    diagnostics: list[Diagnostic] = [d for kept in state.files.values() for d in kept.diagnostics]
    for problem in snapshot.problems:
        diagnostics.append(
            error(problem.code, problem.message, problem.path, line=1, col=1, hint=problem.hint)
        )
    diagnostics.extend(_locate_all(snapshot, state.cross.diagnostics(), state.located))
    fleet = state.fleet_result.fleet if state.fleet_result else None
    documents = [LoadedDocument(FLEET_FILE, 0, fleet)] if fleet is not None else []
    for entry in entries:
        documents.extend(state.files[entry.path].documents)
    if FLEET_FILE in state.files:
        documents.extend(state.files[FLEET_FILE].documents)
    return LoadedRevision(
        snapshot.description,
        snapshot.commit,
        tuple(sorted_diagnostics(diagnostics)),
        dict(sorted((kind, count) for kind, count in state.counts.items() if count > 0)),
        len(entries) + (1 if state.fleet_blob is not None else 0),
        parsed,
        False,
        fleet,
        tuple(documents),
        Carried(state),
    )


def _locate_all(
    snapshot: Snapshot,
    diagnostics: list[Diagnostic],
    located: dict[_Where, tuple[int, int]],
) -> list[Diagnostic]:
    """Put a line and column on the cross-document diagnostics. `located` holds the places
    found by the previous load (by blob), and is left holding this load's."""
    by_path = {f.path: f for f in snapshot.files}
    locators: dict[str, Locator] = {}
    found: dict[_Where, tuple[int, int]] = {}
    out = []
    for d in diagnostics:
        if d.line == 0 and d.path in by_path:
            entry = by_path[d.path]
            where = (d.path, entry.blob_id, d.doc_index, tuple(d.field_path))
            place = found.get(where) or located.get(where)
            if place is None:
                if d.path not in locators:
                    locators[d.path] = Locator(snapshot.read(entry))
                place = locators[d.path](d.doc_index, d.field_path)
            found[where] = place
            d = dataclasses.replace(d, line=place[0], col=place[1])
        out.append(d)
    located.clear()
    located.update(found)
    return out
