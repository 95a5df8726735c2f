"""What Clusters and SparkPools share: the objects and Node settings a spec renders, against
what the API server says a forced server-side apply would change.

The provider reports, per address, every object it renders (in sync, differing with the
paths, or missing), the fields other managers own that fleet would take over, and the
member Nodes. Fleet's inventory of what it applied per address (the `objects` keys in
the state store's applied record) is the only source of pruning: an object is pruned
because fleet applied it and the spec no longer renders it, never because a selector
matched. When the spec is unchanged since fleet applied it, a difference is drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from providers.base import Action, Observation, ObservationState, Observed
from reconciler.kinds.base import Adoption, DiffInputs, Inexpressible, Kind, SpecChange
from reconciler.plan.findings import KindDiff, index_observations, unknown_entry
from reconciler.plan.model import FieldDiff, Finding, ObservedState, PlanEntry, spec_hash
from reconciler.spec import models
from reconciler.spec.diagnostics import YamlPath
from reconciler.spec.edit import REMOVE
from reconciler.spec.quantity import QuantityError, quantity_value

KUBE_FIELDS: tuple[str, ...] = ("cluster", "objects", "nodes")
"""The observed fields a plan rests on (and fingerprints)."""


def object_keys(fields: Mapping[str, Any]) -> list[str]:
    return sorted(str(o["key"]) for o in fields.get("objects", ()))


def diff_kubernetes(
    kind: str,
    documents: Sequence[models.Cluster | models.SparkPool],
    observations: Iterable[Observation],
    applied: Mapping[str, tuple[str, Mapping[str, Any]]],
    policies: models.Policies,
    *,
    whole_fleet: bool,
    drift_first_seen: Mapping[tuple[str, str], datetime] | None = None,
) -> KindDiff:
    """`applied` maps an address of `kind` to (spec hash, fields) of what fleet last applied there."""
    by_address = index_observations(observations)
    first_seen = drift_first_seen or {}
    entries: list[PlanEntry] = []
    observed: list[ObservedState] = []
    for document in documents:
        observation = by_address.get(document.address)
        if observation is not None:
            observed.append(ObservedState.of(observation, KUBE_FIELDS))
        if observation is None or observation.state is ObservationState.UNKNOWN:
            entries.append(unknown_entry(document.address, kind, observation))
            continue
        last = applied.get(document.address)
        entries.extend(_entries(document, observation, last, first_seen))
    desired = {d.address for d in documents}
    if whole_fleet:
        for address, (_, fields) in sorted(applied.items()):
            if address not in desired:
                entries.append(_orphan_entry(address, kind, fields, policies.orphans))
    return KindDiff(tuple(entries), tuple(observed))


def _entries(
    document: models.Cluster | models.SparkPool,
    observation: Observation,
    last: tuple[str, Mapping[str, Any]] | None,
    first_seen: Mapping[tuple[str, str], datetime],
) -> list[PlanEntry]:
    live = observation.fields
    keys = object_keys(live)
    inventory = sorted(str(k) for k in (last[1].get("objects", ()) if last else ()))
    unsynced = [o for o in live.get("objects", ()) if o.get("state") != "in-sync"]
    nodes = [n for n in live.get("nodes", ()) if not n.get("inSync", True)]
    prune = sorted(set(inventory) - set(keys))
    fields: list[FieldDiff] = []
    if last is None or inventory != keys:
        fields.append(FieldDiff("objects", inventory if last is not None else None, keys))
    old_cluster = last[1].get("cluster") if last else None
    if old_cluster is not None and old_cluster != live.get("cluster"):
        fields.append(FieldDiff("cluster", old_cluster, live.get("cluster")))
    for obj in unsynced:
        fields.extend(_object_diffs(obj))
    for node in nodes:
        fields.append(FieldDiff(f"node/{node.get('name')}", _node_state(node), "as specified"))
    if prune:
        fields.append(FieldDiff("prune", prune, None))
    if not unsynced and not nodes and not prune and last is not None and inventory == keys:
        return []
    entries: list[PlanEntry] = []
    drifted = last is not None and last[0] == spec_hash(document)
    if drifted and (unsynced or nodes):
        # Unchanged spec, changed cluster: someone edited, deleted or re-tainted behind fleet's back.
        for diff in fields:
            if diff.field in ("objects", "cluster", "prune"):
                continue
            entries.append(
                PlanEntry(
                    document.address,
                    document.kind_name,
                    Finding.DRIFT,
                    fields=(FieldDiff(diff.field, diff.after, diff.before),),
                    reason="out-of-band",
                    detail="changed in the cluster since fleet applied it",
                    first_seen=first_seen.get((document.address, diff.field), observation.observed_at),
                )
            )
    action = Action.CREATE if observation.state is ObservationState.ABSENT and last is None else Action.UPDATE
    conflicts = live.get("conflicts", ())
    detail = ""
    if conflicts:
        taken = ", ".join(sorted({f"{c.get('path')} from {c.get('manager')}" for c in conflicts}))
        detail = f"takes over fields other managers own (server-side apply, force): {taken}"
    entries.append(
        PlanEntry(
            document.address,
            document.kind_name,
            Finding.CHANGE,
            action,
            tuple(fields),
            reason="conflicts" if conflicts else "",
            detail=detail,
        )
    )
    return entries


def _object_diffs(obj: Mapping[str, Any]) -> list[FieldDiff]:
    key = str(obj.get("key"))
    if obj.get("state") == "missing":
        return [FieldDiff(key, None, "present")]
    if obj.get("error"):
        return [FieldDiff(key, "refused", str(obj["error"]))]
    diffs = [
        FieldDiff(f"{key} {d.get('path')}", d.get("live"), d.get("desired")) for d in obj.get("diff", ())
    ]
    return diffs or [FieldDiff(key, "differs", "as rendered")]


def _node_state(node: Mapping[str, Any]) -> Any:
    if not node.get("present", True):
        return "no such Node"
    shown = ("labels", "missingTaints", "staleTaints", "staleLabels", "unschedulable")
    return {name: node[name] for name in shown if node.get(name) not in (None, [], {})}


def _orphan_entry(address: str, kind: str, fields: Mapping[str, Any], policy: str) -> PlanEntry:
    keys = sorted(str(k) for k in fields.get("objects", ()))
    detail = f"its spec was removed; the orphans policy is {policy}"
    action = None
    diffs: tuple[FieldDiff, ...] = ()
    if policy == "delete" and keys:
        action = Action.DELETE
        diffs = (FieldDiff("cluster", fields.get("cluster"), None), FieldDiff("prune", keys, None))
        detail += f"; fleet deletes the {len(keys)} objects it applied there"
    elif policy == "powerOff":
        detail += ", which does not apply to Kubernetes objects: they are left as they are"
    return PlanEntry(
        address, kind, Finding.ORPHANED, action, diffs, reason=f"orphans={policy}", detail=detail
    )


def converged_kube_fields(live: Mapping[str, Any]) -> dict[str, Any]:
    """An address whose objects and Nodes are all as rendered: its inventory, as applied."""
    if any(o.get("state") != "in-sync" for o in live.get("objects", ())):
        return {}
    if any(not n.get("inSync", True) for n in live.get("nodes", ())):
        return {}
    return {"cluster": live.get("cluster"), "objects": object_keys(live)}


def applied_kube_fields(document: models.Document, entry: PlanEntry) -> dict[str, Any]:
    """What an applied Cluster or SparkPool entry leaves in the inventory."""
    cluster = document.spec.cluster if isinstance(document, models.SparkPool) else document.metadata.name
    applied: dict[str, Any] = {"cluster": cluster}
    for diff in entry.fields:
        if diff.field == "objects":
            applied["objects"] = list(diff.after)
    return applied


# --- adopting drift ------------------------------------------------------------------------

_INVENTORY_FIELDS = frozenset({"objects", "cluster", "prune"})


def spec_object_key(obj: Mapping[str, Any]) -> str:
    """`{apiVersion}/{kind}/{namespace or '_'}/{name}` of an object written in a spec: the key the
    provider's inventory and plan fields name it by."""
    meta = obj.get("metadata") or {}
    return f"{obj.get('apiVersion')}/{obj.get('kind')}/{meta.get('namespace') or '_'}/{meta.get('name')}"


