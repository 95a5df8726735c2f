"""A Kubernetes API test server: what a GitOps controller and real kubectl see of kube-apiserver.

No real kube-apiserver (nor a container engine) can run where fleet is tested, so fleet ships
this one, for tests, benchmarks and the simulated lab. kubectl v1.32 (the `kubectl` Debian
package of the Google Cloud SDK, whose dispatcher picks the 1.32 binary from /version) is the
independent client that sets the bar: what it accepts from this server.

What it does:
- HTTP, or HTTPS with a given certificate and key; HTTP/1.1 keep-alive, one thread per
  connection. Bearer tokens, each "admin" or "read-only": no or unknown token -> 401, a write
  with a read-only token -> 403 (both as Status bodies). /version, /healthz, /livez and /readyz
  need no token. Without any token configured every request is admin. kubectl (client-go)
  never sends a bearer token over plain HTTP, so kubectl needs the HTTPS mode (trusting a
  self-signed certificate as its certificate-authority, or with insecure-skip-tls-verify);
  other clients may use either.
- Discovery: /api, /apis, /apis/{group}, /api/v1, /apis/{group}/{version}, and the aggregated
  discovery kubectl asks for first (apidiscovery.k8s.io v2 and v2beta1). /openapi/v3 lists every
  group-version and serves a document per group-version with the paths, operations, GVK
  extensions and query parameters (kubectl reads `fieldValidation` support from it before
  apply), but schemas without properties.
- Built-in resources: namespaces, nodes, configmaps, secrets, serviceaccounts, resourcequotas,
  limitranges, pods, services, apps/v1 deployments, statefulsets, daemonsets, replicasets,
  coordination.k8s.io/v1 leases, rbac.authorization.k8s.io/v1 roles, rolebindings,
  clusterroles, clusterrolebindings, scheduling.k8s.io/v1 priorityclasses and
  apiextensions.k8s.io/v1 customresourcedefinitions. A CRD is served as soon as it is created
  (discovery, OpenAPI, CRUD, its status shows Established), and goes with its objects.
- get, list (label selectors with =, ==, !=, in, notin, exists, !key, gt/lt; field selectors on
  metadata.name, metadata.namespace and a few per-kind fields; limit with continue tokens over a
  consistent snapshot), watch (?watch=1 or /watch/ paths, from a resourceVersion or from
  "now" with the current objects as ADDED, timeoutSeconds, newline-delimited JSON events; an
  ERROR event with a 410 Expired Status when the version is older than the bounded history),
  create (201, 409 AlreadyExists, generateName), update (409 Conflict on a stale
  resourceVersion), patch (JSON patch, merge patch, strategic merge patch for built-in kinds,
  server-side apply), delete (finalizers keep an object with deletionTimestamp until removed;
  a namespace turns Terminating, its contents are deleted and it goes once they are gone),
  deletecollection, and the status subresource (and namespaces' finalize).
- Server-side apply with upstream's managedFields (see managedfields.py): conflicts as 409 with
  upstream's message and causes, force, removal of fields a manager stopped applying, Update
  managers from fieldManager or the user agent's prefix ("kubectl"). dryRun=All on every write.
- Metadata: uid, resourceVersion from one counter, generation (bumped when anything but
  metadata and status changes), creationTimestamp; a write that changes nothing stores nothing.
- `kubectl get` tables (meta.k8s.io/v1 Table) with Name and Age and a few per-kind columns, and a
  CRD's additionalPrinterColumns.

What it does not do: protobuf or CBOR (JSON and YAML only, except the protobuf bodies of the
`kubectl create <kind>` generators for the kinds protobuf.py lists), HTTP/2,
admission (no webhooks, no defaulting beyond namespace finalizers, Secret type and stringData,
no quota or limit enforcement),
OpenAPI schemas and validation (fieldValidation is accepted and not enforced; CRD structural
schemas neither prune nor validate), CRD version conversion (all versions share one store),
garbage collection (ownerReferences and propagationPolicy have no effect), RBAC beyond the two
token roles, impersonation, aggregated API servers, exec/logs/port-forward/proxy/eviction/scale
subresources, controllers (nothing schedules pods or rolls out deployments), events, bookmarks,
watch-list (sendInitialEvents), the managedFields cap of 10 update managers, and migrating
client-side apply's last-applied annotation into managed fields.

Test-server only (no such path in kube-apiserver): `GET /debug/fleet/stats` answers the request
counters (`RequestStats`, see `ApiServer.stats()`) as JSON, for an admin token only (401 without
a token, 403 for a read-only one); it is not counted itself. Benchmarks that run the server in
another process read it before and after what they measure.

Command line:
    python -m lab.apiserver.server serve [--host H] [--port N] --token T
        [--read-only-token T] [--tls-cert F --tls-key F | --self-signed-tls DIR]
        [--state-file PATH] [--seed FILE] [--ready-file PATH]
--self-signed-tls makes a certificate for --host (an IP SAN for an address, a DNS SAN for a name)
into DIR/tls.crt and DIR/tls.key (0600), see tls.py, and serves HTTPS with it. --seed
creates the objects of a JSON list (Namespaces, Nodes with their status, ...) before serving. The
server prints the base URL once it accepts requests and, with --ready-file, then writes
{"url": ..., "pid": ..., "ca": <the certificate file, or null over HTTP>} there atomically (it
removes a stale one first and its own on exit; a waiter should still check the pid). It saves
the state file (when given) every few seconds and on SIGTERM or SIGINT, and exits 0.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import re
import select
import signal
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lab.apiserver.protobuf import ProtobufError, decode_object
from lab.apiserver.resources import VERBS, Column, ResourceType
from lab.apiserver.store import (
    APPLY_PATCH,
    PATCH_TYPES,
    ApiError,
    Obj,
    Selection,
    Store,
    bad_request,
    parse_field_selector,
    parse_label_selector,
)
from lab.serving import write_json_atomically

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}
ROLES = ("admin", "read-only")
READ_VERBS = frozenset({"get", "list", "watch"})
WRITE_VERBS = frozenset({"create", "update", "patch", "apply", "delete", "deletecollection"})
DISCOVERY_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
DISCOVERY_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
MAX_BODY = 32 * 1024 * 1024
# Upstream lets anyone read these (system:public-info-viewer).
PUBLIC_PATHS = frozenset({"/version", "/healthz", "/livez", "/readyz"})
# Not in kube-apiserver: the request counters, for benchmarks that run the server in another process.
STATS_PATH = "/debug/fleet/stats"


class Unauthorized(ApiError):
    def __init__(self) -> None:
        super().__init__(401, "Unauthorized", "Unauthorized")


# ---------------------------------------------------------------------------------------------
# Requests and responses, independent of the HTTP server


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    # Lower-cased names: HTTP header names are case-insensitive.
    headers: Mapping[str, str]
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def param(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        return self.param(name).lower() in ("1", "true")


@dataclass
class Response:
    code: int
    body: bytes = b""
    content_type: str = "application/json"
    # A watch: chunks written as they come, with chunked transfer encoding.
    stream: Iterator[bytes] | None = None


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _reply(value: Any, code: int = 200, content_type: str = "application/json") -> Response:
    return Response(code, _json_bytes(value), content_type)


@dataclass(frozen=True)
class RequestStats:
    """Requests counted since start or `reset_stats()`.

    `by_verb` uses Kubernetes verbs (get, list, watch, create, update, patch, delete,
    deletecollection) except that server-side apply counts as "apply", not "patch", and
    discovery, OpenAPI, /version and health checks count as "discovery". `writes` are write
    requests that were not dry runs, `dry_run_writes` those that were (both whatever their
    outcome); `stored_changes` is how many resource versions the store handed out.
    """

    requests: int
    writes: int
    dry_run_writes: int
    stored_changes: int
    by_verb: dict[str, int]
    by_method: dict[str, int]
    by_code: dict[int, int]


@dataclass
class _Counters:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    writes: int = 0
    dry_run_writes: int = 0
    rv_at_reset: int = 0
    by_verb: Counter[str] = field(default_factory=Counter)
    by_method: Counter[str] = field(default_factory=Counter)
    by_code: Counter[int] = field(default_factory=Counter)


# ---------------------------------------------------------------------------------------------
# Discovery and OpenAPI


def _subresources(rt: ResourceType) -> list[tuple[str, tuple[str, ...]]]:
    out: list[tuple[str, tuple[str, ...]]] = []
    if rt.status_subresource:
        out.append(("status", ("get", "patch", "update")))
    if rt.kind == "Namespace" and rt.group == "":
        out.append(("finalize", ("update",)))
    return out


def _storage_hash(rt: ResourceType) -> str:
    digest = hashlib.sha256(f"{rt.group}/{rt.version}/{rt.kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def _resource_list(gv: str, types: list[ResourceType]) -> Obj:
    resources: list[Obj] = []
    for rt in types:
        entry: Obj = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(VERBS),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        entry["storageVersionHash"] = _storage_hash(rt)
        resources.append(entry)
        for sub, verbs in _subresources(rt):
            resources.append(
                {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": list(verbs),
                }
            )
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def _aggregated(groups: list[tuple[str, list[tuple[str, list[ResourceType]]]]], version: str) -> Obj:
    items: list[Obj] = []
    for group, versions in groups:
        metadata: Obj = {"name": group, "creationTimestamp": None} if group else {"creationTimestamp": None}
        version_entries = []
        for gv_version, types in versions:
            resources = []
            for rt in types:
                kind = {"group": rt.group, "version": rt.version, "kind": rt.kind}
                entry: Obj = {
                    "resource": rt.plural,
                    "responseKind": kind,
                    "scope": "Namespaced" if rt.namespaced else "Cluster",
                    "singularResource": rt.singular,
                    "verbs": list(VERBS),
                }
                if rt.short_names:
                    entry["shortNames"] = list(rt.short_names)
                if rt.categories:
                    entry["categories"] = list(rt.categories)
                subs = [
                    {"subresource": sub, "responseKind": kind, "verbs": list(verbs)}
                    for sub, verbs in _subresources(rt)
                ]
                if subs:
                    entry["subresources"] = subs
                resources.append(entry)
            version_entries.append({"version": gv_version, "resources": resources, "freshness": "Current"})
        items.append({"metadata": metadata, "versions": version_entries})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{version}",
        "metadata": {},
        "items": items,
    }


_QUERY_PARAMS = {
    "dryRun": "When present, modifications are not persisted; All is the only valid value.",
    "fieldManager": "The name of the actor or entity making these changes.",
    "fieldValidation": "Ignore, Warn or Strict: how unknown and duplicate fields are handled.",
    "force": "Force is going to force apply requests: it re-acquires conflicting fields.",
    "pretty": "If 'true', the output is pretty printed.",
}


def _openapi_document(gv: str, types: list[ResourceType]) -> Obj:
    """A document per group-version with the paths and operations, without schemas' properties."""
    prefix = "/api/v1" if gv == "v1" else f"/apis/{gv}"
    paths: dict[str, Obj] = {}
    schemas: dict[str, Obj] = {}

    def params(*names: str) -> list[Obj]:
        return [
            {
                "name": n,
                "in": "query",
                "description": _QUERY_PARAMS.get(n, n),
                "schema": {"type": "string", "uniqueItems": True},
            }
            for n in names
        ]

    for rt in types:
        gvk = {"group": rt.group, "kind": rt.kind, "version": rt.version}
        schema_name = _schema_name(rt)
        schemas[schema_name] = {
            "type": "object",
            "description": f"{rt.kind} ({rt.api_version}).",
            "x-kubernetes-group-version-kind": [gvk],
        }
        ref = {"$ref": f"#/components/schemas/{schema_name}"}
        body = {"content": {"application/json": {"schema": ref}}, "required": True}
        ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
        base = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
        scope = "Namespaced" if rt.namespaced else ""
        op_kind = f"{_camel(rt.group)}{rt.version.capitalize()}{scope}{rt.kind}"

        def operation(
            action: str,
            verb: str,
            *query: str,
            with_body: bool = False,
            kind: str = op_kind,
            gvk: Obj = gvk,
            ok: Obj = ok,
            body: Obj = body,
        ) -> Obj:
            op: Obj = {
                "operationId": f"{verb}{kind}",
                "parameters": params(*query),
                "responses": ok,
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            }
            if with_body:
                op["requestBody"] = body
            return op

        paths[base] = {
            "get": operation("list", "list"),
            "post": operation(
                "post", "create", "dryRun", "fieldManager", "fieldValidation", "pretty", with_body=True
            ),
            "delete": operation("deletecollection", "deleteCollection", "dryRun"),
        }
        item = {
            "get": operation("get", "read"),
            "put": operation(
                "put", "replace", "dryRun", "fieldManager", "fieldValidation", "pretty", with_body=True
            ),
            "patch": operation(
                "patch",
                "patch",
                "dryRun",
                "fieldManager",
                "fieldValidation",
                "force",
                "pretty",
                with_body=True,
            ),
            "delete": operation("delete", "delete", "dryRun"),
        }
        paths[base + "/{name}"] = item
        for sub, _ in _subresources(rt):
            sub_kind = f"{op_kind}{sub.capitalize()}"
            paths[f"{base}/{{name}}/{sub}"] = {
                "get": operation("get", "read", kind=sub_kind),
                "put": operation(
                    "put",
                    "replace",
                    "dryRun",
                    "fieldManager",
                    "fieldValidation",
                    with_body=True,
                    kind=sub_kind,
                ),
                "patch": operation(
                    "patch",
                    "patch",
                    "dryRun",
                    "fieldManager",
                    "fieldValidation",
                    "force",
                    with_body=True,
                    kind=sub_kind,
                ),
            }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _camel(group: str) -> str:
    if not group:
        return "Core"
    return "".join(part.capitalize() for part in group.replace(".k8s.io", "").split("."))


