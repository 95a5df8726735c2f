"""Member Nodes: what fleet sees of them and how it changes them without touching others' work.

Labels are server-side applied per fleet address (field manager `fleet` for a Cluster,
`fleet.sparkpool.<name>` for a pool, so that neither drops the other's labels). Taints are an
atomic list, so they are never applied: fleet reads the Node, keeps every taint it does not manage,
sets its own, and writes the Node back under its resourceVersion. The `fleet.dev/taints`
annotation records which taints (`key:effect`) fleet set; `fleet.dev/cordoned` records that fleet,
not a person, cordoned the Node, so fleet only ever uncordons what it cordoned. Pure functions of
Node objects; the provider does the requests.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from providers.kubernetes.render import (
    CORDONED_ANNOTATION,
    HOSTNAME_LABEL,
    TAINTS_ANNOTATION,
    NodeIntent,
    owner_value,
    taint_id,
    taint_object,
    taint_text,
)

Obj = dict[str, Any]
CLUSTER_NODE_MANAGER = "fleet"


def label_manager(address: str) -> str:
    """The field manager of an address's Node labels: `fleet` for a Cluster, else `fleet.<owner>`."""
    return CLUSTER_NODE_MANAGER if address.startswith("cluster/") else f"fleet.{owner_value(address)}"


