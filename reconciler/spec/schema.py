"""JSON Schemas (2020-12) of every kind, generated from the models.

`schemas/` in the repo is the output of `fleet schema --write schemas/`; a test
fails when the two differ, so editors always check against the real model.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from reconciler.spec import models

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_file_name(kind: str) -> str:
    return f"{kind.lower()}.schema.json"


def kind_schema(kind: str) -> dict[str, Any]:
    model = models.KINDS[kind]
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"https://fleet.dev/schemas/{models.API_VERSION}/{schema_file_name(kind)}",
        "title": f"fleet {kind}",
        "description": (model.__doc__ or kind).strip().splitlines()[0],
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def all_schemas() -> dict[str, str]:
    """File name -> file content, for every kind."""
    return {schema_file_name(kind): render(kind_schema(kind)) for kind in models.KINDS}


# --- explain: a field of a kind, as `kubectl explain` shows one -------------------------------


@dataclasses.dataclass(frozen=True)
class Explained:
    kind: str
    path: tuple[str, ...]
    type: str
    required: bool
    description: str
    default: Any
    has_default: bool
    allowed: tuple[Any, ...]
    fields: tuple[tuple[str, str, bool, str], ...]  # (name, type, required, first line of its description)


class UnknownField(LookupError):
    def __init__(self, field: str, known: Sequence[str]) -> None:
        super().__init__(field)
        self.field = field
        self.known = tuple(known)


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The schema a node stands for: its $ref followed, the null of an optional field dropped."""
    while True:
        if "$ref" in node:
            merged = {
                **defs[node["$ref"].rsplit("/", 1)[1]],
                **{k: v for k, v in node.items() if k != "$ref"},
            }
            node = merged
            continue
        options = [o for o in node.get("anyOf", ()) if o.get("type") != "null"]
        if "anyOf" in node and len(options) == 1:
            node = {**options[0], **{k: v for k, v in node.items() if k != "anyOf"}}
            continue
        return node


def _type_name(node: dict[str, Any], defs: dict[str, Any]) -> str:
    node = _resolve(node, defs)
    if "enum" in node or "const" in node:
        return "string"
    if "anyOf" in node:
        return "|".join(_type_name(o, defs) for o in node["anyOf"] if o.get("type") != "null")
    kind = node.get("type")
    if kind == "array":
        return f"[]{_type_name(node.get('items', {}), defs)}"
    if kind == "object":
        if "properties" in node:
            return "object"
        values = node.get("additionalProperties") or next(
            iter(node.get("patternProperties", {}).values()), None
        )
        return f"map[string]{_type_name(values, defs) if isinstance(values, dict) else 'any'}"
    if isinstance(kind, list):
        return "quantity" if "pattern" in node and "number" in kind else "|".join(map(str, kind))
    return str(kind or "any")


def _element(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """What a list holds (its fields are what a path goes on into), or the node itself."""
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        return _resolve(node["items"], defs)
    return node


def explain(kind: str, path: Sequence[str]) -> Explained:
    """The field at `path` of `kind` (`spec.queue.deserved`), from the schema of its model."""
    schema = kind_schema(kind)
    defs = schema.get("$defs", {})
    node, required = _resolve(schema, defs), True
    for index, name in enumerate(path):
        node = _element(node, defs)
        properties = node.get("properties")
        if not isinstance(properties, dict) or name not in properties:
            raise UnknownField(".".join(path[: index + 1]), sorted(properties or ()))
        required = name in node.get("required", ())
        node = {**properties[name]}
        resolved = _resolve(node, defs)
        node = {**resolved, **{k: v for k, v in node.items() if k in ("description", "default")}}
    element = _element(node, defs)
    fields = tuple(
        (
            name,
            _type_name(child, defs),
            name in element.get("required", ()),
            (_resolve(child, defs).get("description") or child.get("description") or "").split("\n")[0],
        )
        for name, child in sorted((element.get("properties") or {}).items())
    )
    allowed = tuple(node.get("enum", ())) or ((node["const"],) if "const" in node else ())
    return Explained(
        kind,
        tuple(path),
        "object" if node.get("properties") else _type_name(node, defs),
        required,
        str(node.get("description") or ("" if path else schema.get("description")) or ""),
        node.get("default"),
        "default" in node,
        allowed,
        fields,
    )