def _schema_name(rt: ResourceType) -> str:
    if not rt.group:
        return f"io.k8s.api.core.{rt.version}.{rt.kind}"
    if rt.group.endswith(".k8s.io") and rt.crd is None:
        return f"io.k8s.api.{rt.group.removesuffix('.k8s.io')}.{rt.version}.{rt.kind}"
    if rt.crd is None:
        return f"io.k8s.api.{rt.group}.{rt.version}.{rt.kind}"
    return ".".join(reversed(rt.group.split("."))) + f".{rt.version}.{rt.kind}"


# ---------------------------------------------------------------------------------------------
# Tables for kubectl get


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration, as the AGE column shows it."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\?\(@\.([\w.-]+)\s*==\s*[\"']([^\"']*)[\"']\)\]")


def json_path(obj: Any, path: str) -> Any:
    """A value at a simple JSONPath: .a.b, .a[0], .a[?(@.type=="Ready")].status."""
    node = obj
    for m in _PATH_PART.finditer(path.strip().lstrip("{").rstrip("}")):
        if m.group(1) is not None:
            node = node.get(m.group(1)) if isinstance(node, dict) else None
        elif m.group(2) is not None:
            index = int(m.group(2))
            node = node[index] if isinstance(node, list) and index < len(node) else None
        else:
            key, wanted = m.group(3), m.group(4)
            node = (
                next((x for x in node if isinstance(x, dict) and str(x.get(key)) == wanted), None)
                if isinstance(node, list)
                else None
            )
        if node is None:
            return None
    return node


