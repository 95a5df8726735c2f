"""Clusters: Kubernetes clusters, their member nodes (labels and taints) and the cluster-wide
objects fleet owns. A Cluster waits for its member Machines and VirtualMachines.

Drift a spec edit adopts: a member Node's label values (`spec.members[i].labels`), a cordon fleet
set that someone lifted (`spec.members[i].cordon`), and scalar fields of objects written in
`spec.objects`. Taints, and objects fleet renders (YuniKorn's queues), are left to people."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.kinds.base import Adoption, Inexpressible, SpecChange
from reconciler.kinds.kubernetes import KubernetesKind, spec_object_key
from reconciler.spec import models
from reconciler.spec.edit import REMOVE

_SCALARS = (str, int, float, bool)


def dotted_path(obj: Mapping[str, Any], path: str) -> list[str] | None:
    """The keys of `obj` a dotted plan path (`metadata.labels.pod-security.kubernetes.io/enforce`)
    names, matching the longest key first since keys may hold dots; None when it is not written."""
    parts: list[str] = []
    node: Any = obj
    rest = path
    while rest:
        if not isinstance(node, Mapping):
            return None
        keys = sorted((k for k in node if isinstance(k, str)), key=len, reverse=True)
        match = next((k for k in keys if rest == k or rest.startswith(k + ".")), None)
        if match is None:
            return None
        parts.append(match)
        node = node[match]
        rest = rest[len(match) + 1 :]
    return parts


class ClusterKind(KubernetesKind):
    name = "Cluster"
    short_names = ("cl",)
    model = models.Cluster
    provider = "Cluster"
    policy_fields = ("cluster",)

    def references(self, document: models.Document) -> Iterable[str]:
        assert isinstance(document, models.Cluster)
        return [member.ref for member in document.spec.members]

    def where(self, document: models.Document) -> str:
        assert isinstance(document, models.Cluster)
        return f"{len(document.spec.members)} members"

    def what(self, document: models.Document) -> str:
        assert isinstance(document, models.Cluster)
        return f"{document.spec.apiServer} ({document.spec.scheduler})"

    def adopt_node(self, document: models.Document, node: str, live: Mapping[str, Any]) -> list[Adoption]:
        assert isinstance(document, models.Cluster)
        index = next(
            (i for i, m in enumerate(document.spec.members) if m.ref.partition("/")[2] == node), None
        )
        if index is None:
            return [
                Inexpressible(
                    f"no member is named {node} (its Node was found by the hostname label);"
                    " edit the member by hand"
                )
            ]
        member = document.spec.members[index]
        at = ("spec", "members", index)
        out: list[Adoption] = []
        labels = live.get("labels") or {}
        for key in sorted(labels):
            value = labels[key]
            if key in member.labels and member.labels[key] != value:
                change = REMOVE if value is None else value
                out.append(SpecChange((*at, "labels", key), change, what=f"label {key}"))
        for taint in live.get("missingTaints") or ():
            out.append(
                Inexpressible(
                    f"taint {taint} is missing on Node {node}: the drift report cannot tell a removed taint"
                    f" from a changed value; edit spec.members[{index}].taints by hand",
                    what=f"taint {taint}",
                )
            )
        for taint in live.get("staleTaints") or ():
            out.append(
                Inexpressible(
                    f"taint {taint} on Node {node} was set by fleet and no spec wants it now; the next apply"
                    " removes it, so there is nothing to adopt",
                    what=f"taint {taint}",
                )
            )
        for key in live.get("staleLabels") or ():
            out.append(
                Inexpressible(
                    f"label {key} on Node {node} was applied by fleet and no spec names it now; the next"
                    " apply removes it, so there is nothing to adopt",
                    what=f"label {key}",
                )
            )
        if member.cordon and not live.get("unschedulable"):
            out.append(SpecChange((*at, "cordon"), False, what="cordon"))
        if not out:
            out.append(
                Inexpressible(f"Node {node} differs from the spec in a way the drift report does not name")
            )
        return out

    def adopt_object(self, document: models.Document, key: str, path: str, live: Any) -> list[Adoption]:
        assert isinstance(document, models.Cluster)
        objects = document.spec.objects
        index = next((i for i, obj in enumerate(objects) if spec_object_key(obj) == key), None)
        if index is None:
            return [
                Inexpressible(
                    f"{key} is rendered by fleet (YuniKorn's queues come from the SparkPools), not written"
                    " in spec.objects; adopt it in the SparkPools by hand"
                )
            ]
        parts = dotted_path(objects[index], path)
        if parts is None:
            return [
                Inexpressible(
                    f"{path} of {key} is not written in spec.objects[{index}]"
                    " (fleet or the API server sets it)"
                )
            ]
        old: Any = objects[index]
        for part in parts:
            old = old[part]
        if not isinstance(old, _SCALARS) or (live is not None and not isinstance(live, _SCALARS)):
            return [
                Inexpressible(
                    f"{path} of {key} is a list or mapping; edit spec.objects[{index}] by hand",
                    what=path,
                )
            ]
        return [SpecChange(("spec", "objects", index, *parts), REMOVE if live is None else live, what=path)]


KIND = ClusterKind()