def split_object_key(key: str) -> tuple[str, str, str, str] | None:
    """(apiVersion, kind, namespace or '_', name) of an object key, or None."""
    parts = key.split("/")
    if len(parts) not in (4, 5) or not all(parts):
        return None
    *version, kind, namespace, name = parts
    return "/".join(version), kind, namespace, name


def resource_change(at: YamlPath, written: Mapping[str, str], resource: str, live: Any) -> Adoption:
    """Adopt one resource of a resource list (quota, queue, limits) at `at`: its live quantity,
    or its removal when it is gone live."""
    what = f"{at[-1]} {resource}"
    if live is None:
        if resource in written:
            return SpecChange((*at, resource), REMOVE, what=what)
        return Inexpressible(f"{resource} is set neither live nor in the spec", what=what)
    if isinstance(live, bool) or not isinstance(live, str | int):
        return Inexpressible(f"the live value {live!r} is not a quantity", what=what)
    try:
        quantity_value(str(live))
    except QuantityError:
        return Inexpressible(f"the live value {live!r} is not a quantity", what=what)
    return SpecChange((*at, resource), live, quantity=True, what=what)


def _whole_object(key: str, live: Any) -> Inexpressible:
    if live is None:
        return Inexpressible(
            f"{key} was deleted from the cluster; to adopt that, remove what renders it from the spec by hand"
        )
    return Inexpressible(f"{key} differs in a way the plan does not name field by field; compare it by hand")


