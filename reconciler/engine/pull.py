"""A pull request's plan (`PullRequestPlan`): what merging its head revision would do to live
resources.

The head revision goes through the same gate as every run. When it is valid, the resources the
pull request changes (the documents that differ between base and head, those whose Ansible
configuration reads a changed file, and everything depending on them; the whole fleet when
`fleet.yaml` changed or a document was removed) are planned against live state, with the drift
and the unknowns found on them. Nothing is applied and nothing is recorded as a run.

The status of a pull request fails when its specs are invalid, when the plan is over the blast
radius, or when a resource it changes could not be observed. Unknowns elsewhere never fail it:
at 100,000 servers some BMC is always down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from reconciler.apply.guards import BlastRadiusExceeded
from reconciler.engine.changes import affected, without_directory
from reconciler.engine.pipeline import Engine, Selection
from reconciler.engine.untrusted import UntrustedSource
from reconciler.errors import FleetError
from reconciler.kinds import kind_of
from reconciler.plan.pull import PullRequestPlan
from reconciler.source import SourceRef
from reconciler.source.git import changed_paths
from reconciler.spec import models
from reconciler.spec.loader import LoadedRevision


def plan_pull_request(
    engine: Engine,
    location: str,
    base: str,
    head: str,
    *,
    directory: str | None = None,
    trusted: bool = False,
) -> PullRequestPlan:
    """Plan the head of a pull request of the fleet repo at `location` (a path or URL; the fleet
    repo in `directory` of it) whose base is `base`. Unless `trusted`, no code of the pull request
    runs: Ansible reads only the base revision's files, and variables it changed are passed as
    unsafe text (`reconciler.engine.untrusted`). Raises FleetError when a revision cannot be read;
    an invalid head is a result, with its errors."""
    cache = engine.settings.cache_dir
    changed = tuple(sorted(without_directory(changed_paths(location, base, head, cache), directory)))
    base_ref = SourceRef(None, location, base, directory)
    head_ref = SourceRef(None, location, head, directory)
    head_revision = engine.load(engine.open_source(head_ref))
    if head_revision.errors or head_revision.fleet is None:
        return PullRequestPlan(base, head, changed, tuple(head_revision.errors))
    base_revision = engine.load(engine.open_source(base_ref))
    if base_revision.errors or base_revision.fleet is None:
        targets = None  # the base cannot say what changed: every resource
    else:
        targets = affected(base_revision, head_revision, set(changed))
    documents = {
        d.document.address: d.document for d in head_revision.documents if d.document.kind_name != "Fleet"
    }
    touched = tuple(sorted(documents if targets is None else targets))
    machines = {d.metadata.name: d for d in documents.values() if isinstance(d, models.Machine)}
    sites = {a: kind_of(documents[a]).site(documents[a], machines) or "-" for a in touched if a in documents}
    result = PullRequestPlan(base, head, changed, touched=touched, whole_fleet=targets is None, sites=sites)
    if not touched:
        return result
    store = engine.store
    drift_known = bool(store.applied_addresses())
    deferred: dict[str, str] = {}
    if not trusted:
        deferred = _new_reach(base_revision, head_revision, touched)
        if deferred:
            touched_now = tuple(a for a in touched if a not in deferred)
            result = dataclasses.replace(result, deferred=deferred)
            if not touched_now:
                return dataclasses.replace(result, drift_known=drift_known)
            targets = set(touched_now)
    selection = Selection() if targets is None else Selection(targets=tuple(sorted(targets)))
    try:
        untrusted = None if trusted else UntrustedSource(base_ref)
        with engine.plan(head_ref, selection, untrusted=untrusted) as planned:
            plan = planned.plan
            notes = planned.untrusted.notes() if planned.untrusted is not None else ()
            try:
                engine.check_blast_radius(planned)
                over = None
            except BlastRadiusExceeded as exc:
                over = exc.message
    except FleetError as exc:
        return dataclasses.replace(result, problem=str(exc), drift_known=drift_known)
    return dataclasses.replace(
        result,
        plan=plan,
        blast_radius=over,
        observed_at=plan.created_at,
        drift_known=drift_known,
        notes=tuple(notes),
    )


_UNTRUSTED_REACH = (
    "observed once the pull request is trusted: it changes where fleet connects or which credentials it sends"
)


def _reach(document: models.Document) -> object:
    """What fleet connects to for a document, and with which credentials."""
    spec = getattr(document, "spec", None)
    if isinstance(document, models.Machine):
        return (document.spec.address, document.spec.bmc, document.spec.hypervisor)
    if isinstance(document, models.Cluster):
        return (document.spec.apiServer, document.spec.credentialsRef)
    if isinstance(document, models.VirtualMachine):
        return (document.spec.host, document.spec.address)
    return getattr(spec, "cluster", None)


def _new_reach(base: LoadedRevision, head: LoadedRevision, touched: Sequence[str]) -> dict[str, str]:
    """The touched resources an untrusted pull request would make fleet reach with its
    credentials somewhere the base revision does not: a new resource, a changed endpoint or
    credentials reference, or one reached through such a resource (a VM on a host whose libvirt
    access changed). Every one when the Fleet's credentials or providers changed. Observing them
    would send fleet's credentials where the pull request's author says."""
    if base.fleet is None or head.fleet is None:
        return dict.fromkeys(touched, _UNTRUSTED_REACH)
    fleet_reach = ("credentials", "credentialsCluster", "providers")
    if any(getattr(base.fleet.spec, f) != getattr(head.fleet.spec, f) for f in fleet_reach):
        return dict.fromkeys(
            touched,
            "observed once the pull request is trusted: it changes fleet.yaml's credentials or providers",
        )
    before = {d.document.address: d.document for d in base.documents}
    after = {d.document.address: d.document for d in head.documents}
    moved = {
        address
        for address, document in after.items()
        if document.kind_name != "Fleet"
        and (address not in before or _reach(before[address]) != _reach(document))
    }
    found: dict[str, str] = {}
    for address in touched:
        document = after.get(address)
        if document is None:
            continue
        reached = {address, *kind_of(document).references(document)}
        if reached & moved:
            found[address] = _UNTRUSTED_REACH
    return found