def find_node(nodes: Iterable[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    """The Node called `name`, or else the one whose `kubernetes.io/hostname` label is `name`."""
    by_hostname = None
    for node in nodes:
        meta = node.get("metadata") or {}
        if meta.get("name") == name:
            return node
        if by_hostname is None and (meta.get("labels") or {}).get(HOSTNAME_LABEL) == name:
            by_hostname = node
    return by_hostname


def _ready(node: Mapping[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def managed_taints(node: Mapping[str, Any]) -> set[str]:
    """The taints fleet recorded as its own; an unreadable record counts as none."""
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(TAINTS_ANNOTATION)
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return set()
    return {item for item in value if isinstance(item, str)} if isinstance(value, list) else set()


def applied_label_keys(node: Mapping[str, Any], manager: str) -> set[str]:
    """Label keys `manager` owns on the Node through server-side apply (from managedFields)."""
    keys: set[str] = set()
    for entry in (node.get("metadata") or {}).get("managedFields") or []:
        if (
            not isinstance(entry, dict)
            or entry.get("manager") != manager
            or entry.get("operation") != "Apply"
        ):
            continue
        labels = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:labels") or {}
        keys.update(name[2:] for name in labels if name.startswith("f:"))
    return keys


def _taint_triple(taint: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(taint.get("key", "")), str(taint.get("value") or ""), str(taint.get("effect", "")))


@dataclasses.dataclass(frozen=True, slots=True)
class NodeUpdate:
    """The Node's spec.taints, spec.unschedulable and fleet annotations after fleet's change."""

    taints: list[Obj]
    unschedulable: bool
    annotations: dict[str, str | None]  # None: remove
    changes: tuple[str, ...]  # what it does, for messages: "tainted", "cordoned", "uncordoned"

    def applied_to(self, node: Mapping[str, Any]) -> Obj:
        out: Obj = copy.deepcopy(dict(node))  # status and managedFields as read: a PUT keeps them
        meta = out.setdefault("metadata", {})
        annotations = dict(meta.get("annotations") or {})
        for key, value in self.annotations.items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        meta["annotations"] = annotations
        spec = out.setdefault("spec", {})
        if self.taints:
            spec["taints"] = self.taints
        else:
            spec.pop("taints", None)
        if self.unschedulable:
            spec["unschedulable"] = True
        else:
            spec.pop("unschedulable", None)
        return out


def node_update(intent: NodeIntent, node: Mapping[str, Any]) -> NodeUpdate | None:
    """What fleet must change on the Node's taints and cordon for `intent`; None: nothing."""
    spec = node.get("spec") or {}
    live: list[Obj] = [dict(t) for t in spec.get("taints") or [] if isinstance(t, dict)]
    managed = managed_taints(node)
    own = {taint_id(t): t for t in intent.taints}
    taints: list[Obj] = []
    placed: set[str] = set()
    for taint in live:
        tid = taint_id(taint)
        if tid in own:
            if tid in placed:
                continue
            wanted = taint_object(own[tid])
            same = _taint_triple(taint) == _taint_triple(wanted)
            taints.append(taint if same else wanted)
            placed.add(tid)
        elif tid in managed and tid not in intent.others:
            continue  # fleet set it and no fleet address wants it any more
        else:
            taints.append(taint)
    taints.extend(taint_object(t) for tid, t in own.items() if tid not in placed)
    live_ids = {taint_id(t) for t in taints}
    new_managed = sorted({tid for tid in managed if tid in intent.others and tid in live_ids} | set(own))

    annotations: dict[str, str | None] = {}
    if set(new_managed) != managed:
        annotations[TAINTS_ANNOTATION] = (
            json.dumps(new_managed, separators=(",", ":")) if new_managed else None
        )
    unschedulable = bool(spec.get("unschedulable"))
    cordoned_by_fleet = ((node.get("metadata") or {}).get("annotations") or {}).get(
        CORDONED_ANNOTATION
    ) == "true"
    changes: list[str] = []
    if [_taint_triple(t) for t in taints] != [_taint_triple(t) for t in live]:
        changes.append("tainted")
    if intent.cordon is True and not unschedulable:
        unschedulable = True
        annotations[CORDONED_ANNOTATION] = "true"
        changes.append("cordoned")
    elif intent.cordon is False and cordoned_by_fleet:
        if unschedulable:
            unschedulable = False
            changes.append("uncordoned")
        annotations[CORDONED_ANNOTATION] = None
    if not changes and not annotations:
        return None
    return NodeUpdate(taints, unschedulable, annotations, tuple(changes))


def labels_to_apply(intent: NodeIntent, node: Mapping[str, Any], manager: str) -> bool:
    """Whether an apply of the intent's labels would change the Node (values, or labels to drop)."""
    live = (node.get("metadata") or {}).get("labels") or {}
    if any(live.get(key) != value for key, value in intent.labels.items()):
        return True
    return bool(applied_label_keys(node, manager) - set(intent.labels))


def label_configuration(intent: NodeIntent, node: Mapping[str, Any]) -> Obj:
    """The apply configuration of the intent's labels on the Node."""
    name = (node.get("metadata") or {}).get("name", intent.node)
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": dict(intent.labels)}}


def node_entry(intent: NodeIntent, node: Mapping[str, Any] | None, manager: str) -> Obj:
    """The observation of one member Node for one address.

    `inSync` says whether an apply for this address would leave the Node as it is; a missing
    Node is reported (`present: false`) and is in sync, as fleet cannot create Nodes."""
    if node is None:
        return {
            "name": intent.node,
            "member": intent.member,
            "present": False,
            "ready": False,
            "labels": dict.fromkeys(intent.labels),
            "missingTaints": [taint_text(t) for t in intent.taints],
            "staleTaints": [],
            "staleLabels": [],
            "unschedulable": False,
            "inSync": True,
        }
    meta = node.get("metadata") or {}
    live_labels = meta.get("labels") or {}
    live_taints = {
        _taint_triple(t) for t in (node.get("spec") or {}).get("taints") or [] if isinstance(t, dict)
    }
    missing = [taint_text(t) for t in intent.taints if _taint_triple(taint_object(t)) not in live_taints]
    own = {taint_id(t) for t in intent.taints}
    live_ids = {f"{key}:{effect}" for key, _, effect in live_taints}
    stale_taints = sorted(tid for tid in managed_taints(node) - own - intent.others if tid in live_ids)
    stale_labels = sorted(applied_label_keys(node, manager) - set(intent.labels))
    in_sync = not labels_to_apply(intent, node, manager) and node_update(intent, node) is None
    entry: Obj = {
        "name": str(meta.get("name", intent.node)),
        "member": intent.member,
        "present": True,
        "ready": _ready(node),
        "labels": {key: live_labels.get(key) for key in intent.labels},
        "missingTaints": missing,
        "staleTaints": stale_taints,
        "staleLabels": stale_labels,
        "unschedulable": bool((node.get("spec") or {}).get("unschedulable")),
        "inSync": in_sync,
    }
    if intent.cordon is not None:
        entry["cordon"] = intent.cordon
    return entry


def node_entries(
    intents: Sequence[NodeIntent], nodes: Sequence[Mapping[str, Any]], manager: str
) -> list[Obj]:
    entries = [node_entry(intent, find_node(nodes, intent.node), manager) for intent in intents]
    return sorted(entries, key=lambda e: (str(e["name"]), str(e["member"])))
