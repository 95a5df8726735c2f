"""Storage and write semantics of the test API server, behind one lock.

Objects are stored per group and resource (all versions of a CRD share one store) and are never
changed in place: every write builds a new object, so readers may serialize what they got after
the lock is released. Every stored change takes the next resource version and records exactly
one watch event, so the event for version N sits at a known index of the bounded history.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lab.apiserver import managedfields as mf
from lab.apiserver.patch import (
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from lab.apiserver.resources import CrdError, ResourceType, builtin_types, crd_types

Obj = dict[str, Any]
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)

# metadata the server owns: never taken from a client, never in managed fields (upstream's
# stripMeta, plus the deletion fields, which only DELETE sets).
SERVER_META = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)
META_ORDER = (
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NAMESPACE_FINALIZER = "kubernetes"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
OMIT_EMPTY_META = ("labels", "annotations", "finalizers", "ownerReferences")
EMPTY: tuple[Any, ...] = ({}, [], None)


class ApiError(Exception):
    """An error the server answers with a Status body."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details) if details else None

    def status(self) -> Obj:
        out: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            out["details"] = self.details
        out["code"] = self.code
        return out


def _details(rt: ResourceType | None, name: str | None, **extra: Any) -> Obj:
    out: Obj = {}
    if name:
        out["name"] = name
    if rt is not None:
        if rt.group:
            out["group"] = rt.group
        out["kind"] = rt.plural
    out.update(extra)
    return out


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
        _details(rt, name),
    )


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid; causes are (reason, field, message) as upstream's field errors."""
    text = ", ".join(f"{field}: {message}" if field else message for _, field, message in causes)
    details = _details(
        rt, name, causes=[{"reason": r, "message": f"{f}: {m}" if f else m, "field": f} for r, f, m in causes]
    )
    details["kind"] = rt.kind
    return ApiError(422, "Invalid", f'{rt.kind} "{name}" is invalid: {text}', details)


def conflict_causes(conflict: mf.ApplyConflict) -> list[Obj]:
    """An apply conflict's StatusCauses as upstream writes them: reason, message, field."""
    return [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {c.manager.describe()}",
            "field": mf.path_string(c.path),
        }
        for c in conflict.conflicts
    ]


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Selectors


_TERM_SET = re.compile(r"^\s*([^\s!=<>,()]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_TERM_NOT = re.compile(r"^\s*!\s*([^\s!=<>,()]+)\s*$")
_TERM_CMP = re.compile(r"^\s*([^\s!=<>,()]+)\s*(==|=|!=|>|<)\s*([^\s,()]*)\s*$")
_TERM_KEY = re.compile(r"^\s*([^\s!=<>,()]+)\s*$")


def _split_terms(text: str) -> list[str]:
    terms, depth, start = [], 0, 0
    for at, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(text[start:at])
            start = at + 1
    terms.append(text[start:])
    return [t for t in terms if t.strip()]


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", ">", "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, Any]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        try:
            number, bound = int(str(value)), int(self.values[0])
        except ValueError:
            return False
        return present and (number > bound if self.op == ">" else number < bound)


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Upstream's label selector syntax; raises ApiError 400 on a term it cannot parse."""
    if not text:
        return []
    out: list[Requirement] = []
    for term in _split_terms(text):
        if m := _TERM_SET.match(term):
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            out.append(Requirement(m.group(1), m.group(2), values))
        elif m := _TERM_NOT.match(term):
            out.append(Requirement(m.group(1), "!"))
        elif m := _TERM_CMP.match(term):
            op = "=" if m.group(2) == "==" else m.group(2)
            if op in (">", "<") and not m.group(3).lstrip("-").isdigit():
                raise bad_request(
                    f"unable to parse requirement: {term.strip()}: "
                    "for 'Gt', 'Lt' operators, the value must be an integer"
                )
            out.append(Requirement(m.group(1), op, (m.group(3),)))
        elif m := _TERM_KEY.match(term):
            out.append(Requirement(m.group(1), "exists"))
        else:
            raise bad_request(f"unable to parse requirement: {term.strip()!r}")
    return out


def parse_field_selector(text: str | None, rt: ResourceType) -> list[Requirement]:
    if not text:
        return []
    allowed = {"metadata.name", "metadata.namespace", *rt.field_labels}
    out: list[Requirement] = []
    for term in _split_terms(text):
        m = _TERM_CMP.match(term)
        if not m or m.group(2) not in ("=", "==", "!="):
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term.strip()}'")
        if m.group(1) not in allowed:
            raise bad_request(f"field label not supported: {m.group(1)}")
        out.append(Requirement(m.group(1), "!=" if m.group(2) == "!=" else "=", (m.group(3),)))
    return out


