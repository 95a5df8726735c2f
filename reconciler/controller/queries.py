"""What the controller's reads answer, for the API and the web UI alike: one function per answer,
returning plain JSON values, so that a page shows exactly what `/api/v1` says.

The overview is aggregated, never walked per request over every spec: where each resource sits
(site, rack, the host or cluster it runs on, its labels) is indexed once per revision in force,
and its states are read in one narrow query kept for a second. Nothing here changes anything.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler.controller.controller import Controller
from reconciler.errors import UsageError
from reconciler.kinds import kind_named, kind_of
from reconciler.memory import collector_paused
from reconciler.plan.findings import enforcement_mode
from reconciler.report.history import history_data
from reconciler.spec import models
from reconciler.spec.loader import LoadedRevision
from reconciler.spec.selector import parse_selector
from reconciler.state import StateStore

STATES = ("in sync", "drifted", "unknown", "suspended", "failing", "waiting", "orphaned")
STATES_KEPT_SECONDS = 1.0
# States saved this long before the last look began are read again: a save that committed late
# (another replica, a clock a little behind) is not missed.
SAVES_OVERLAP = timedelta(seconds=10)
NOWHERE = "-"  # the site or rack of what has none (clusters, their pools, orphans)
MAX_CELLS = 5000  # a rack page shows at most this many resources


class NotFound(LookupError):
    """No such resource or run."""


def _stamp(value: Any) -> str:
    return str(value.isoformat().replace("+00:00", "Z"))


@dataclasses.dataclass(frozen=True, slots=True)
class Placed:
    """Where a resource of the revision in force sits, and what a filter matches on."""

    address: str
    kind: str
    site: str
    rack: str
    parent: str | None
    labels: Mapping[str, str]
    path: str
    index: int
    document: models.Document | None = None
    label_key: frozenset[tuple[str, str]] = frozenset()  # the labels, hashable


def place(loaded: LoadedRevision) -> dict[str, Placed]:
    """Every resource of a revision (the Fleet aside) by address, with its site and rack."""
    machines = {
        d.document.metadata.name: d.document
        for d in loaded.documents
        if isinstance(d.document, models.Machine)
    }
    placed: dict[str, Placed] = {}
    for entry in loaded.documents:
        document = entry.document
        if document.kind_name == "Fleet":
            continue
        kind = kind_of(document)
        placed[document.address] = Placed(
            document.address,
            document.kind_name,
            kind.site(document, machines) or NOWHERE,
            kind.rack(document, machines) or NOWHERE,
            kind.nested_under(document),
            dict(document.metadata.labels),
            entry.path,
            entry.index,
            document,
            frozenset(document.metadata.labels.items()),
        )
    return placed


@functools.lru_cache(maxsize=64)
def _selector(selector: str) -> Callable[[frozenset[tuple[str, str]], Mapping[str, str]], bool]:
    """A label selector's test, remembering its answer per set of labels: a fleet has far fewer
    distinct label sets than resources."""
    try:
        match = parse_selector(selector)
    except (UsageError, ValueError) as exc:
        raise UsageError(f"bad selector: {exc}") from None
    answers: dict[frozenset[tuple[str, str]], bool] = {}

    def matches(key: frozenset[tuple[str, str]], labels: Mapping[str, str]) -> bool:
        found = answers.get(key)
        if found is None:
            if len(answers) > 100_000:
                answers.clear()
            found = answers[key] = match(labels)
        return found

    return matches


@dataclasses.dataclass(frozen=True)
class Filter:
    """The overview's filter, as the URL and the API's query carry it."""

    kind: str | None = None
    state: str | None = None
    site: str | None = None
    selector: str | None = None
    q: str | None = None

    def matcher(self) -> Callable[[Placed, str], bool]:
        """A test of (resource, state); raises UsageError for a bad selector or kind."""
        kind_name = None
        if self.kind:
            found = kind_named(self.kind)
            if found is None:
                raise UsageError(f"no kind {self.kind!r}")
            kind_name = found.name
        labels = _selector(self.selector) if self.selector else None
        text = (self.q or "").strip().lower()
        state, site = self.state or None, self.site or None

        def matches(placed: Placed, current: str) -> bool:
            return (
                (kind_name is None or placed.kind == kind_name)
                and (state is None or current == state)
                and (site is None or placed.site == site)
                and (not text or text in placed.address)
                and (labels is None or labels(placed.label_key, placed.labels))
            )

        return matches

    @property
    def empty(self) -> bool:
        return not (self.kind or self.state or self.site or self.selector or self.q)


class FleetView:
    """The reads of one controller and its store; shared by every request of the process."""

    def __init__(
        self,
        controller: Controller,
        store: StateStore,
        *,
        states_kept: float = STATES_KEPT_SECONDS,
        overlap: timedelta = SAVES_OVERLAP,
    ) -> None:
        self.controller = controller
        self.store = store
        self._states_kept = states_kept
        self._overlap = overlap
        self._lock = threading.Lock()
        self._placed: tuple[str, dict[str, Placed]] | None = None
        self._known: dict[str, str] = {}
        self._counts: dict[tuple[str, str], dict[str, int]] = {}
        self._counted_for: dict[str, Placed] | None = None
        self._latest: datetime | None = None
        self._looked = -float("inf")
        self._looked_at: datetime | None = None  # when the last look began, by the wall clock
        self._lines: tuple[str, dict[str, list[int]]] | None = None
        self._lines_lock = threading.Lock()
        self._overviews: dict[Filter, tuple[float, dict[str, Any]]] = {}

    # --- the index -----------------------------------------------------------------------------

    def placed(self) -> dict[str, Placed]:
        """Where each resource of the revision in force sits (indexed once per revision)."""
        in_force = self.controller.revision_in_force()
        if in_force is None:
            return {}
        revision, _, loaded = in_force
        kept = self._placed
        if kept is not None and kept[0] == revision:
            return kept[1]
        with self._lock:
            kept = self._placed
            if kept is not None and kept[0] == revision:
                return kept[1]
            # Kept until the next revision: frozen out of the cyclic collector's sight, whose
            # full collections otherwise walk its 100,000s of objects again and again under
            # load, 200 ms each at 110,000 Machines.
            with collector_paused(keep=True):
                placed = place(loaded)
            self._placed = (revision, placed)
            self._overviews.clear()
        # Where each document starts means reading every spec file again: done meanwhile, so
        # that the first resource page does not wait for it.
        threading.Thread(target=self._lines_of, args=(revision,), name="fleet-ui-lines", daemon=True).start()
        return placed

    def states(self) -> dict[str, str]:
        """Every resource's state by address, brought up to date at most once a second by
        reading only the states saved since the last look (all of them after a new revision, or
        when resources came or went); the counts per rack follow each change. What it answers
        is never changed afterwards: a request may go on reading it while the next look runs."""
        placed = self.placed()
        now = time.monotonic()
        if now - self._looked < self._states_kept and self._counted_for is placed:
            return self._known
        with self._lock:
            if now - self._looked < self._states_kept and self._counted_for is placed:
                return self._known
            incremental = self._latest is not None and self._counted_for is placed
            since = None
            if incremental and self._latest is not None:
                # What was saved since the last look began, or since the latest save it saw if
                # that came later: a quiet fleet is read in no rows, not its whole last batch.
                seen = self._latest if self._looked_at is None else max(self._latest, self._looked_at)
                since = seen - self._overlap
            looked_at = datetime.now(UTC)
            changed, total, latest = self.store.resource_state_changes(since)
            moved = {a: s for a, s in changed.items() if self._known.get(a) != s} if incremental else changed
            if incremental and not moved and len(self._known) == total:
                self._looked, self._looked_at = now, looked_at
                return self._known
            known = {**self._known, **moved} if incremental else dict(changed)
            counts: dict[tuple[str, str], dict[str, int]]
            if incremental and len(known) == total:
                counts = {bucket: dict(found) for bucket, found in self._counts.items()}
                for address, state in moved.items():
                    bucket = counts.setdefault(self._bucket(placed, address), {})
                    before = self._known.get(address)
                    if before is not None:
                        bucket[before] -= 1
                        if not bucket[before]:
                            del bucket[before]
                    bucket[state] = bucket.get(state, 0) + 1
            else:
                if len(known) != total:  # resources came or went: read them all again
                    known, total, latest = self.store.resource_state_changes(None)
                counts = {}
                for address, state in known.items():
                    bucket = counts.setdefault(self._bucket(placed, address), {})
                    bucket[state] = bucket.get(state, 0) + 1
            self._known, self._counts, self._counted_for = known, counts, placed
            if latest is not None:
                self._latest = max(latest, self._latest) if self._latest is not None else latest
            self._looked, self._looked_at = now, looked_at
            self._overviews.clear()
            return known

    @staticmethod
    def _bucket(placed: Mapping[str, Placed], address: str) -> tuple[str, str]:
        where = placed.get(address)
        return (where.site, where.rack) if where is not None else (NOWHERE, NOWHERE)

    # --- the answers ---------------------------------------------------------------------------

    def overview(self, wanted: Filter) -> dict[str, Any]:
        """Counts by state per site and per rack of the resources `wanted` matches."""
        now = time.monotonic()
        kept = self._overviews.get(wanted)
        if kept is not None and now - kept[0] < self._states_kept:
            return kept[1]
        matches = wanted.matcher()
        placed, states = self.placed(), self.states()
        sites: dict[str, dict[str, dict[str, int]]] = {}
        totals: dict[str, int] = {}
        matched = 0
        if wanted.empty:  # kept up to date as states change: no walk over every resource
            per_rack = self._counts
            for (site, rack), counts in per_rack.items():
                if counts:
                    sites.setdefault(site, {})[rack] = dict(counts)
            for counts in per_rack.values():
                for state, n in counts.items():
                    totals[state] = totals.get(state, 0) + n
            matched = len(states)
        else:
            for address, state in states.items():
                where = placed.get(address) or _unplaced(address)
                if not matches(where, state):
                    continue
                matched += 1
                counts = sites.setdefault(where.site, {}).setdefault(where.rack, {})
                counts[state] = counts.get(state, 0) + 1
                totals[state] = totals.get(state, 0) + 1
        answer = {
            "revision": self._revision(),
            "total": len(states),
            "matched": matched,
            "counts": _ordered(totals),
            "sites": [
                {
                    "name": site,
                    "counts": _ordered(_sum(racks.values())),
                    "total": sum(sum(c.values()) for c in racks.values()),
                    "racks": [
                        {"name": rack, "counts": _ordered(counts), "total": sum(counts.values())}
                        for rack, counts in sorted(racks.items())
                    ],
                }
                for site, racks in sorted(sites.items(), key=lambda item: (item[0] == NOWHERE, item[0]))
            ],
        }
        with self._lock:
            if len(self._overviews) > 256:
                self._overviews.clear()
            self._overviews[wanted] = (now, answer)
        return answer

    def rack(self, site: str, rack: str, wanted: Filter) -> dict[str, Any]:
        """The resources of one rack (or, for `-/-`, of no rack), each with those that run on it."""
        matches = wanted.matcher()
        placed, states = self.placed(), self.states()
        inside = [p for p in placed.values() if p.site == site and p.rack == rack]
        if site == NOWHERE and rack == NOWHERE:  # and what has a state but no spec: orphans
            inside += [_unplaced(address) for address in states if address not in placed]
        if not inside:
            raise NotFound(f"no rack {site}/{rack} in the revision in force")
        chosen = [p for p in inside if matches(p, states.get(p.address, "unknown"))]
        chosen.sort(key=lambda p: p.address)
        shown = {p.address for p in chosen}
        children: dict[str, list[dict[str, Any]]] = {}
        for p in chosen:
            if p.parent is not None and p.parent in shown:
                children.setdefault(p.parent, []).append(self._cell(p, states))
        items = [
            {**self._cell(p, states), "children": children.get(p.address, [])}
            for p in chosen
            if p.parent is None or p.parent not in shown
        ]
        return {
            "site": site,
            "rack": rack,
            "revision": self._revision(),
            "total": len(inside),
            "matched": len(chosen),
            "items": items[:MAX_CELLS],
        }

    def resources(
        self, selector: str | None, kind: str | None, state: str | None, limit: int
    ) -> dict[str, Any]:
        """The resources of the revision in force with their states, filtered."""
        try:
            match = parse_selector(selector) if selector else None
        except (UsageError, ValueError) as exc:
            raise UsageError(f"bad selector: {exc}") from None
        placed = self.placed()
        found = []
        for resource in self.controller.resources():
            if kind is not None and resource.kind.lower() != kind.lower():
                continue
            if state is not None and resource.state != state:
                continue
            if match is not None:
                where = placed.get(resource.address)
                if where is None or not match(where.labels):
                    continue
            found.append(resource.as_json())
        return {"items": found[:limit], "total": len(found)}

    def resource(self, address: str) -> dict[str, Any]:
        """One resource: state, spec and where it is written, last observation, open drift, the
        fields enforced and only observed, its runs, lease and suspension."""
        controller, store = self.controller, self.store
        in_force = controller.revision_in_force()
        where = self.placed().get(address)
        with store.reading():  # one transaction for the seven reads below
            state = controller.resource(address)
            if state is None or where is None or where.document is None or in_force is None:
                raise NotFound(f"no resource {address} in the revision in force")
            observation = store.get_observations([address]).get(address)
            suspension = store.suspensions([address]).get(address)
            drift = store.open_drift([address])
            actions = store.history(target=address, limit=20)
            leases = store.held_locks([address])
        document, path = where.document, where.path
        revision, commit, loaded = in_force
        enforced, observed = _enforcement(document, loaded, where.site)
        line = self._line(path, where.index)
        return {
            **state.as_json(),
            "file": path,
            "line": line,
            "fileUrl": _file_url(controller, commit, path, line),
            "revision": revision,
            "spec": document.model_dump(mode="json", by_alias=True, exclude_none=True),
            "enforced": enforced,
            "observedOnly": observed,
            "observation": (
                {
                    "state": observation.state,
                    "fields": observation.fields,
                    "reason": observation.reason,
                    "at": _stamp(observation.observed_at),
                }
                if observation is not None
                else None
            ),
            "drift": [
                {
                    "field": d.field,
                    "expected": d.expected,
                    "actual": d.actual,
                    "firstSeen": _stamp(d.first_seen),
                }
                for d in drift
            ],
            "actions": history_data(actions),
            "lease": [{"owner": h.owner, "run": h.run_id, "expires": _stamp(h.expires_at)} for h in leases],
            "suspension": (
                {
                    "operator": suspension.operator,
                    "reason": suspension.reason,
                    "since": _stamp(suspension.since),
                    "run": suspension.run_id,
                }
                if suspension is not None
                else None
            ),
        }

    def runs(self, limit: int) -> dict[str, Any]:
        return {"items": history_data(self.store.history(limit=limit))}

    def run(self, run_id: int) -> dict[str, Any]:
        found = self.store.get_run(run_id)
        if found is None:
            raise NotFound(f"no run {run_id}")
        return history_data([found])[0]

    # --- helpers -------------------------------------------------------------------------------

    def _cell(self, placed: Placed, states: Mapping[str, str]) -> dict[str, Any]:
        return {
            "address": placed.address,
            "kind": placed.kind,
            "state": states.get(placed.address, "unknown"),
        }

    def _revision(self) -> str | None:
        in_force = self.controller.revision_in_force()
        return in_force[0] if in_force is not None else None

    def _line(self, path: str, index: int) -> int:
        """The line where document `index` of `path` starts (1 when it cannot be told)."""
        in_force = self.controller.revision_in_force()
        if in_force is None:
            return 1
        starts = self._lines_of(in_force[0]).get(path, [])
        return starts[index] if index < len(starts) else 1

    def _lines_of(self, revision: str) -> dict[str, list[int]]:
        """Where each document of each spec file of `revision` starts, worked out once."""
        kept = self._lines
        if kept is not None and kept[0] == revision:
            return kept[1]
        with self._lines_lock:  # not the overview's lock: reading every file takes seconds
            kept = self._lines
            if kept is None or kept[0] != revision:
                read, files = self.controller.spec_files()
                if read is None:
                    return {}
                kept = (read, {p: _document_starts(text) for p, text in files.items()})
                self._lines = kept
            return kept[1]


def _unplaced(address: str) -> Placed:
    """Where a resource with a state but no spec in the revision in force (an orphan) sits."""
    kind = kind_named(address.partition("/")[0])
    return Placed(address, kind.name if kind else "", NOWHERE, NOWHERE, None, {}, "", 0)


def _document_starts(text: bytes) -> list[int]:
    """The first line of each YAML document of a file: after each `---`, skipping what only
    comments or separates."""
    starts: list[int] = []
    pending = True
    for number, raw in enumerate(text.decode(errors="replace").splitlines(), 1):
        line = raw.strip()
        if line == "---" or line.startswith("--- "):
            pending = True
            continue
        if line == "...":
            continue
        if pending and line and not line.startswith("#"):
            starts.append(number)
            pending = False
    return starts


def _enforcement(document: models.Document, loaded: LoadedRevision, site: str) -> tuple[list[str], list[str]]:
    """The fields of `policies.enforcement` that govern the resource: enforced, observed only."""
    if loaded.fleet is None:
        return [], []
    policies = loaded.fleet.spec.policies
    enforced: list[str] = []
    observed: list[str] = []
    for field in kind_of(document).policy_fields:
        (enforced if enforcement_mode(policies, field, site) == "enforce" else observed).append(field)
    return enforced, observed


def _file_url(controller: Controller, commit: str | None, path: str, line: int) -> str | None:
    """A link to the file at the revision on the forge, for a repository followed over HTTPS."""
    repo = controller.followed.repo
    if repo is None or commit is None or not repo.startswith("https://"):
        return None
    base = repo.removesuffix("/").removesuffix(".git")
    directory = controller.followed.directory
    inside = f"{directory.strip('/')}/{path}" if directory else path
    return f"{base}/blob/{commit}/{inside}#L{line}"


def _sum(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for each in counts:
        for state, n in each.items():
            total[state] = total.get(state, 0) + n
    return total


def _ordered(counts: Mapping[str, int]) -> dict[str, int]:
    """Counts in the order states are listed (known states first)."""
    known = {s: counts[s] for s in STATES if s in counts}
    return {**known, **{s: n for s, n in sorted(counts.items()) if s not in known}}