def _cell(obj: Obj, column: Column, now: float) -> Any:
    if column.path == "<node-status>":
        ready = json_path(obj, '.status.conditions[?(@.type=="Ready")].status')
        text = {"True": "Ready", "False": "NotReady"}.get(str(ready), "Unknown")
        if (obj.get("spec") or {}).get("unschedulable"):
            text += ",SchedulingDisabled"
        return text
    if column.path == "<node-roles>":
        labels = (obj.get("metadata") or {}).get("labels") or {}
        roles = sorted(
            k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and "/" in k
        )
        return ",".join(r for r in roles if r) or "<none>"
    if column.path == "<data-count>":
        return len(obj.get("data") or {}) + len(obj.get("binaryData") or {})
    value = json_path(obj, column.path)
    if column.name == "Age" and isinstance(value, str):
        return human_duration(now - _timestamp(value))
    if value is None:
        # Built-in kinds print their typed zero values; custom resources print <none>.
        return {"string": "<none>", "boolean": False}.get(column.type)
    return value


def _timestamp(text: str) -> float:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return time.time()


def to_table(rt: ResourceType, objects: list[Obj], metadata: Obj, include: str) -> Obj:
    columns = rt.columns or (Column("Age", ".metadata.creationTimestamp", "date"),)
    definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    for column in columns:
        kind = "string" if column.name == "Age" else column.type
        definitions.append(
            {
                "name": column.name,
                "type": kind,
                "format": "",
                "description": column.description or column.name,
                "priority": column.priority,
            }
        )
    now = time.time()
    rows = []
    for obj in objects:
        row: Obj = {
            "cells": [(obj.get("metadata") or {}).get("name", ""), *(_cell(obj, c, now) for c in columns)]
        }
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"},
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    }


def _partial(obj: Obj) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def _wants_partial(accept: str) -> bool:
    # Metadata-only clients (client-go's metadata informers) ask for this before plain JSON.
    first = accept.replace(" ", "").split(",")[0]
    return "as=PartialObjectMetadata" in first


def _wants_table(accept: str) -> bool:
    return "as=Table" in accept.replace(" ", "")


# ---------------------------------------------------------------------------------------------
# The application: routing, authentication, authorization, verbs


@dataclass(frozen=True, slots=True)
class _Route:
    rt: ResourceType
    namespace: str
    name: str
    subresource: str
    watch_path: bool


