"""Clusters: Kubernetes clusters, their member nodes (labels and taints) and the cluster-wide
objects fleet owns. A Cluster waits for its member Machines and VirtualMachines."""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.kinds.kubernetes import KubernetesKind
from reconciler.spec import models


class ClusterKind(KubernetesKind):
    name = "Cluster"
    short_names = ("cl",)
    model = models.Cluster
    provider = "Cluster"

    def references(self, document: models.Document) -> Iterable[str]:
        assert isinstance(document, models.Cluster)
        return [member.ref for member in document.spec.members]

    def where(self, document: models.Document) -> str:
        assert isinstance(document, models.Cluster)
        return f"{len(document.spec.members)} members"

    def what(self, document: models.Document) -> str:
        assert isinstance(document, models.Cluster)
        return f"{document.spec.apiServer} ({document.spec.scheduler})"


KIND = ClusterKind()
