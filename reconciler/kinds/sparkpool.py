"""SparkPools: a slice of a Cluster for Spark (namespace, scheduler queue, quota, limits,
priority, dedicated nodes, RBAC, pod templates). A SparkPool waits for its Cluster."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from providers.base import Action
from reconciler.kinds.kubernetes import KubernetesKind
from reconciler.plan.graph import Edge
from reconciler.plan.model import PlanEntry
from reconciler.spec import models


class SparkPoolKind(KubernetesKind):
    name = "SparkPool"
    model = models.SparkPool
    provider = "SparkPool"

    def edges(
        self,
        documents: Sequence[models.Document],
        entries: Sequence[PlanEntry],
        planned: Mapping[str, frozenset[Action]],
    ) -> Iterable[Edge]:
        for document in documents:
            yield from ((document.address, ref) for ref in self.references(document))

    def references(self, document: models.Document) -> Iterable[str]:
        assert isinstance(document, models.SparkPool)
        return (f"cluster/{document.spec.cluster}",)

    def where(self, document: models.Document) -> str:
        assert isinstance(document, models.SparkPool)
        return f"cluster {document.spec.cluster}"

    def what(self, document: models.Document) -> str:
        assert isinstance(document, models.SparkPool)
        return f"namespace {document.spec.namespace}, queue {document.spec.queue.name}"


KIND = SparkPoolKind()