class App:
    """Answers one request; the HTTP server around it only moves bytes."""

    def __init__(self, store: Store, tokens: Mapping[str, str] | None, *, address: str = "") -> None:
        for role in (tokens or {}).values():
            if role not in ROLES:
                raise ValueError(f"token role {role!r} is neither 'admin' nor 'read-only'")
        self.store = store
        self.tokens = dict(tokens or {})
        self.address = address
        self.counters = _Counters()
        self._discovery_cache: dict[str, tuple[int, Response]] = {}
        self._openapi_cache: tuple[int, dict[str, tuple[str, bytes]]] | None = None
        self.stopping = threading.Event()

    # -- stats -------------------------------------------------------------------------------

    def stats(self) -> RequestStats:
        c = self.counters
        with c.lock:
            return RequestStats(
                requests=c.requests,
                writes=c.writes,
                dry_run_writes=c.dry_run_writes,
                stored_changes=self.store.rv - c.rv_at_reset,
                by_verb=dict(c.by_verb),
                by_method=dict(c.by_method),
                by_code=dict(c.by_code),
            )

    def reset_stats(self) -> None:
        c = self.counters
        with c.lock:
            c.requests = c.writes = c.dry_run_writes = 0
            c.rv_at_reset = self.store.rv
            c.by_verb.clear()
            c.by_method.clear()
            c.by_code.clear()

    def _count(self, method: str, verb: str, dry_run: bool, code: int) -> None:
        c = self.counters
        with c.lock:
            c.requests += 1
            c.by_method[method] += 1
            c.by_verb[verb] += 1
            c.by_code[code] += 1
            if verb in WRITE_VERBS:
                if dry_run:
                    c.dry_run_writes += 1
                else:
                    c.writes += 1

    # -- entry -------------------------------------------------------------------------------

    def handle(self, req: Request, alive: Callable[[], bool] = lambda: True) -> Response:
        if "/" + "/".join(p for p in req.path.split("/") if p) == STATS_PATH:
            return self._stats_response(req)  # not counted: reading the counters changes none
        verb, dry_run = "discovery", False
        try:
            public = "/" + "/".join(p for p in req.path.split("/") if p) in PUBLIC_PATHS
            role = "anonymous" if public else self._authenticate(req)
            route = None if public else self._route(req)
            if route is None:
                response = self._non_resource(req)
            else:
                verb = self._verb(req, route)
                dry_run = self._dry_run(req) if verb in WRITE_VERBS else False
                self._authorize(role, verb, route)
                response = self._resource(req, route, verb, dry_run, alive)
        except ApiError as e:
            response = _reply(e.status(), e.code)
        self._count(req.method, verb, dry_run, response.code)
        return response

    def _stats_response(self, req: Request) -> Response:
        """GET /debug/fleet/stats: the RequestStats as JSON, for admin tokens only (test server only)."""
        try:
            if self._authenticate(req) != "admin":
                raise ApiError(
                    403,
                    "Forbidden",
                    f'forbidden: User "read-only" cannot get path "{STATS_PATH}"',
                )
            if req.method != "GET":
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
        except ApiError as e:
            return _reply(e.status(), e.code)
        return _reply(asdict(self.stats()))

    def _authenticate(self, req: Request) -> str:
        if not self.tokens:
            return "admin"
        header = req.header("Authorization", "")
        scheme, _, token = header.partition(" ")
        role = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if role is None:
            raise Unauthorized()
        return role

    def _authorize(self, role: str, verb: str, route: _Route) -> None:
        if role == "admin" or verb in READ_VERBS:
            return
        rt = route.rt
        resource = f"{rt.plural}/{route.subresource}" if route.subresource else rt.plural
        rbac_verb = "patch" if verb == "apply" else verb
        subject = f'{rt.qualified} "{route.name}"' if route.name else rt.qualified
        where = f'in the namespace "{route.namespace}"' if route.namespace else "at the cluster scope"
        raise ApiError(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{role}" cannot {rbac_verb} resource "{resource}" '
            f'in API group "{rt.group}" {where}',
            {"name": route.name, "group": rt.group, "kind": rt.plural}
            if route.name
            else {"group": rt.group, "kind": rt.plural},
        )

    @staticmethod
    def _dry_run(req: Request) -> bool:
        values = req.query.get("dryRun") or []
        for value in values:
            if value != "All":
                raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
        return bool(values)

    # -- routing -----------------------------------------------------------------------------

    def _route(self, req: Request) -> _Route | None:
        parts = [p for p in req.path.split("/") if p]
        if len(parts) < 2 or parts[0] not in ("api", "apis"):
            return None
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        else:
            if len(parts) < 3:
                return None
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            return None
        watch_path = rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            candidate = self.store.resolve(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = self.store.resolve(group, version, rest[0])
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if namespace and not rt.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        if subresource and subresource not in {s for s, _ in _subresources(rt)}:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Route(rt, namespace, name, subresource, watch_path)

    def _verb(self, req: Request, route: _Route) -> str:
        method = req.method
        if method == "GET":
            if route.name:
                return "get"
            return "watch" if route.watch_path or req.flag("watch") else "list"
        if route.watch_path:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        if method == "POST" and not route.name:
            return "create"
        if method == "PUT" and route.name:
            return "update"
        if method == "PATCH" and route.name:
            content_type = req.header("Content-Type", "").split(";")[0].strip()
            return "apply" if content_type == APPLY_PATCH else "patch"
        if method == "DELETE":
            return "delete" if route.name else "deletecollection"
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    # -- non-resource paths ------------------------------------------------------------------

    def _non_resource(self, req: Request) -> Response:
        path = "/" + "/".join(p for p in req.path.split("/") if p)
        if path in ("/healthz", "/livez", "/readyz"):
            return Response(200, b"ok", "text/plain; charset=utf-8")
        if path == "/version":
            return _reply(SERVER_VERSION)
        if req.method != "GET":
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        accept = req.header("Accept", "")
        if path in ("/api", "/apis"):
            aggregated = self._aggregated_format(accept)
            if aggregated:
                return self._cached(
                    f"{path} {aggregated}", lambda: self._aggregated_response(path, aggregated)
                )
            return self._cached(path, lambda: _reply(self._legacy_root(path)))
        parts = path.split("/")[1:]
        if parts[0] == "api" and len(parts) == 2:
            return self._cached(path, lambda: self._group_version_response("", parts[1]))
        if parts[0] == "apis" and len(parts) == 2:
            return self._cached(path, lambda: self._group_response(parts[1]))
        if parts[0] == "apis" and len(parts) == 3:
            return self._cached(path, lambda: self._group_version_response(parts[1], parts[2]))
        if parts[0] == "openapi" and len(parts) >= 2 and parts[1] == "v3":
            return self._openapi(parts[2:])
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    @staticmethod
    def _aggregated_format(accept: str) -> str:
        for option in accept.replace(" ", "").split(","):
            if "as=APIGroupDiscoveryList" in option and "g=apidiscovery.k8s.io" in option:
                if "v=v2beta1" in option:
                    return "v2beta1"
                if "v=v2" in option:
                    return "v2"
            elif option.split(";")[0] in ("application/json", "*/*"):
                return ""
        return ""

    def _cached(self, key: str, build: Callable[[], Response]) -> Response:
        generation = self.store.discovery_generation
        hit = self._discovery_cache.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1]
        response = build()
        if response.code == 200:
            self._discovery_cache[key] = (generation, response)
        return response

    def _grouped(self) -> list[tuple[str, list[tuple[str, list[ResourceType]]]]]:
        groups: dict[str, dict[str, list[ResourceType]]] = {}
        for rt in self.store.served():
            groups.setdefault(rt.group, {}).setdefault(rt.version, []).append(rt)
        return [(g, list(versions.items())) for g, versions in groups.items()]

    def _legacy_root(self, path: str) -> Obj:
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.address}],
            }
        groups = []
        for group, versions in self._grouped():
            if group:
                groups.append(self._group_entry(group, [v for v, _ in versions]))
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    @staticmethod
    def _group_entry(group: str, versions: list[str]) -> Obj:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    def _aggregated_response(self, path: str, version: str) -> Response:
        groups = [g for g in self._grouped() if (g[0] == "") == (path == "/api")]
        content_type = DISCOVERY_V2 if version == "v2" else DISCOVERY_V2BETA1
        return _reply(_aggregated(groups, version), content_type=content_type)

    def _group_response(self, group: str) -> Response:
        for name, versions in self._grouped():
            if name == group and group:
                return _reply(
                    {
                        "kind": "APIGroup",
                        "apiVersion": "v1",
                        **self._group_entry(group, [v for v, _ in versions]),
                    }
                )
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _group_version_response(self, group: str, version: str) -> Response:
        types = [rt for rt in self.store.served() if rt.group == group and rt.version == version]
        if not types:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        gv = f"{group}/{version}" if group else version
        return _reply(_resource_list(gv, types))

    def _openapi(self, rest: list[str]) -> Response:
        generation = self.store.discovery_generation
        if self._openapi_cache is None or self._openapi_cache[0] != generation:
            documents: dict[str, tuple[str, bytes]] = {}
            by_gv: dict[str, list[ResourceType]] = {}
            for rt in self.store.served():
                by_gv.setdefault(rt.group_version, []).append(rt)
            for gv, types in by_gv.items():
                key = "api/v1" if gv == "v1" else f"apis/{gv}"
                raw = _json_bytes(_openapi_document(gv, types))
                documents[key] = (hashlib.sha512(raw).hexdigest()[:64].upper(), raw)
            self._openapi_cache = (generation, documents)
        documents = self._openapi_cache[1]
        if not rest:
            paths = {
                key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
                for key, (digest, _) in documents.items()
            }
            return _reply({"paths": paths})
        found = documents.get("/".join(rest))
        if found is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return Response(200, found[1])

    # -- resources ---------------------------------------------------------------------------

    def _manager(self, req: Request, verb: str) -> str:
        manager = req.param("fieldManager")
        if len(manager) > 128:
            raise self._invalid_options(
                verb, "fieldManager", "Too long: may not be longer than 128 characters"
            )
        if verb == "apply" and not manager:
            raise self._invalid_options(verb, "fieldManager", "Required value: is required for apply patch")
        if manager:
            return manager
        return req.header("User-Agent", "").split("/")[0] or "unknown"

    @staticmethod
    def _invalid_options(verb: str, field_name: str, message: str) -> ApiError:
        kind = {"create": "CreateOptions", "update": "UpdateOptions"}.get(verb, "PatchOptions")
        return ApiError(
            422,
            "Invalid",
            f'{kind}.meta.k8s.io "" is invalid: {field_name}: {message}',
            {
                "group": "meta.k8s.io",
                "kind": kind,
                "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field_name}],
            },
        )

    def _body(self, req: Request, *, yaml_ok: bool = False) -> Any:
        content_type = req.header("Content-Type", "application/json").split(";")[0].strip().lower()
        if content_type == "application/vnd.kubernetes.protobuf":
            try:
                return decode_object(req.body)
            except ProtobufError as e:
                raise ApiError(415, "UnsupportedMediaType", str(e)) from e
        if "protobuf" in content_type or "cbor" in content_type:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - "
                "accepted media types include: application/json, application/yaml",
            )
        text = req.body.decode("utf-8", errors="replace")
        try:
            return json.loads(text)
        except ValueError:
            if not (yaml_ok or "yaml" in content_type):
                raise bad_request("the body of the request is not valid JSON") from None
        try:
            from ruamel.yaml import YAML
            from ruamel.yaml.error import YAMLError

            return YAML(typ="safe", pure=True).load(text)
        except YAMLError as e:
            raise bad_request(f"the body of the request is not valid YAML: {e}") from e

    def _selection(self, req: Request, rt: ResourceType) -> Selection:
        labels = parse_label_selector(req.param("labelSelector"))
        fields = parse_field_selector(req.param("fieldSelector"), rt)
        return Selection(tuple(labels), tuple(fields))

    def _resource(
        self, req: Request, route: _Route, verb: str, dry_run: bool, alive: Callable[[], bool]
    ) -> Response:
        store, rt = self.store, route.rt
        accept = req.header("Accept", "")
        if accept and "json" not in accept and "*/*" not in accept and "yaml" not in accept:
            raise ApiError(
                406,
                "NotAcceptable",
                "only the following media types are accepted: application/json, application/yaml",
            )
        if verb == "get":
            obj = store.get(rt, route.namespace, route.name)
            if _wants_table(accept):
                return _reply(
                    to_table(
                        rt,
                        [obj],
                        {"resourceVersion": obj["metadata"].get("resourceVersion", "")},
                        req.param("includeObject"),
                    )
                )
            return _reply(_partial(obj) if _wants_partial(accept) else obj)
        if verb == "list":
            limit_text = req.param("limit") or "0"
            if not limit_text.isdigit():
                raise bad_request(f'limit: Invalid value: "{limit_text}"')
            listed = store.list_objects(
                rt,
                route.namespace,
                self._selection(req, rt),
                limit=int(limit_text),
                continue_token=req.param("continue") or None,
            )
            if _wants_table(accept):
                return _reply(to_table(rt, listed["items"], listed["metadata"], req.param("includeObject")))
            if _wants_partial(accept):
                items = [_partial(item) for item in listed["items"]]
                return _reply(
                    {
                        "kind": "PartialObjectMetadataList",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": listed["metadata"],
                        "items": items,
                    }
                )
            return _reply(listed)
        if verb == "watch":
            return self._watch(req, route, accept, alive)
        if verb == "create":
            manager = self._manager(req, verb)
            obj = store.create(rt, route.namespace, self._body(req), manager=manager, dry_run=dry_run)
            return _reply(obj, 201)
        if verb == "update":
            manager = self._manager(req, verb)
            obj = store.update(
                rt,
                route.namespace,
                route.name,
                self._body(req),
                manager=manager,
                dry_run=dry_run,
                subresource=route.subresource,
            )
            return _reply(obj)
        if verb in ("patch", "apply"):
            content_type = req.header("Content-Type", "").split(";")[0].strip()
            if content_type not in PATCH_TYPES:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - "
                    f"accepted media types include: {', '.join(PATCH_TYPES)}",
                )
            force = req.flag("force")
            if force and verb != "apply":
                raise self._invalid_options(
                    verb, "force", "Forbidden: may not be specified for non-apply patch"
                )
            manager = self._manager(req, verb)
            result = store.patch(
                rt,
                route.namespace,
                route.name,
                content_type,
                self._body(req, yaml_ok=verb == "apply"),
                manager=manager,
                dry_run=dry_run,
                force=force,
                subresource=route.subresource,
            )
            return _reply(result.obj, 201 if result.created else 200)
        if verb == "delete":
            options = self._body(req) if req.body.strip() else {}
            if not isinstance(options, dict):
                raise bad_request("the body of a DELETE is not DeleteOptions")
            obj = store.delete(
                rt, route.namespace, route.name, options, dry_run=dry_run or bool(options.get("dryRun"))
            )
            return _reply(obj)
        if verb == "deletecollection":
            return _reply(
                store.delete_collection(rt, route.namespace, self._selection(req, rt), dry_run=dry_run)
            )
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _watch(self, req: Request, route: _Route, accept: str, alive: Callable[[], bool]) -> Response:
        rt = route.rt
        selection = self._selection(req, rt)
        timeout_text = req.param("timeoutSeconds") or "1800"
        if not timeout_text.isdigit():
            raise bad_request(f'timeoutSeconds: Invalid value: "{timeout_text}"')
        deadline = time.monotonic() + int(timeout_text)
        table, partial = _wants_table(accept), _wants_partial(accept)
        include = req.param("includeObject")

        def frame(kind: str, obj: Obj) -> bytes:
            if table and kind != "ERROR":
                obj = to_table(
                    rt, [obj], {"resourceVersion": obj["metadata"].get("resourceVersion", "")}, include
                )
            elif partial and kind != "ERROR":
                obj = _partial(obj)
            return _json_bytes({"type": kind, "object": obj}) + b"\n"

        def stream() -> Iterator[bytes]:
            try:
                cursor, initial = self.store.watch_start(
                    rt, route.namespace, selection, req.param("resourceVersion") or None
                )
            except ApiError as e:
                yield frame("ERROR", e.status())
                return
            if initial:
                yield b"".join(frame(kind, obj) for kind, obj in initial)
            else:
                yield b""
            while not self.stopping.is_set() and time.monotonic() < deadline and alive():
                try:
                    cursor, events = self.store.watch_next(
                        rt, route.namespace, selection, cursor, min(deadline, time.monotonic() + 2.0)
                    )
                except ApiError as e:
                    yield frame("ERROR", e.status())
                    return
                if events:
                    yield b"".join(frame(kind, obj) for kind, obj in events)

        return Response(200, stream=stream())