def _field_value(obj: Mapping[str, Any], dotted: str) -> str:
    node: Any = obj
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


@dataclass(frozen=True, slots=True)
class Selection:
    labels: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        if self.labels:
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if not all(r.matches(labels) for r in self.labels):
                return False
        if self.fields:
            values = {r.key: _field_value(obj, r.key) for r in self.fields}
            if not all(r.matches(values) for r in self.fields):
                return False
        return True


# ---------------------------------------------------------------------------------------------
# Objects


def _content(obj: Mapping[str, Any]) -> Obj:
    """The part of an object field managers see: no apiVersion, kind or server metadata."""
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    meta = obj.get("metadata")
    out["metadata"] = (
        {k: v for k, v in meta.items() if k not in SERVER_META} if isinstance(meta, dict) else {}
    )
    return out


def _assemble(rt: ResourceType, content: Mapping[str, Any], server: Mapping[str, Any]) -> Obj:
    user_meta = content.get("metadata") or {}
    meta: Obj = {}
    for key in META_ORDER:
        if key in server:
            meta[key] = server[key]
        elif key in user_meta:
            meta[key] = user_meta[key]
    for key, value in user_meta.items():
        meta.setdefault(key, value)
    obj: Obj = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": meta}
    for key, value in content.items():
        if key not in ("metadata", "status", "apiVersion", "kind"):
            obj[key] = value
    if "status" in content:
        obj["status"] = content["status"]
    return obj


def _server_meta(obj: Mapping[str, Any]) -> Obj:
    meta = obj.get("metadata") or {}
    return {k: v for k, v in meta.items() if k in SERVER_META and k != "selfLink"}


def _spec_part(rt: ResourceType, content: Mapping[str, Any]) -> Obj:
    skip = ("metadata", "status") if rt.status_subresource else ("metadata",)
    return {k: v for k, v in content.items() if k not in skip}


def _meta(obj: Mapping[str, Any]) -> Obj:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


@dataclass(frozen=True, slots=True)
class Event:
    rv: int
    type: str
    key: tuple[str, str]
    namespace: str
    name: str
    obj: Obj
    prev: Obj | None


@dataclass(frozen=True, slots=True)
class WriteResult:
    obj: Obj
    created: bool = False


