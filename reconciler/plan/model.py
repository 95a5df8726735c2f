"""The Plan value: what one reconcile pass found and what it would do, resource by resource.

A Plan is frozen and deterministic (entries sorted by address, then by the order they apply
in), so every renderer shows it unchanged and two runs over the same inputs are equal. It
never performs anything itself; its fingerprint lets a saved plan be refused when the
revision or the observations it was computed from no longer hold.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from providers.base import Action, Change, FieldChange, Observation, ObservationState
from reconciler.bounded import shorten
from reconciler.spec import models


class Finding(enum.StrEnum):
    """Why an entry is in the plan. Only `change` (and an orphan the policy acts on) is applied."""

    CHANGE = "change"  # the spec differs from live state; fleet will apply it
    OBSERVE_ONLY = "observe-only"  # differs, but the policy only observes that field
    DRIFT = "drift"  # live state moved away from what fleet last applied (out of band)
    ORPHANED = "orphaned"  # fleet applied it before and its spec is gone
    UNKNOWN = "unknown"  # could not be observed: never planned, never drift
    UNMANAGED = "unmanaged"  # exists live, but fleet did not make it: reported, never touched
    NOT_VERIFIABLE = "not-verifiable"  # config tasks check mode cannot evaluate: never "in sync"


FINDING_ORDER: tuple[Finding, ...] = tuple(Finding)

# Entries of one address are listed in the order they apply: a boot device is set before
# the power-on (or cycle) that should boot from it, and a stop comes before anything else.
ACTION_ORDER: tuple[Action, ...] = (
    Action.DELETE,
    Action.POWER_OFF,
    Action.CREATE,
    Action.REPLACE,
    Action.UPDATE,
    Action.BOOT_DEVICE,
    Action.POWER_CYCLE,
    Action.POWER_ON,
    Action.CONFIGURE,  # the operating system is configured once the machine runs
)

# Power, boot-device and configuration actions change a resource in place: they show as an update.
_IN_PLACE = frozenset(
    {Action.POWER_ON, Action.POWER_OFF, Action.POWER_CYCLE, Action.BOOT_DEVICE, Action.CONFIGURE}
)

_SUMMARY_PHRASES: tuple[tuple[str, str], ...] = (
    ("create", "to create"),
    ("update", "to update"),
    ("replace", "to replace"),
    ("delete", "to delete"),
    ("power-on", "to power on"),
    ("power-off", "to power off"),
    ("power-cycle", "to power cycle"),
    ("boot-device", "to set boot device"),
    ("configure", "to configure"),
    ("observe-only", "observe-only"),
    ("drift", "drifted"),
    ("orphaned", "orphaned"),
    ("unknown", "unknown"),
    ("unmanaged", "unmanaged"),
    ("not-verifiable", "not verifiable"),
)
SUMMARY_KEYS: tuple[str, ...] = tuple(key for key, _ in _SUMMARY_PHRASES)

_BARE_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]*$")


def action_name(action: Action) -> str:
    """The action as a word ("create", "power-on"), which JSON and summaries use."""
    return action.name.lower().replace("_", "-")


def action_from_name(name: str) -> Action:
    for action in Action:
        if action_name(action) == name:
            return action
    raise ValueError(f"{name!r} is not a plan action ({', '.join(action_name(a) for a in Action)})")


def action_symbol(action: Action) -> str:
    """Terraform's symbol for the action: `+`, `~`, `-` or `-/+`."""
    return Action.UPDATE.value if action in _IN_PLACE else action.value


