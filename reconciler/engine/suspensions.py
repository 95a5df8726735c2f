"""Suspending and resuming resources, and which resources of a run are suspended.

A suspended resource is still observed, planned and checked for drift; nothing is ever applied
to it. It is suspended by a person (`fleet suspend`, or the controller's API, through
`suspend`/`resume` here: the state store keeps who, why and since when, and the audit trail a
run per command) or by its own spec (`fleet.dev/reconcile: disabled`). This module never
changes anything live; it resolves what the caller named against the repo and the store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from reconciler.errors import PermanentError, UsageError
from reconciler.kinds import kind_named, unknown_kind_hint
from reconciler.plan.model import Suspended
from reconciler.spec import models
from reconciler.spec.diagnostics import closest
from reconciler.spec.loader import LoadedRevision
from reconciler.spec.selector import parse_selector
from reconciler.state import StateStore, SuspensionChange


@dataclasses.dataclass(frozen=True)
class SuspensionResult:
    """What `suspend` or `resume` did, and which of its addresses their specs suspend anyway
    (address -> file: a resume does not lift the annotation)."""

    change: SuspensionChange
    annotated: Mapping[str, str]


class TargetSuspended(PermanentError):
    """An explicit run (the emergency reconcile) named resources that are suspended."""

    def __init__(self, suspended: Sequence[Suspended]) -> None:
        names = " ".join(s.address for s in suspended)
        by_store = " ".join(s.address for s in suspended if s.operator is not None)
        hints = []
        if by_store:
            hints.append(f"`fleet resume {by_store}` first")
        if len(by_store.split()) < len(suspended):
            hints.append("remove the annotation fleet.dev/reconcile: disabled from the spec first")
        super().__init__(
            "refusing to reconcile suspended resources; nothing was done: "
            + "; ".join(f"{s.address} is {s.describe()}" for s in suspended),
            hint=" and ".join(hints) or f"fleet resume {names}",
        )
        self.suspended = tuple(suspended)


def annotation_reason(path: str) -> str:
    return f"annotation {models.RECONCILE_ANNOTATION}: disabled in {path}"


def annotated(documents: Iterable[models.Document], paths: Mapping[str, str]) -> dict[str, Suspended]:
    """The documents whose spec suspends them, by address."""
    return {
        d.address: Suspended(d.address, annotation_reason(paths.get(d.address, "its spec")))
        for d in documents
        if d.reconcile_disabled
    }


def suspended_among(
    store: StateStore,
    addresses: Iterable[str],
    documents: Iterable[models.Document],
    paths: Mapping[str, str],
) -> tuple[Suspended, ...]:
    """Which of `addresses` are suspended now, by the store (who and why) or by their spec;
    the store's record wins where both say so."""
    wanted = set(addresses)
    found = annotated((d for d in documents if d.address in wanted), paths)
    for address, held in store.suspensions(sorted(wanted)).items():
        found[address] = Suspended(address, held.reason, held.operator, held.since)
    return tuple(found[a] for a in sorted(found))


def resolve(
    revision: LoadedRevision,
    store: StateStore,
    targets: Sequence[str],
    selector: str | None,
    kind: str | None,
    *,
    resuming: bool,
) -> list[str]:
    """The addresses a suspend or resume names: explicit addresses (each declared in the repo,
    or known to the store: an orphan fleet applied before, or for a resume a suspended address
    whose spec is gone), plus those a label selector (and kind) matches; a selector matching
    nothing is an error."""
    declared = {d.document.address: d.document for d in revision.documents if d.document.kind_name != "Fleet"}
    chosen: set[str] = set()
    if selector or kind:
        match = parse_selector(selector) if selector else None
        wanted_kind = kind_named(kind) if kind else None
        if kind and wanted_kind is None:
            raise UsageError(f"unknown kind {kind!r}", hint=unknown_kind_hint(kind))
        matched = [
            address
            for address, document in declared.items()
            if (match is None or match(document.metadata.labels))
            and (wanted_kind is None or document.kind_name == wanted_kind.name)
        ]
        if not matched:
            raise UsageError(
                f"no resource matches {'the selector ' + repr(selector) if selector else 'the kind'}"
                + (f" and kind {kind}" if selector and kind else ""),
                hint="check the labels with `fleet get --show-labels`",
            )
        chosen.update(matched)
    unknown = [t for t in targets if t not in declared]
    if unknown:
        known = set(store.get_applied(unknown))
        if resuming:
            known |= set(store.suspensions(unknown))
        missing = [t for t in unknown if t not in known]
        if missing:
            suggestion = closest(missing[0], declared)
            raise UsageError(
                f"no such resource: {', '.join(missing)}",
                hint=f"did you mean {suggestion}?"
                if suggestion
                else "addresses look like machine/NAME; `fleet get -o name` lists them",
            )
    chosen.update(targets)
    if not chosen:
        raise UsageError("name what to act on: addresses, or -l SELECTOR")
    return sorted(chosen)


def suspend(
    revision: LoadedRevision,
    store: StateStore,
    addresses: Sequence[str],
    operator: str,
    reason: str,
) -> SuspensionResult:
    change = store.suspend(addresses, operator, reason)
    return SuspensionResult(change, _annotated_paths(revision, addresses))


def resume(
    revision: LoadedRevision,
    store: StateStore,
    addresses: Sequence[str],
    operator: str,
    reason: str | None,
) -> SuspensionResult:
    change = store.resume(addresses, operator, reason)
    return SuspensionResult(change, _annotated_paths(revision, addresses))


def _annotated_paths(revision: LoadedRevision, addresses: Sequence[str]) -> dict[str, str]:
    wanted = set(addresses)
    return {
        d.document.address: d.path
        for d in revision.documents
        if d.document.address in wanted and d.document.reconcile_disabled
    }
