"""Decoding of the protobuf request bodies kubectl's `create <kind>` generators send.

kubectl's typed clients write `application/vnd.kubernetes.protobuf` (no JSON fallback) for
`kubectl create namespace|configmap|secret|serviceaccount|role|clusterrole|rolebinding|
clusterrolebinding|priorityclass|quota|deployment`. The body is the "k8s\\x00" magic and a
runtime.Unknown (typeMeta = 1, raw = 2) whose raw bytes are the object in the field numbering of
k8s.io/api's generated.proto. The schemas below cover those kinds' fields as far as the
generators set them; unknown fields are skipped. The generated Go code writes every non-pointer
field, so empty strings, zeros, false and empty messages are dropped here, as JSON's omitempty
would. Responses stay JSON, which kubectl's clients also accept.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """A body that is not a protobuf object this server can read."""


# A schema maps field numbers to (JSON name, how to read the value).
Reader = Callable[[list[Any]], Any]
Schema = Mapping[int, tuple[str, Reader]]


def _fields(data: bytes) -> dict[int, list[Any]]:
    """Wire-format fields: varints as ints, length-delimited as bytes (fixed widths skipped)."""
    out: dict[int, list[Any]] = {}
    at = 0

    def varint() -> int:
        nonlocal at
        shift = result = 0
        while True:
            if at >= len(data):
                raise ProtobufError("truncated varint")
            byte = data[at]
            at += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    while at < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value: Any = varint()
        elif wire == 2:
            length = varint()
            value = data[at : at + length]
            if len(value) != length:
                raise ProtobufError("truncated field")
            at += length
        elif wire == 1:
            at += 8
            continue
        elif wire == 5:
            at += 4
            continue
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _empty(value: Any) -> bool:
    return value in ("", 0, False, None) or value == {} or value == []


def message(schema: Schema) -> Reader:
    def read(values: list[Any]) -> Any:
        return decode(values[-1], schema)

    return read


def repeated(schema: Schema) -> Reader:
    def read(values: list[Any]) -> Any:
        return [decode(v, schema) for v in values]

    return read


def string(values: list[Any]) -> Any:
    return bytes(values[-1]).decode()


def strings(values: list[Any]) -> Any:
    return [bytes(v).decode() for v in values]


def integer(values: list[Any]) -> Any:
    value = int(values[-1])
    return value - (1 << 64) if value >= 1 << 63 else value


def boolean(values: list[Any]) -> Any:
    return bool(values[-1])


def _map(read_value: Callable[[bytes], Any]) -> Reader:
    def read(values: list[Any]) -> Any:
        out: dict[str, Any] = {}
        for entry in values:
            fields = _fields(entry)
            key = bytes(fields.get(1, [b""])[-1]).decode()
            out[key] = read_value(fields.get(2, [b""])[-1])
        return out

    return read


string_map = _map(lambda raw: bytes(raw).decode())
bytes_map = _map(lambda raw: base64.b64encode(bytes(raw)).decode())
# resource.Quantity is a message holding its string form.
quantity_map = _map(lambda raw: bytes(_fields(raw).get(1, [b""])[-1]).decode())


def decode(data: bytes, schema: Schema) -> dict[str, Any]:
    fields = _fields(data)
    out: dict[str, Any] = {}
    for number, (name, read) in schema.items():
        if number in fields:
            value = read(fields[number])
            if not _empty(value):
                out[name] = value
    return out


OWNER_REFERENCE: Schema = {
    5: ("apiVersion", string),
    1: ("kind", string),
    3: ("name", string),
    4: ("uid", string),
    6: ("controller", boolean),
    7: ("blockOwnerDeletion", boolean),
}
OBJECT_META: Schema = {
    1: ("name", string),
    2: ("generateName", string),
    3: ("namespace", string),
    6: ("resourceVersion", string),
    11: ("labels", string_map),
    12: ("annotations", string_map),
    13: ("ownerReferences", repeated(OWNER_REFERENCE)),
    14: ("finalizers", strings),
}
LABEL_SELECTOR: Schema = {
    1: ("matchLabels", string_map),
    2: ("matchExpressions", repeated({1: ("key", string), 2: ("operator", string), 3: ("values", strings)})),
}
POLICY_RULE: Schema = {
    1: ("verbs", strings),
    2: ("apiGroups", strings),
    3: ("resources", strings),
    4: ("resourceNames", strings),
    5: ("nonResourceURLs", strings),
}
ROLE: Schema = {
    1: ("metadata", message(OBJECT_META)),
    2: ("rules", repeated(POLICY_RULE)),
    3: ("aggregationRule", message({1: ("clusterRoleSelectors", repeated(LABEL_SELECTOR))})),
}
BINDING: Schema = {
    1: ("metadata", message(OBJECT_META)),
    2: (
        "subjects",
        repeated(
            {1: ("kind", string), 2: ("apiGroup", string), 3: ("name", string), 4: ("namespace", string)}
        ),
    ),
    3: ("roleRef", message({1: ("apiGroup", string), 2: ("kind", string), 3: ("name", string)})),
}
CONTAINER: Schema = {
    1: ("name", string),
    2: ("image", string),
    3: ("command", strings),
    4: ("args", strings),
    5: ("workingDir", string),
    6: (
        "ports",
        repeated(
            {
                1: ("name", string),
                2: ("hostPort", integer),
                3: ("containerPort", integer),
                4: ("protocol", string),
                5: ("hostIP", string),
            }
        ),
    ),
    7: ("env", repeated({1: ("name", string), 2: ("value", string)})),
    8: ("resources", message({1: ("limits", quantity_map), 2: ("requests", quantity_map)})),
    14: ("imagePullPolicy", string),
}
POD_TEMPLATE: Schema = {
    1: ("metadata", message(OBJECT_META)),
    2: (
        "spec",
        message(
            {
                2: ("containers", repeated(CONTAINER)),
                3: ("restartPolicy", string),
                8: ("serviceAccountName", string),
                20: ("initContainers", repeated(CONTAINER)),
            }
        ),
    ),
}
KINDS: dict[tuple[str, str], Schema] = {
    ("v1", "Namespace"): {
        1: ("metadata", message(OBJECT_META)),
        2: ("spec", message({1: ("finalizers", strings)})),
    },
    ("v1", "ConfigMap"): {
        1: ("metadata", message(OBJECT_META)),
        2: ("data", string_map),
        3: ("binaryData", bytes_map),
        4: ("immutable", boolean),
    },
    ("v1", "Secret"): {
        1: ("metadata", message(OBJECT_META)),
        2: ("data", bytes_map),
        3: ("type", string),
        4: ("stringData", string_map),
        5: ("immutable", boolean),
    },
    ("v1", "ServiceAccount"): {
        1: ("metadata", message(OBJECT_META)),
        3: ("imagePullSecrets", repeated({1: ("name", string)})),
        4: ("automountServiceAccountToken", boolean),
    },
    ("v1", "ResourceQuota"): {
        1: ("metadata", message(OBJECT_META)),
        2: ("spec", message({1: ("hard", quantity_map), 2: ("scopes", strings)})),
    },
    ("rbac.authorization.k8s.io/v1", "Role"): ROLE,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ROLE,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): BINDING,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): BINDING,
    ("scheduling.k8s.io/v1", "PriorityClass"): {
        1: ("metadata", message(OBJECT_META)),
        2: ("value", integer),
        3: ("globalDefault", boolean),
        4: ("description", string),
        5: ("preemptionPolicy", string),
    },
    ("apps/v1", "Deployment"): {
        1: ("metadata", message(OBJECT_META)),
        2: (
            "spec",
            message(
                {
                    1: ("replicas", integer),
                    2: ("selector", message(LABEL_SELECTOR)),
                    3: ("template", message(POD_TEMPLATE)),
                    4: ("strategy", message({1: ("type", string)})),
                    5: ("minReadySeconds", integer),
                    6: ("revisionHistoryLimit", integer),
                }
            ),
        ),
    },
}


def decode_object(body: bytes) -> dict[str, Any]:
    """The object in a kubernetes protobuf body, as the JSON it stands for."""
    if not body.startswith(MAGIC):
        raise ProtobufError("the body does not start with the kubernetes protobuf magic")
    unknown = _fields(body[len(MAGIC) :])
    type_meta = _fields(unknown.get(1, [b""])[-1])
    api_version = bytes(type_meta.get(1, [b""])[-1]).decode()
    kind = bytes(type_meta.get(2, [b""])[-1]).decode()
    schema = KINDS.get((api_version, kind))
    if schema is None:
        supported = ", ".join(sorted(k for _, k in KINDS))
        raise ProtobufError(
            f"protobuf bodies are read for {supported} only, not {kind} ({api_version}): send JSON"
        )
    obj = decode(unknown.get(2, [b""])[-1], schema)
    return {"apiVersion": api_version, "kind": kind, **obj}
