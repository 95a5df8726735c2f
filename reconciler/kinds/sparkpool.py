"""SparkPools: a slice of a Cluster for Spark (namespace, scheduler queue, quota, limits,
priority, dedicated nodes, RBAC, pod templates). A SparkPool waits for its Cluster.

Drift a spec edit adopts, object by object (each is rendered from the pool's spec):

| object | live path | spec field |
|---|---|---|
| ResourceQuota | spec.hard.R | spec.quota.R |
| LimitRange | spec.limits (the Container item) | spec.limits.default.R, .defaultRequest.R |
| PriorityClass | value, preemptionPolicy | spec.priorityClass.value, .preemptionPolicy |
| Volcano Queue | spec.capability.R | spec.queue.max.R |
| Volcano Queue | spec.guarantee.resource.R | spec.queue.guaranteed.R |
| Volcano Queue | spec.deserved.R | spec.queue.deserved.R (only when the spec writes it) |

Everything else (the namespace, RBAC, service accounts, pod templates and spark-defaults, the
pool's node labels, which are its selector, and its taint) is rendered from several fields or
selects other resources, so it is left to people."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.kinds.base import Adoption, Inexpressible, SpecChange
from reconciler.kinds.kubernetes import KubernetesKind, resource_change, split_object_key
from reconciler.spec import models
from reconciler.spec.quantity import QuantityError, quantity_value

_VOLCANO_GROUP = "scheduling.volcano.sh/"
_VOLCANO_QUEUE_FIELDS = (
    ("spec.capability.", "max"),
    ("spec.guarantee.resource.", "guaranteed"),
    ("spec.deserved.", "deserved"),
)


def _same_quantity(a: Any, b: Any) -> bool:
    try:
        return quantity_value(str(a)) == quantity_value(str(b))
    except QuantityError:
        return False


def _limit_changes(limits: models.LimitDefaults, live: Any) -> list[Adoption]:
    """The LimitRange's `spec.limits` (a list, so one plan field): its Container item's defaults."""
    items = live if isinstance(live, list) else []
    container = next((i for i in items if isinstance(i, Mapping) and i.get("type") == "Container"), None)
    if container is None:
        return [Inexpressible("the LimitRange has no Container defaults live; edit spec.limits by hand")]
    out: list[Adoption] = []
    for section in ("default", "defaultRequest"):
        written: Mapping[str, str] = getattr(limits, section)
        have = container.get(section) or {}
        for resource in sorted(set(written) | set(have)):
            if resource in written and resource in have and _same_quantity(written[resource], have[resource]):
                continue
            out.append(resource_change(("spec", "limits", section), written, resource, have.get(resource)))
    if len(items) > 1:
        out.append(Inexpressible("LimitRange items other than the Container defaults are not fleet's"))
    if not out:
        out.append(Inexpressible("the LimitRange differs outside its Container defaults; compare it by hand"))
    return out


class SparkPoolKind(KubernetesKind):
    name = "SparkPool"
    short_names = ("sp",)
    model = models.SparkPool
    provider = "SparkPool"
    policy_fields = ("sparkPool",)

    def references(self, document: models.Document) -> Iterable[str]:
        assert isinstance(document, models.SparkPool)
        return (f"cluster/{document.spec.cluster}",)

    def nested_under(self, document: models.Document) -> str | None:
        assert isinstance(document, models.SparkPool)
        return f"cluster/{document.spec.cluster}"

    def where(self, document: models.Document) -> str:
        assert isinstance(document, models.SparkPool)
        return f"cluster {document.spec.cluster}"

    def what(self, document: models.Document) -> str:
        assert isinstance(document, models.SparkPool)
        return f"namespace {document.spec.namespace}, queue {document.spec.queue.name}"

    def adopt_node(self, document: models.Document, node: str, live: Mapping[str, Any]) -> list[Adoption]:
        out: list[Adoption] = [
            Inexpressible(
                f"label {key} on Node {node} is the pool's node selector (spec.nodes.selector): changing it"
                " changes which members the pool selects; edit the Cluster member or the selector by hand",
                what=f"label {key}",
            )
            for key, value in sorted((live.get("labels") or {}).items())
            if isinstance(document, models.SparkPool) and document.spec.nodes.selector.get(key) != value
        ]
        out.extend(
            Inexpressible(
                f"the pool's taint {taint} is missing on Node {node}; the next apply puts it back, or change"
                " spec.nodes.taint by hand",
                what=f"taint {taint}",
            )
            for taint in live.get("missingTaints") or ()
        )
        if not out:
            out.append(
                Inexpressible(f"Node {node} differs from the pool's spec in a way a spec edit cannot adopt")
            )
        return out

    def adopt_object(self, document: models.Document, key: str, path: str, live: Any) -> list[Adoption]:
        assert isinstance(document, models.SparkPool)
        parsed = split_object_key(key)
        api_version, kind = parsed[:2] if parsed else ("", "")
        spec = document.spec
        if (api_version, kind) == ("v1", "ResourceQuota") and path.startswith("spec.hard."):
            return [resource_change(("spec", "quota"), spec.quota, path.removeprefix("spec.hard."), live)]
        if (api_version, kind) == ("v1", "LimitRange") and path == "spec.limits":
            return _limit_changes(spec.limits, live)
        if kind == "PriorityClass" and path in ("value", "preemptionPolicy") and spec.priorityClass:
            return [SpecChange(("spec", "priorityClass", path), live, what=path)]
        if kind == "Queue" and api_version.startswith(_VOLCANO_GROUP):
            for prefix, field in _VOLCANO_QUEUE_FIELDS:
                if not path.startswith(prefix):
                    continue
                written = getattr(spec.queue, field)
                if written is None:
                    return [
                        Inexpressible(
                            "Volcano's deserved share is the guaranteed resources (spec.queue.deserved is"
                            " not written); add spec.queue.deserved by hand",
                            what=path,
                        )
                    ]
                return [resource_change(("spec", "queue", field), written, path.removeprefix(prefix), live)]
        return [
            Inexpressible(
                f"{path} of {kind} {key.rsplit('/', 1)[-1]} is rendered by fleet from the pool's spec,"
                " not one field of it; edit the pool by hand",
                what=path,
            )
        ]


KIND = SparkPoolKind()
