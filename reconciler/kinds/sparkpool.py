"""SparkPools: a slice of a Cluster for Spark (namespace, scheduler queue, quota, limits,
priority, dedicated nodes, RBAC, pod templates). A SparkPool waits for its Cluster."""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.kinds.kubernetes import KubernetesKind
from reconciler.spec import models


class SparkPoolKind(KubernetesKind):
    name = "SparkPool"
    short_names = ("sp",)
    model = models.SparkPool
    provider = "SparkPool"

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