# ---------------------------------------------------------------------------------------------
# HTTP


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App, ssl_context: ssl.SSLContext | None) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.ssl_context = ssl_context
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def track(self, conn: socket.socket, *, instead_of: socket.socket) -> None:
        # Wrapping a socket in TLS detaches the original, which can then no longer be shut down.
        with self.connections_lock:
            self.connections.discard(instead_of)
            self.connections.add(conn)

    def forget(self, conn: socket.socket) -> None:
        with self.connections_lock:
            self.connections.discard(conn)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up or fails the TLS handshake is routine for a test server.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 600
    server: _HttpServer

    def setup(self) -> None:
        if self.server.ssl_context is not None:
            # The handshake runs here, on the connection's own thread, not in the accept loop.
            raw = self.request
            self.request = self.server.ssl_context.wrap_socket(raw, server_side=True)
            self.server.track(self.request, instead_of=raw)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.server.ssl_context is not None:
                self.server.forget(self.request)
                with contextlib.suppress(OSError):
                    self.request.close()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length else b""

    def _alive(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if readable:
                return bool(self.connection.recv(1, socket.MSG_PEEK))
        except (OSError, ValueError):
            return False
        return True

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._write(Response(400, _json_bytes(bad_request("unreadable request body").status())))
            return
        url = urlsplit(self.path)
        request = Request(
            self.command,
            url.path,
            parse_qs(url.query, keep_blank_values=True),
            {name.lower(): value for name, value in self.headers.items()},
            body,
        )
        try:
            response = self.server.app.handle(request, self._alive)
        except Exception as e:  # a bug must not take the connection's thread down silently
            status = ApiError(500, "InternalError", f"Internal error occurred: {e!r}").status()
            response = Response(500, _json_bytes(status))
            self.server.handle_error(self.request, self.client_address)
        self._write(response)

    def _head(self, response: Response, extra: list[tuple[str, str]]) -> bytes:
        reason = self.responses.get(response.code, ("",))[0]
        lines = [
            f"HTTP/1.1 {response.code} {reason}",
            f"Content-Type: {response.content_type}",
            "Cache-Control: no-cache, private",
        ]
        lines += [f"{k}: {v}" for k, v in extra]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _write(self, response: Response) -> None:
        if response.stream is None:
            head = self._head(response, [("Content-Length", str(len(response.body)))])
            self.wfile.write(head + (b"" if self.command == "HEAD" else response.body))
            return
        self.wfile.write(self._head(response, [("Transfer-Encoding", "chunked")]))
        try:
            for chunk in response.stream:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        finally:
            close = getattr(response.stream, "close", None)
            if close is not None:
                close()


# ---------------------------------------------------------------------------------------------
# The Python API


class ApiServer:
    """The test API server in a background thread.

        with ApiServer(tokens={"secret": "admin"}) as server:
            server.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
            url = server.url  # e.g. http://127.0.0.1:40123

    `tokens` maps bearer tokens to "admin" or "read-only"; None or {} serves everyone as admin.
    `tls_cert`/`tls_key` turn on HTTPS. `state_file`, when given, is loaded on start if it
    exists and written on stop and every `save_interval` seconds when something changed.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens: Mapping[str, str] | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        history_size: int = 10_000,
        state_file: str | Path | None = None,
        save_interval: float = 2.0,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        self.host = host
        self.requested_port = port
        self.tls_cert = Path(tls_cert) if tls_cert else None
        self.tls_key = Path(tls_key) if tls_key else None
        self.state_file = Path(state_file) if state_file else None
        self.save_interval = save_interval
        self.store = Store(history_size=history_size)
        if self.state_file is not None and self.state_file.exists():
            self.store.load(json.loads(self.state_file.read_text()))
        self.app = App(self.store, tokens)
        self._http: _HttpServer | None = None
        self._threads: list[threading.Thread] = []
        self._saved_rv = self.store.rv

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Listen and serve in the background; returns the base URL."""
        if self._http is not None:
            return self.url
        context = None
        if self.tls_cert is not None and self.tls_key is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.tls_cert, self.tls_key)
            context.set_alpn_protocols(["http/1.1"])
        self._http = _HttpServer((self.host, self.requested_port), self.app, context)
        self.app.address = f"{self._format_host()}:{self.port}"
        self.app.stopping.clear()
        serve = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.2}, name="apiserver", daemon=True
        )
        serve.start()
        self._threads = [serve]
        if self.state_file is not None:
            saver = threading.Thread(target=self._save_loop, name="apiserver-state", daemon=True)
            saver.start()
            self._threads.append(saver)
        return self.url

    def stop(self) -> None:
        """Stop serving: end watches, close connections, save the state file."""
        if self._http is None:
            return
        self.app.stopping.set()
        self.store.close()
        self._http.shutdown()
        self._http.close_connections()
        self._http.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._http = None
        self.store.closed = False
        self.save_state()

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _format_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError("the API server is not started")
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self._format_host()}:{self.port}"

    def save_state(self) -> None:
        if self.state_file is None:
            return
        state = self.store.dump()
        temporary = self.state_file.with_name(self.state_file.name + ".tmp")
        temporary.write_text(json.dumps(state))
        temporary.replace(self.state_file)
        self._saved_rv = int(state["resourceVersion"])

    def _save_loop(self) -> None:
        while not self.app.stopping.wait(self.save_interval):
            if self.store.rv != self._saved_rv:
                self.save_state()

    # -- statistics --------------------------------------------------------------------------

    def stats(self) -> RequestStats:
        return self.app.stats()

    def reset_stats(self) -> None:
        self.app.reset_stats()

    # -- direct access, no HTTP --------------------------------------------------------------

    def kubeconfig(self, token: str | None = None, *, insecure: bool = True) -> str:
        """A kubeconfig for this server (JSON, which kubectl reads as YAML)."""
        cluster: Obj = {"server": self.url}
        if self.tls_cert is not None and insecure:
            cluster["insecure-skip-tls-verify"] = True
        user: Obj = {"token": token} if token else {}
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fleet-test", "cluster": cluster}],
                "users": [{"name": "fleet-test", "user": user}],
                "contexts": [
                    {"name": "fleet-test", "context": {"cluster": "fleet-test", "user": "fleet-test"}}
                ],
                "current-context": "fleet-test",
            },
            indent=2,
        )

    def _type(self, api_version: str, kind: str) -> ResourceType:
        return self.store.type_for(api_version, kind)

    @staticmethod
    def _copy(obj: Obj) -> Obj:
        copied: Obj = json.loads(json.dumps(obj))
        return copied

    def create(self, obj: Mapping[str, Any], *, manager: str = "fleet-seed") -> Obj:
        """Create `obj` as a POST would; raises ApiError (e.g. 409 AlreadyExists)."""
        rt = self._type(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        namespace = str((obj.get("metadata") or {}).get("namespace") or ("default" if rt.namespaced else ""))
        return self._copy(self.store.create(rt, namespace, self._copy(dict(obj)), manager=manager))

    def apply(self, obj: Mapping[str, Any], *, manager: str = "fleet-seed", force: bool = True) -> Obj:
        """Server-side apply `obj` as `manager`."""
        rt = self._type(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or ("default" if rt.namespaced else ""))
        result = self.store.patch(
            rt,
            namespace,
            str(meta.get("name", "")),
            APPLY_PATCH,
            self._copy(dict(obj)),
            manager=manager,
            force=force,
        )
        return self._copy(result.obj)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        rt = self._type(api_version, kind)
        found = self.store.find(rt, (namespace or "default") if rt.namespaced else "", name)
        return None if found is None else self._copy(found)

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        rt = self._type(api_version, kind)
        selection = Selection(tuple(parse_label_selector(label_selector)))
        items: list[Obj] = self.store.list_objects(rt, namespace or "", selection)["items"]
        return [self._copy(item) for item in items]

    def patch_status(
        self,
        api_version: str,
        kind: str,
        name: str,
        status: Mapping[str, Any],
        namespace: str | None = None,
        *,
        manager: str = "fleet-seed",
    ) -> Obj:
        """Merge-patch `status` into the object's status through its status subresource."""
        rt = self._type(api_version, kind)
        namespace = (namespace or "default") if rt.namespaced else ""
        result = self.store.patch(
            rt,
            namespace,
            name,
            "application/merge-patch+json",
            {"status": self._copy(dict(status))},
            manager=manager,
            subresource="status" if rt.status_subresource else "",
        )
        return self._copy(result.obj)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        rt = self._type(api_version, kind)
        self.store.delete(rt, (namespace or "default") if rt.namespaced else "", name)


# ---------------------------------------------------------------------------------------------
# Command line


def load_seed(server: ApiServer, path: str | Path) -> int:
    """Create the objects of a seed file (a JSON list of objects, or a List's `items`) in order.

    An object that already exists (kept in the state file) is left as it is. A status the create
    dropped (kinds with a status subresource other than Nodes) is written through the status
    subresource. Returns how many objects were created; raises ValueError for a bad file."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read seed file {path}: {e}") from e
    items = document.get("items") if isinstance(document, dict) else document
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError(f"seed file {path}: expected a JSON list of objects (or a List with items)")
    created = 0
    for index, obj in enumerate(items):
        try:
            made = server.create(obj)
        except ApiError as e:
            if e.reason == "AlreadyExists":
                continue
            raise ValueError(f"seed file {path}: object {index}: {e.message}") from e
        created += 1
        status = obj.get("status")
        if isinstance(status, dict) and status and made.get("status") != status:
            meta = made["metadata"]
            server.patch_status(
                str(made["apiVersion"]), str(made["kind"]), meta["name"], status, meta.get("namespace")
            )
    return created


def write_ready_file(path: str | Path, url: str, ca: Path | None) -> None:
    """{"url", "pid", "ca"}, written so a reader sees all of it or nothing."""
    payload = {"url": url, "pid": os.getpid(), "ca": None if ca is None else str(ca.resolve())}
    write_json_atomically(Path(path), payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.apiserver.server", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve until SIGTERM or SIGINT")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument(
        "--port", type=int, default=0, help="0 picks a free port (the printed URL tells which)"
    )
    serve.add_argument("--token", action="append", default=[], help="an admin bearer token (repeatable)")
    serve.add_argument(
        "--read-only-token", action="append", default=[], help="a read-only bearer token (repeatable)"
    )
    serve.add_argument("--tls-cert", help="PEM certificate (with --tls-key): serve HTTPS")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument(
        "--self-signed-tls",
        metavar="DIR",
        help="make a self-signed certificate for --host into DIR/tls.crt and DIR/tls.key (0600) "
        "and serve HTTPS with it; clients use DIR/tls.crt as their CA",
    )
    serve.add_argument("--state-file", help="JSON file holding every object across restarts")
    serve.add_argument(
        "--seed",
        metavar="FILE",
        help="a JSON list of objects to create before serving (those already in the state file are kept)",
    )
    serve.add_argument(
        "--ready-file",
        metavar="PATH",
        help='once serving, write {"url": ..., "pid": ..., "ca": <certificate path or null>} to PATH '
        "(atomically: it appears complete or not at all)",
    )
    serve.add_argument("--history-size", type=int, default=10_000, help="watch events kept for resumption")
    args = parser.parse_args(argv)
    if args.self_signed_tls and (args.tls_cert or args.tls_key):
        parser.error("--self-signed-tls makes its own certificate: leave out --tls-cert and --tls-key")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.ready_file:  # a file left by a server that was killed must not look like this one's
        with contextlib.suppress(FileNotFoundError):
            Path(args.ready_file).unlink()
    tls_cert, tls_key = args.tls_cert, args.tls_key
    if args.self_signed_tls:
        from lab.apiserver.tls import self_signed_certificate

        try:
            tls_cert, tls_key = self_signed_certificate(args.self_signed_tls, args.host)
        except (OSError, RuntimeError) as e:
            parser.exit(2, f"{parser.prog}: cannot make a self-signed certificate: {e}\n")
    tokens = {token: "admin" for token in args.token}
    tokens.update({token: "read-only" for token in args.read_only_token})
    server = ApiServer(
        args.host,
        args.port,
        tokens=tokens,
        tls_cert=tls_cert,
        tls_key=tls_key,
        history_size=args.history_size,
        state_file=args.state_file,
    )
    if args.seed:
        try:
            load_seed(server, args.seed)
        except ValueError as e:
            parser.exit(2, f"{parser.prog}: {e}\n")
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    url = server.start()
    print(url, flush=True)
    if args.ready_file:
        write_ready_file(args.ready_file, url, server.tls_cert)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        if args.ready_file:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(Path(args.ready_file).read_text()).get("pid") == os.getpid():
                    Path(args.ready_file).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