class KubernetesKind(Kind):
    """A kind whose resources are objects fleet applies to a Kubernetes cluster."""

    def adopt(self, document: models.Document, field: str, live: Any) -> list[Adoption]:
        """Node fields (`node/NAME`) and object fields (`KEY PATH`, as the plan names them)."""
        if field in _INVENTORY_FIELDS:
            return [Inexpressible(f"{field!r} is fleet's inventory of what it applied, not a spec field")]
        if field.startswith("node/"):
            node = field.removeprefix("node/")
            if not isinstance(live, Mapping):
                return [
                    Inexpressible(
                        f"Node {node} is gone from the cluster; to adopt that,"
                        " remove it from the spec by hand"
                    )
                ]
            return self.adopt_node(document, node, live)
        key, _, path = field.partition(" ")
        parsed = split_object_key(key)
        if parsed is None:
            return [Inexpressible(f"{field!r} names no object fleet applies")]
        if not path:
            return [_whole_object(key, live)]
        if parsed[:2] == ("v1", "Secret"):
            return [Inexpressible(f"{key} is a Secret: its data is never written into the fleet repo")]
        return self.adopt_object(document, key, path, live)

    def adopt_node(self, document: models.Document, node: str, live: Mapping[str, Any]) -> list[Adoption]:
        """What the Node's drift (labels, missing and stale taints, cordon) adopts."""
        return [Inexpressible(f"{self.name} sets nothing on Nodes")]

    def adopt_object(self, document: models.Document, key: str, path: str, live: Any) -> list[Adoption]:
        """What the drift of one leaf (`path`, dotted) of an applied object adopts."""
        return [Inexpressible(f"{path} of {key} is rendered by fleet, not written in the spec")]

    def diff(self, documents: Sequence[models.Document], observed: Observed, inputs: DiffInputs) -> KindDiff:
        return diff_kubernetes(
            self.name,
            [d for d in documents if isinstance(d, models.Cluster | models.SparkPool)],
            observed.observations,
            {
                address: (record.spec_hash, record.fields)
                for address, record in inputs.applied_of(self.name).items()
            },
            inputs.policies,
            whole_fleet=inputs.whole_fleet,
            drift_first_seen=inputs.first_seen,
        )

    def applied_fields(self, document: models.Document, entry: PlanEntry | None) -> dict[str, Any]:
        return applied_kube_fields(document, entry) if entry is not None else {}

    def converged_fields(
        self, document: models.Document, live: Mapping[str, Any], inputs: DiffInputs
    ) -> dict[str, Any]:
        return converged_kube_fields(live)

    def observed_detail(self, fields: Mapping[str, Any]) -> str:
        if "objects" not in fields:
            return ""
        objects = list(fields["objects"])
        synced = sum(1 for o in objects if o.get("state") == "in-sync")
        nodes = [n for n in fields.get("nodes", ()) if not n.get("inSync", True)]
        return f"{synced}/{len(objects)} objects in sync" + (f", {len(nodes)} nodes not" if nodes else "")