def spec_hash(document: models.Document) -> str:
    """sha256 of a document's canonical JSON: whether the spec changed since it was applied."""
    body = json.dumps(document.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class FieldDiff:
    """One field's two values. For a change: live (before) and desired (after); for drift:
    what fleet last applied (before) and what is live now (after). Values are JSON values."""

    field: str
    before: Any
    after: Any


@dataclasses.dataclass(frozen=True, slots=True)
class PlanEntry:
    """One finding about one resource, and the action it leads to (None: nothing is done)."""

    address: str
    kind: str
    finding: Finding
    action: Action | None = None
    fields: tuple[FieldDiff, ...] = ()
    reason: str = ""  # a short stable code: an unknown reason, the policy that decided
    detail: str = ""  # for people; not part of the fingerprint
    depends_on: tuple[str, ...] = ()  # planned addresses that must be done first
    first_seen: datetime | None = None  # drift only: when it was first noticed

    def __post_init__(self) -> None:
        object.__setattr__(self, "depends_on", tuple(sorted(set(self.depends_on))))
        if self.first_seen is not None:
            object.__setattr__(self, "first_seen", _utc(self.first_seen))

    @property
    def symbol(self) -> str:
        return action_symbol(self.action) if self.action is not None else ""

    def sort_key(self) -> tuple[Any, ...]:
        return (
            self.address,
            FINDING_ORDER.index(self.finding),
            ACTION_ORDER.index(self.action) + 1 if self.action is not None else 0,
            tuple(f.field for f in self.fields),
            self.reason,
        )

    def change(self, desired: models.Document | None) -> Change:
        """The provider's Change for this entry; only entries with an action have one
        (an orphan's has no desired document)."""
        if self.action is None:
            raise ValueError(f"{self.address}: a {self.finding} entry with no action is never applied")
        return Change(
            self.address,
            self.action,
            desired,
            tuple(FieldChange(f.field, f.before, f.after) for f in self.fields),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ObservedState:
    """The part of an observation a plan rests on: its state and the fields fleet manages.

    Timestamps, unknown reasons and informational fields (inventory) are left out, so
    observing again and seeing the same thing yields the same plan fingerprint.
    """

    address: str
    state: ObservationState
    fields: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, observation: Observation, managed: Iterable[str]) -> ObservedState:
        kept = sorted((name, observation.fields[name]) for name in managed if name in observation.fields)
        return cls(observation.address, observation.state, tuple(kept))


@dataclasses.dataclass(frozen=True, slots=True)
class Suspended:
    """A resource fleet must not act on: it is observed, planned and its drift reported, but none
    of its changes is applied. Suspended by a person (`fleet suspend`: `operator` and `since`)
    or by its spec's annotation `fleet.dev/reconcile: disabled` (`operator` None)."""

    address: str
    reason: str
    operator: str | None = None
    since: datetime | None = None

    def __post_init__(self) -> None:
        if self.since is not None:
            object.__setattr__(self, "since", _utc(self.since))

    def describe(self) -> str:
        """`suspended by alice since 2026-01-20T10:00:00Z: PSU swap`, or `suspended: annotation ...`."""
        if self.operator is None:
            return f"suspended: {shorten(self.reason)}"
        since = f" since {format_time(self.since)}" if self.since is not None else ""
        return f"suspended by {shorten(self.operator)}{since}: {shorten(self.reason)}"


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """Every entry of one pass over one revision, sorted; see the module docstring.

    `waves` is the order changes apply in (addresses, dependencies first), as computed by
    `reconciler.plan.graph`; empty when nothing is planned. `suspended` are the resources of the
    plan fleet must not act on: their changes, and those that wait for them, are `held()`.
    """

    revision: str
    created_at: datetime
    entries: tuple[PlanEntry, ...] = ()
    observed: tuple[ObservedState, ...] = ()
    waves: tuple[tuple[str, ...], ...] = ()
    suspended: tuple[Suspended, ...] = ()

    def __post_init__(self) -> None:
        # Sorting here, not in each producer, is what makes a Plan deterministic by construction.
        object.__setattr__(self, "created_at", _utc(self.created_at))
        object.__setattr__(self, "entries", tuple(sorted(self.entries, key=PlanEntry.sort_key)))
        object.__setattr__(self, "observed", tuple(sorted(self.observed, key=lambda o: o.address)))
        object.__setattr__(self, "waves", tuple(tuple(sorted(wave)) for wave in self.waves))
        by_address = {s.address: s for s in self.suspended}
        object.__setattr__(self, "suspended", tuple(by_address[a] for a in sorted(by_address)))

    def changes(self) -> tuple[PlanEntry, ...]:
        """The entries fleet would apply: those with an action."""
        return tuple(e for e in self.entries if e.action is not None)

    @property
    def has_changes(self) -> bool:
        return any(e.action is not None for e in self.entries)

    def held(self) -> dict[str, str]:
        """The planned addresses none of whose changes is applied, each with why: the resource
        is suspended, or it waits (through the dependency graph) for one whose changes are held."""
        suspended = {s.address: s for s in self.suspended}
        waits: dict[str, set[str]] = {}
        for entry in self.changes():
            waits.setdefault(entry.address, set()).update(entry.depends_on)
        held = {a: f"skipped: {suspended[a].describe()}" for a in sorted(waits) if a in suspended}
        grew = bool(held)
        while grew:  # a dependency chain holds everything after its suspended link
            grew = False
            for address in sorted(waits):
                blocking = sorted(d for d in waits[address] if d in held)
                if address in held or not blocking:
                    continue
                held[address] = "skipped: waits for " + ", ".join(
                    f"{shorten(d)} ({'suspended' if d in suspended else 'held back'})" for d in blocking
                )
                grew = True
        return dict(sorted(held.items()))

    def without_held(self) -> Plan:
        """The plan as it may be applied: the held changes left out (see `held`)."""
        held = self.held()
        if not held:
            return self
        return dataclasses.replace(
            self,
            entries=tuple(e for e in self.entries if e.action is None or e.address not in held),
            waves=tuple(w for w in (tuple(a for a in wave if a not in held) for wave in self.waves) if w),
        )

    def with_finding(self, finding: Finding) -> tuple[PlanEntry, ...]:
        return tuple(e for e in self.entries if e.finding is finding)

    def summary(self) -> dict[str, int]:
        """Counts under stable keys (`SUMMARY_KEYS`, zeros included).

        Actions count entries (a machine both powered on and given a boot device counts
        in both); findings without an action count resources, so a machine with two
        drifted fields is one drifted resource.
        """
        counts: Counter[str] = Counter(action_name(e.action) for e in self.entries if e.action is not None)
        for finding in (
            Finding.OBSERVE_ONLY,
            Finding.DRIFT,
            Finding.ORPHANED,
            Finding.UNKNOWN,
            Finding.NOT_VERIFIABLE,
        ):
            counts[finding.value] = len({e.address for e in self.with_finding(finding)})
        # Unmanaged domains are counted one by one: hypervisors may each have one of a name.
        counts[Finding.UNMANAGED.value] = len(self.with_finding(Finding.UNMANAGED))
        return {key: counts[key] for key in SUMMARY_KEYS}

    @property
    def complete(self) -> bool:
        """Whether every resource it covers was observed: only then is "no changes" a verdict."""
        return not self.with_finding(Finding.UNKNOWN)

    def resources(self) -> int:
        """How many resources the plan covers (observed or not)."""
        return len({e.address for e in self.entries} | {o.address for o in self.observed})

    def unknown_reasons(self) -> dict[str, int]:
        """Resources that could not be observed, by reason (a resource counts once per reason)."""
        reasons = Counter(
            reason or "unknown"
            for _, reason in {(e.address, e.reason) for e in self.with_finding(Finding.UNKNOWN)}
        )
        return dict(sorted(reasons.items()))

    def completeness(self) -> str:
        """`all 40 resources observed`, or
        `incomplete: 2 of 40 resources not observed (1 timeout, 1 unreachable)`."""
        total = self.resources()
        unknown = len({e.address for e in self.with_finding(Finding.UNKNOWN)})
        if not unknown:
            return f"all {total} resource{'' if total == 1 else 's'} observed"
        reasons = ", ".join(f"{count} {shorten(reason)}" for reason, count in self.unknown_reasons().items())
        return (
            f"incomplete: {unknown} of {total} resource{'' if total == 1 else 's'} not observed ({reasons})"
        )

    def summary_line(self) -> str:
        """E.g. `Plan: 3 to power on, 1 to set boot device, 1 drifted.`; a plan that could not see
        everything says so first: `Plan: incomplete: 2 of 40 resources not observed (2 timeout);
        no changes among the rest.`"""
        counts = self.summary()
        parts = [
            f"{counts[key]} {phrase}" for key, phrase in _SUMMARY_PHRASES if counts[key] and key != "unknown"
        ]
        if self.complete:
            if not self.has_changes:
                parts.insert(0, "no changes")
            return f"Plan: {', '.join(parts)}{self._held_phrase()}."
        if not self.has_changes:
            parts.insert(0, "no changes among the rest")
        return f"Plan: {self.completeness()}; {', '.join(parts)}{self._held_phrase()}."

    def _held_phrase(self) -> str:
        """`; 2 skipped (suspended)`: how many planned changes will not be applied."""
        held = self.held()
        count = sum(1 for e in self.changes() if e.address in held)
        return f"; {count} skipped (suspended)" if count else ""

    def fingerprint(self) -> str:
        """sha256 of the revision, the entries and the observed state, as canonical JSON.

        Creation time, details and first-seen times are left out: they do not change what
        the plan would do, so re-planning an unchanged world gives the same fingerprint. Which
        resources are suspended is in it (not who or why): a suspension made after a plan was
        saved makes the saved plan stale.
        """
        body = {
            "revision": self.revision,
            "entries": [
                {
                    "address": e.address,
                    "kind": e.kind,
                    "finding": e.finding.value,
                    "action": action_name(e.action) if e.action is not None else None,
                    "fields": [[f.field, f.before, f.after] for f in e.fields],
                    "reason": e.reason,
                    "dependsOn": list(e.depends_on),
                }
                for e in self.entries
            ],
            "observed": [
                [o.address, o.state.value, [list(pair) for pair in o.fields]] for o in self.observed
            ],
        }
        if self.suspended:  # a plan that holds nothing back keeps the fingerprint it always had
            body["suspended"] = [s.address for s in self.suspended]
        return "sha256:" + hashlib.sha256(canonical_json(body).encode()).hexdigest()


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, no NaN; enums and datetimes as text."""
    return json.dumps(
        _plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def format_time(moment: datetime) -> str:
    return _utc(moment).isoformat().replace("+00:00", "Z")


def format_value(value: Any) -> str:
    """A field value as people read it in every renderer: plain words bare, the rest as JSON;
    shortened when long (see `reconciler.bounded`)."""
    if isinstance(value, str) and _BARE_WORD.match(value) and not _reads_as_json(value):
        return shorten(value)
    return shorten(canonical_json(value))


def _reads_as_json(word: str) -> bool:
    # The string "true" shown bare would read as the boolean; such words keep their quotes.
    try:
        json.loads(word)
    except ValueError:
        return False
    return True


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone; plans hold aware UTC times only")
    return moment.astimezone(UTC)