class Store:
    """All objects, the resource version counter, the watch history and the served types."""

    def __init__(self, *, history_size: int = 10_000) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.rv = 0
        self.history_size = max(1, history_size)
        self.events: list[Event] = []
        self.closed = False
        # Bumped whenever the served resources change, so discovery caches know to rebuild.
        self.discovery_generation = 0
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.builtin_keys: set[tuple[str, str]] = set()
        self.objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self._snapshots: OrderedDict[str, list[Obj]] = OrderedDict()
        self._finalizing: set[str] = set()
        for rt in builtin_types():
            self._register(rt)
            self.builtin_keys.add(rt.key)
        for name in DEFAULT_NAMESPACES:
            self.create(
                self.type_for("v1", "Namespace"), "", {"metadata": {"name": name}}, manager="kube-apiserver"
            )

    # -- types -----------------------------------------------------------------------------

    def _register(self, rt: ResourceType) -> None:
        self.types[(rt.group, rt.version, rt.plural)] = rt
        self.objects.setdefault(rt.key, {})
        self.discovery_generation += 1

    def served(self) -> list[ResourceType]:
        return list(self.types.values())

    def resolve(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    def type_for(self, api_version: str, kind: str) -> ResourceType:
        group, _, version = api_version.rpartition("/")
        for rt in self.types.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        raise ApiError(404, "NotFound", f'no matches for kind "{kind}" in version "{api_version}"')

    def _versions(self, key: tuple[str, str]) -> list[ResourceType]:
        return [rt for rt in self.types.values() if rt.key == key]

    # -- reads -----------------------------------------------------------------------------

    def present(self, rt: ResourceType, obj: Obj) -> Obj:
        """`obj` as served at `rt`'s version (custom resource versions share one store)."""
        if obj.get("apiVersion") == rt.api_version:
            return obj
        return {**obj, "apiVersion": rt.api_version}

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        with self.cond:
            obj = self.objects.get(rt.key, {}).get((namespace, name))
            if obj is None:
                raise not_found(rt, name)
            return self.present(rt, obj)

    def find(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        with self.cond:
            obj = self.objects.get(rt.key, {}).get((namespace, name))
            return None if obj is None else self.present(rt, obj)

    def _matching(self, rt: ResourceType, namespace: str, selection: Selection) -> list[Obj]:
        bucket = self.objects.get(rt.key, {})
        keys = sorted(k for k in bucket if not namespace or k[0] == namespace)
        out = []
        for key in keys:
            obj = bucket[key]
            if selection.matches(obj):
                out.append(self.present(rt, obj))
        return out

    def list_objects(
        self,
        rt: ResourceType,
        namespace: str,
        selection: Selection | None = None,
        *,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> Obj:
        """A List object; with `limit`, a page of a consistent snapshot and a continue token."""
        with self.cond:
            offset = 0
            if continue_token:
                snapshot_id, offset, rv = _decode_continue(continue_token)
                snapshot = self._snapshots.get(snapshot_id)
                if snapshot is None:
                    raise expired(
                        "The provided continue parameter is too old to display a consistent list result. "
                        "You can start a new list without the continue parameter."
                    )
                items = snapshot
            else:
                items = self._matching(rt, namespace, selection or Selection())
                rv = self.rv
                snapshot_id = ""
            page = items[offset : offset + limit] if limit > 0 else items[offset:]
            metadata: Obj = {"resourceVersion": str(rv)}
            remaining = len(items) - offset - len(page)
            if remaining > 0:
                if not snapshot_id:
                    snapshot_id = secrets.token_hex(8)
                    self._snapshots[snapshot_id] = items
                    while len(self._snapshots) > 64:
                        self._snapshots.popitem(last=False)
                metadata["continue"] = _encode_continue(snapshot_id, offset + len(page), rv)
                metadata["remainingItemCount"] = remaining
        return {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": metadata, "items": page}

    # -- watch -----------------------------------------------------------------------------

    @property
    def oldest_rv(self) -> int:
        """The oldest resource version whose event is still in the history (rv+1 if none)."""
        return self.events[0].rv if self.events else self.rv + 1

    def watch_start(
        self, rt: ResourceType, namespace: str, selection: Selection, resource_version: str | None
    ) -> tuple[int, list[tuple[str, Obj]]]:
        """(cursor, initial events); raises ApiError 410 when the version is no longer in history."""
        with self.cond:
            if not resource_version or resource_version == "0":
                return self.rv, [("ADDED", obj) for obj in self._matching(rt, namespace, selection)]
            rv = _parse_rv(resource_version)
            if rv < self.oldest_rv - 1:
                raise expired(f"too old resource version: {rv} ({self.oldest_rv - 1})")
            return rv, []

    def watch_next(
        self,
        rt: ResourceType,
        namespace: str,
        selection: Selection,
        cursor: int,
        deadline: float,
    ) -> tuple[int, list[tuple[str, Obj]]]:
        """Events after `cursor`, waiting until there are some, the deadline, or close."""
        with self.cond:
            while self.rv <= cursor and not self.closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return cursor, []
                self.cond.wait(min(remaining, 1.0))
            if self.closed:
                return cursor, []
            if cursor + 1 < self.oldest_rv:
                raise expired(f"too old resource version: {cursor} ({self.oldest_rv - 1})")
            start = cursor + 1 - self.oldest_rv
            out: list[tuple[str, Obj]] = []
            for event in self.events[start:]:
                if event.key != rt.key or (namespace and event.namespace != namespace):
                    continue
                kind = self._watch_type(event, selection)
                if kind:
                    out.append((kind, self.present(rt, event.obj)))
            return self.rv, out

    @staticmethod
    def _watch_type(event: Event, selection: Selection) -> str | None:
        now_matches = selection.matches(event.obj)
        if event.type != "MODIFIED" or event.prev is None:
            return event.type if now_matches else None
        before = selection.matches(event.prev)
        if now_matches and before:
            return "MODIFIED"
        if now_matches:
            return "ADDED"
        return "DELETED" if before else None

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # -- committing ------------------------------------------------------------------------

    def _commit(self, rt: ResourceType, obj: Obj, kind: str, prev: Obj | None) -> Obj:
        """Store (or for DELETED, drop) `obj` at the next resource version and record the event."""
        self.rv += 1
        meta = dict(_meta(obj))
        meta["resourceVersion"] = str(self.rv)
        obj = {**obj, "metadata": meta}
        namespace, name = meta.get("namespace", ""), meta["name"]
        bucket = self.objects.setdefault(rt.key, {})
        if kind == "DELETED":
            bucket.pop((namespace, name), None)
        else:
            bucket[(namespace, name)] = obj
        self.events.append(Event(self.rv, kind, rt.key, namespace, name, obj, prev))
        if len(self.events) > self.history_size + self.history_size // 4:
            del self.events[: len(self.events) - self.history_size]
        self.cond.notify_all()
        return obj

    # -- create ----------------------------------------------------------------------------

    def create(
        self,
        rt: ResourceType,
        namespace: str,
        body: Any,
        *,
        manager: str,
        dry_run: bool = False,
    ) -> Obj:
        with self.cond:
            return self._create(rt, namespace, body, manager=manager, dry_run=dry_run)

    def _check_body(self, rt: ResourceType, body: Any, namespace: str, name: str | None) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the body of the request is not a JSON object")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if api_version and api_version != rt.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match "
                f"the expected API version ({rt.api_version})"
            )
        if kind and kind != rt.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        meta = body.get("metadata")
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata is not an object")
        body_namespace = meta.get("namespace")
        if rt.namespaced and body_namespace and body_namespace != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if name is not None and meta.get("name") and meta["name"] != name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        return meta

    def _validate_name(self, rt: ResourceType, name: str) -> None:
        if rt.group == "rbac.authorization.k8s.io":
            bad = name in (".", "..") or "/" in name or "%" in name
            rule = "may not contain '/' or '%'"
        elif rt.kind == "Namespace":
            bad = len(name) > 63 or not DNS_LABEL.match(name)
            rule = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"
        else:
            bad = len(name) > 253 or not DNS_SUBDOMAIN.match(name)
            rule = (
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                "'-' or '.', and must start and end with an alphanumeric character"
            )
        if bad:
            raise invalid(
                rt, name, [("FieldValueInvalid", "metadata.name", f'Invalid value: "{name}": {rule}')]
            )

    def _check_namespace(self, rt: ResourceType, namespace: str) -> None:
        if not rt.namespaced:
            return
        if not namespace:
            raise bad_request("the server could not find the requested resource: a namespace is required")
        ns = self.objects[("", "namespaces")].get(("", namespace))
        if ns is None:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        if _meta(ns).get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"{rt.plural} is forbidden: unable to create new content in namespace {namespace} "
                "because it is being terminated",
                {"name": namespace, "kind": "namespaces"},
            )

    @staticmethod
    def _defaults(rt: ResourceType, content: Obj) -> Obj:
        """Upstream's defaulting that clients see; it runs after an apply's fields are counted."""
        if rt.kind == "Secret" and rt.group == "" and not content.get("type"):
            content = {**content, "type": "Opaque"}
        return content

    def _normalize(self, rt: ResourceType, content: Obj) -> Obj:
        if rt.kind == "Secret" and rt.group == "" and isinstance(content.get("stringData"), dict):
            data = dict(content.get("data") or {})
            for key, value in content["stringData"].items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            content = {k: v for k, v in content.items() if k != "stringData"}
            content["data"] = data
        return content

    @staticmethod
    def _tidy(rt: ResourceType, content: Obj) -> Obj:
        """Drop what Go's omitempty drops when upstream re-encodes: empty metadata maps and lists."""
        meta = content.get("metadata")
        if isinstance(meta, dict) and any(meta.get(k, 1) in EMPTY for k in OMIT_EMPTY_META):
            content = {
                **content,
                "metadata": {k: v for k, v in meta.items() if k not in OMIT_EMPTY_META or v not in EMPTY},
            }
        typed_data = rt.crd is None and rt.group == "" and rt.kind in ("ConfigMap", "Secret")
        if typed_data and any(content.get(k, 1) in EMPTY for k in ("data", "binaryData")):
            content = {k: v for k, v in content.items() if k not in ("data", "binaryData") or v not in EMPTY}
        return content

    def _skeleton(self, rt: ResourceType) -> Obj:
        return {"metadata": {}, **{name: {} for name in rt.skeleton}}

    def _create(
        self,
        rt: ResourceType,
        namespace: str,
        body: Any,
        *,
        manager: str,
        dry_run: bool,
        applied: tuple[Obj, list[mf.ManagedEntry]] | None = None,
    ) -> Obj:
        if not rt.namespaced:
            namespace = ""
        meta = self._check_body(rt, body, namespace, None)
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = str(meta["generateName"]) + "".join(secrets.choice(GENERATE_ALPHABET) for _ in range(5))
        if not name:
            raise invalid(
                rt,
                "",
                [("FieldValueRequired", "metadata.name", "Required value: name or generateName is required")],
            )
        self._validate_name(rt, name)
        self._check_namespace(rt, namespace)
        if (namespace, name) in self.objects.get(rt.key, {}):
            raise already_exists(rt, name)
        now = now_text()
        if applied is not None:
            content, entries = applied
            content = self._defaults(rt, content)
        else:
            content = self._defaults(rt, self._normalize(rt, _content(body)))
            if rt.status_subresource and not rt.keep_status_on_create:
                content.pop("status", None)
            entries = []
        content = self._on_create(rt, self._tidy(rt, content))
        for field_name in rt.skeleton:
            # A typed object always has its struct fields, if only as {}.
            if not isinstance(content.get(field_name), dict):
                content[field_name] = {}
        if applied is None:
            try:
                base = mf.decode_entries(meta.get("managedFields"))
                entries, _ = mf.update(
                    self._skeleton(rt),
                    content,
                    base,
                    manager=manager,
                    api_version=rt.api_version,
                    schema=rt.schema,
                    now=now,
                )
            except mf.FieldSetError as e:
                raise invalid(rt, name, [("FieldValueInvalid", "metadata.managedFields", str(e))]) from e
        if rt.kind == "CustomResourceDefinition" and rt.group == "apiextensions.k8s.io":
            self._check_crd(rt, {**content, "metadata": {**content["metadata"], "name": name}}, name)
        server: Obj = {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now}
        if rt.generation:
            server["generation"] = 1
        server["managedFields"] = mf.encode_entries(entries)
        if rt.namespaced:
            server["namespace"] = namespace
        if not server["managedFields"]:
            del server["managedFields"]
        obj = _assemble(rt, content, server)
        if dry_run:
            return obj
        stored = self._commit(rt, obj, "ADDED", None)
        self._after_write(rt, None, stored)
        return self.present(rt, stored)

    def _on_create(self, rt: ResourceType, content: Obj) -> Obj:
        if rt.kind == "Namespace" and rt.group == "":
            content = {
                **content,
                "spec": {"finalizers": [NAMESPACE_FINALIZER]},
                "status": {"phase": "Active"},
            }
        return content

    # -- update ----------------------------------------------------------------------------

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        *,
        manager: str,
        dry_run: bool = False,
        subresource: str = "",
    ) -> Obj:
        with self.cond:
            old = self._stored(rt, namespace, name)
            if old is None:
                raise not_found(rt, name)
            self._check_body(rt, body, namespace if rt.namespaced else "", name)
            return self._update(rt, old, body, manager=manager, dry_run=dry_run, subresource=subresource)

    def _stored(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        return self.objects.get(rt.key, {}).get((namespace if rt.namespaced else "", name))

    def _update(
        self,
        rt: ResourceType,
        old: Obj,
        body: Obj,
        *,
        manager: str,
        dry_run: bool,
        subresource: str,
        applied: tuple[Obj, list[mf.ManagedEntry]] | None = None,
    ) -> Obj:
        old_meta = _meta(old)
        name = old_meta["name"]
        wanted_rv = _meta(body).get("resourceVersion")
        if wanted_rv and wanted_rv != old_meta.get("resourceVersion"):
            raise conflict(rt, name, STALE)
        old_content = _content(old)
        now = now_text()
        if applied is not None:
            new_content, entries = applied
            new_content = self._tidy(rt, self._defaults(rt, new_content))
        else:
            new_content = self._defaults(rt, self._normalize(rt, _content(body)))
            new_content = self._tidy(rt, self._reset(rt, old_content, new_content, subresource))
            try:
                base = mf.decode_entries(old_meta.get("managedFields"))
                sent = _meta(body).get("managedFields")
                if sent is not None and sent != old_meta.get("managedFields"):
                    base = mf.decode_entries(sent)
                entries, _ = mf.update(
                    old_content,
                    new_content,
                    base,
                    manager=manager,
                    api_version=rt.api_version,
                    schema=rt.schema,
                    now=now,
                    subresource=subresource,
                )
            except mf.FieldSetError as e:
                raise invalid(rt, name, [("FieldValueInvalid", "metadata.managedFields", str(e))]) from e
        if old_meta.get("deletionTimestamp"):
            added = set(_meta(new_content).get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise invalid(
                    rt,
                    name,
                    [
                        (
                            "FieldValueForbidden",
                            "metadata.finalizers",
                            "Forbidden: no new finalizers can be added if the object is being deleted",
                        )
                    ],
                )
        if rt.kind == "CustomResourceDefinition" and rt.group == "apiextensions.k8s.io" and not subresource:
            self._check_crd(rt, new_content, name)
        server = _server_meta(old)
        encoded = mf.encode_entries(entries)
        if encoded:
            server["managedFields"] = encoded
        else:
            server.pop("managedFields", None)
        if rt.generation and _spec_part(rt, old_content) != _spec_part(rt, new_content):
            server["generation"] = int(old_meta.get("generation") or 0) + 1
        obj = _assemble(rt, new_content, server)
        if obj == old:
            return self.present(rt, old)
        if dry_run:
            return self.present(rt, obj)
        if old_meta.get("deletionTimestamp") and not _meta(obj).get("finalizers"):
            stored = self._commit(rt, obj, "DELETED", old)
            self._after_delete(rt, stored)
        else:
            stored = self._commit(rt, obj, "MODIFIED", old)
            self._after_write(rt, old, stored)
        return self.present(rt, stored)

    def _reset(self, rt: ResourceType, old: Obj, new: Obj, subresource: str) -> Obj:
        """What a write may not change: status on the main resource, all but status on /status."""
        if subresource == "status":
            out = dict(old)
            if "status" in new:
                out["status"] = new["status"]
            else:
                out.pop("status", None)
            return out
        out = dict(new)
        if rt.status_subresource:
            if "status" in old:
                out["status"] = old["status"]
            else:
                out.pop("status", None)
        if rt.kind == "Namespace" and rt.group == "":
            if subresource == "finalize":
                spec = new.get("spec") or {}
                out = {**old, "spec": {"finalizers": spec.get("finalizers") or []}}
                if not out["spec"]["finalizers"]:
                    out["spec"] = {}
            else:
                out["spec"] = old.get("spec") or {}
        return out

    # -- patch and apply -------------------------------------------------------------------

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        patch_type: str,
        patch: Any,
        *,
        manager: str,
        dry_run: bool = False,
        force: bool = False,
        subresource: str = "",
    ) -> WriteResult:
        with self.cond:
            old = self._stored(rt, namespace, name)
            if patch_type == APPLY_PATCH:
                return self._apply(
                    rt,
                    namespace,
                    name,
                    old,
                    patch,
                    manager=manager,
                    force=force,
                    dry_run=dry_run,
                    subresource=subresource,
                )
            if old is None:
                raise not_found(rt, name)
            current = self.present(rt, old)
            try:
                if patch_type == JSON_PATCH:
                    patched = json_patch(current, patch)
                elif patch_type == MERGE_PATCH:
                    patched = merge_patch(current, patch)
                elif patch_type == STRATEGIC_PATCH:
                    if rt.strategies is None:
                        raise ApiError(
                            415,
                            "UnsupportedMediaType",
                            "the body of the request was in an unknown format - accepted media types "
                            f"include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}",
                        )
                    patched = strategic_merge_patch(current, patch, rt.strategies)
                else:
                    raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {patch_type!r}")
            except PatchError as e:
                if e.malformed:
                    raise bad_request(str(e)) from e
                raise ApiError(422, "Invalid", str(e)) from e
            if not isinstance(patched, dict):
                raise ApiError(422, "Invalid", "the patched object is not an object")
            self._check_body(rt, patched, namespace if rt.namespaced else "", name)
            obj = self._update(rt, old, patched, manager=manager, dry_run=dry_run, subresource=subresource)
            return WriteResult(obj)

    def _apply(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        old: Obj | None,
        config: Any,
        *,
        manager: str,
        force: bool,
        dry_run: bool,
        subresource: str,
    ) -> WriteResult:
        if not isinstance(config, dict):
            raise bad_request("the apply configuration is not an object")
        if not config.get("apiVersion") or not config.get("kind"):
            raise bad_request("apiVersion and kind must be set in an apply configuration")
        meta = self._check_body(rt, config, namespace if rt.namespaced else "", name)
        content = self._normalize(rt, _content(config))
        if subresource:
            content = {"status": content["status"]} if "status" in content else {}
        elif rt.status_subresource:
            content.pop("status", None)
        now = now_text()
        try:
            if old is None:
                if subresource:
                    raise not_found(rt, name)
                live = self._skeleton(rt)
                merged, entries, _ = mf.apply(
                    live,
                    content,
                    [],
                    manager=manager,
                    api_version=rt.api_version,
                    force=force,
                    schema=rt.schema,
                    now=now,
                )
                body = {**config, "metadata": {**meta, "name": name}}
                obj = self._create(
                    rt, namespace, body, manager=manager, dry_run=dry_run, applied=(merged, entries)
                )
                return WriteResult(obj, created=True)
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv and wanted_rv != _meta(old).get("resourceVersion"):
                raise conflict(rt, name, STALE)
            live = _content(old)
            base = mf.decode_entries(_meta(old).get("managedFields"))
            merged, entries, _ = mf.apply(
                live,
                content,
                base,
                manager=manager,
                api_version=rt.api_version,
                force=force,
                schema=rt.schema,
                now=now,
                subresource=subresource,
            )
        except mf.ApplyConflict as e:
            raise ApiError(409, "Conflict", e.message(), {"causes": conflict_causes(e)}) from e
        except mf.FieldSetError as e:
            raise invalid(rt, name, [("FieldValueInvalid", "", str(e))]) from e
        merged = self._reset(rt, live, merged, subresource) if rt.kind == "Namespace" else merged
        obj = self._update(
            rt,
            old,
            {"metadata": {}},
            manager=manager,
            dry_run=dry_run,
            subresource=subresource,
            applied=(merged, entries),
        )
        return WriteResult(obj)

    # -- delete ----------------------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        dry_run: bool = False,
    ) -> Obj:
        with self.cond:
            old = self._stored(rt, namespace, name)
            if old is None:
                raise not_found(rt, name)
            preconditions = (options or {}).get("preconditions") or {}
            meta = _meta(old)
            if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
                raise conflict(
                    rt,
                    name,
                    f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                    f"UID in object meta: {meta.get('uid')}",
                )
            wanted_rv = preconditions.get("resourceVersion")
            if wanted_rv and wanted_rv != meta.get("resourceVersion"):
                raise conflict(
                    rt,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: {wanted_rv}, "
                    f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
                )
            return self._delete(rt, old, dry_run=dry_run)

    def _delete(self, rt: ResourceType, old: Obj, *, dry_run: bool) -> Obj:
        meta = _meta(old)
        is_namespace = rt.kind == "Namespace" and rt.group == ""
        if meta.get("deletionTimestamp"):
            return self.present(rt, old)
        if meta.get("finalizers") or is_namespace:
            new_meta = {**meta, "deletionTimestamp": now_text(), "deletionGracePeriodSeconds": 0}
            obj = _assemble(rt, _content({**old, "metadata": new_meta}), _server_meta({"metadata": new_meta}))
            if is_namespace:
                obj["status"] = {
                    **(old.get("status") or {}),
                    "phase": "Terminating",
                }
            if dry_run:
                return self.present(rt, obj)
            stored = self._commit(rt, obj, "MODIFIED", old)
            if is_namespace:
                self._finalize_namespace(meta["name"])
            return self.present(rt, stored)
        if dry_run:
            return self._deleted_reply(rt, old)
        stored = self._commit(rt, old, "DELETED", old)
        self._after_delete(rt, stored)
        return self._deleted_reply(rt, stored)

    def _deleted_reply(self, rt: ResourceType, obj: Obj) -> Obj:
        if rt.return_deleted:
            return self.present(rt, obj)
        meta = _meta(obj)
        details: Obj = {"name": meta.get("name", "")}
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
        details["uid"] = meta.get("uid", "")
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str,
        selection: Selection,
        *,
        dry_run: bool = False,
    ) -> Obj:
        with self.cond:
            items = []
            for obj in self._matching(rt, namespace, selection):
                meta = _meta(obj)
                old = self._stored(rt, meta.get("namespace", ""), meta["name"])
                if old is not None:
                    result = self._delete(rt, old, dry_run=dry_run)
                    items.append(result if result.get("kind") != "Status" else self.present(rt, old))
            return {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self.rv)},
                "items": items,
            }

    # -- controllers run inline ------------------------------------------------------------

    def _after_write(self, rt: ResourceType, old: Obj | None, new: Obj) -> None:
        is_crd = rt.group == "apiextensions.k8s.io" and rt.kind == "CustomResourceDefinition"
        if is_crd and (old is None or _spec_part(rt, _content(old)) != _spec_part(rt, _content(new))):
            self._serve_crd(new)
        namespace = _meta(new).get("namespace")
        if namespace and self._terminating(namespace):
            self._finalize_namespace(namespace)
        if rt.kind == "Namespace" and rt.group == "" and _meta(new).get("deletionTimestamp"):
            self._finalize_namespace(_meta(new)["name"])

    def _after_delete(self, rt: ResourceType, obj: Obj) -> None:
        meta = _meta(obj)
        if rt.group == "apiextensions.k8s.io" and rt.kind == "CustomResourceDefinition":
            self._unserve_crd(meta["name"])
        namespace = meta.get("namespace")
        if namespace and self._terminating(namespace):
            self._finalize_namespace(namespace)

    def _terminating(self, namespace: str) -> bool:
        ns = self.objects[("", "namespaces")].get(("", namespace))
        return ns is not None and bool(_meta(ns).get("deletionTimestamp"))

    def _finalize_namespace(self, namespace: str) -> None:
        """What the namespace controller does: delete the contents, then the namespace."""
        if namespace in self._finalizing:
            return
        self._finalizing.add(namespace)
        try:
            self._finalize_namespace_now(namespace)
        finally:
            self._finalizing.discard(namespace)

    def _finalize_namespace_now(self, namespace: str) -> None:
        ns_type = self.type_for("v1", "Namespace")
        for key, bucket in list(self.objects.items()):
            for (obj_namespace, _), obj in list(bucket.items()):
                if obj_namespace == namespace and not _meta(obj).get("deletionTimestamp"):
                    self._delete(self._versions(key)[0], obj, dry_run=False)
        if any(ns == namespace for bucket in self.objects.values() for ns, _ in bucket):
            return
        ns = self.objects[("", "namespaces")].get(("", namespace))
        if ns is None:
            return
        if (ns.get("spec") or {}).get("finalizers"):
            content = _content(ns)
            content["spec"] = {}
            ns = self._commit(ns_type, _assemble(ns_type, content, _server_meta(ns)), "MODIFIED", ns)
        if not _meta(ns).get("finalizers"):
            self._commit(ns_type, ns, "DELETED", ns)

    def _check_crd(self, rt: ResourceType, content: Obj, name: str) -> None:
        try:
            types = crd_types({**content, "metadata": {**(content.get("metadata") or {}), "name": name}})
        except CrdError as e:
            field, _, message = str(e).partition(": ")
            raise invalid(rt, name, [("FieldValueInvalid", field, message)]) from e
        for new in types:
            if new.key in self.builtin_keys:
                raise invalid(
                    rt,
                    name,
                    [
                        (
                            "FieldValueInvalid",
                            "spec.group",
                            f'Invalid value: "{new.group}": is served by a built-in resource',
                        )
                    ],
                )

    def _serve_crd(self, crd: Obj) -> None:
        name = _meta(crd)["name"]
        self._drop_types(name)
        types = crd_types(crd)
        for rt in types:
            self._register(rt)
        spec = crd.get("spec") or {}
        names = dict(spec.get("names") or {})
        names.setdefault("singular", str(names.get("kind", "")).lower())
        names.setdefault("listKind", f"{names.get('kind', '')}List")
        now = now_text()
        status = {
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "lastTransitionTime": now,
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                },
                {
                    "type": "Established",
                    "status": "True",
                    "lastTransitionTime": now,
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                },
            ],
            "acceptedNames": names,
            "storedVersions": [
                v["name"] for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("storage")
            ],
        }
        crd_type = self.type_for("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        current = self.objects[crd_type.key][("", name)]
        old_status = current.get("status") or {}
        if {k: v for k, v in old_status.items() if k != "conditions"} == {
            k: v for k, v in status.items() if k != "conditions"
        } and [(c.get("type"), c.get("status")) for c in old_status.get("conditions") or []] == [
            (c["type"], c["status"]) for c in status["conditions"]
        ]:
            return
        self._update(
            crd_type,
            current,
            {**current, "status": status},
            manager="kube-apiserver",
            dry_run=False,
            subresource="status",
        )

    def _unserve_crd(self, name: str) -> None:
        keys = {rt.key for rt in self.types.values() if rt.crd == name}
        self._drop_types(name)
        for key in keys:
            rt_versions = [rt for rt in self.types.values() if rt.key == key]
            if rt_versions:
                continue
            bucket = self.objects.pop(key, {})
            for obj in bucket.values():
                meta = _meta(obj)
                self.rv += 1
                gone = {**obj, "metadata": {**meta, "resourceVersion": str(self.rv)}}
                self.events.append(
                    Event(self.rv, "DELETED", key, meta.get("namespace", ""), meta["name"], gone, obj)
                )
            self.cond.notify_all()

    def _drop_types(self, crd_name: str) -> None:
        for type_key, rt in list(self.types.items()):
            if rt.crd == crd_name:
                del self.types[type_key]
                self.discovery_generation += 1

    # -- state -----------------------------------------------------------------------------

    def dump(self) -> Obj:
        with self.cond:
            objects = [obj for bucket in self.objects.values() for obj in bucket.values()]
            return {"resourceVersion": self.rv, "objects": objects}

    def load(self, state: Mapping[str, Any]) -> None:
        """Replace everything with a `dump()`; watch history starts empty at its version."""
        with self.cond:
            objects = list(state.get("objects") or [])
            for key in list(self.objects):
                if key in self.builtin_keys:
                    self.objects[key] = {}
                else:
                    del self.objects[key]
            for type_key, rt in list(self.types.items()):
                if rt.crd:
                    del self.types[type_key]
            crd_key = ("apiextensions.k8s.io", "customresourcedefinitions")
            objects.sort(key=lambda o: 0 if (o.get("kind") == "CustomResourceDefinition") else 1)
            for obj in objects:
                meta = _meta(obj)
                group = str(obj.get("apiVersion", "")).rpartition("/")[0]
                kind = obj.get("kind")
                found = next(
                    (t.key for t in self.types.values() if t.group == group and t.kind == kind), None
                )
                if found is None:
                    continue
                self.objects.setdefault(found, {})[(meta.get("namespace", ""), meta["name"])] = obj
                if found == crd_key:
                    for rt in crd_types(obj):
                        self._register(rt)
            self.rv = int(state.get("resourceVersion") or 0)
            self.events = []
            self.discovery_generation += 1


def _encode_continue(snapshot: str, offset: int, rv: int) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "s": snapshot, "o": offset}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[str, int, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        return str(data["s"]), int(data["o"]), int(data["rv"])
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise bad_request(f"continue key is not valid: {e}") from e


def _parse_rv(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise bad_request(f'invalid resource version "{text}"') from e
    if value < 0:
        raise bad_request(f'invalid resource version "{text}"')
    return value
