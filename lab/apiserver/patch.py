"""The three non-apply patch formats: JSON patch (RFC 6902), merge patch (RFC 7386), and
Kubernetes' strategic merge patch for built-in kinds.

Strategic merge patch follows k8s.io/apimachinery/pkg/util/strategicpatch as far as kubectl's
patches need: lists with a patch merge key merge item by item (``$patch: delete`` removes one,
``{"$patch": "replace"}`` replaces the list), lists of scalars with the merge strategy are
unions (``$deleteFromPrimitiveList/<field>`` removes values), ``$setElementOrder/<field>`` orders
the merged list, ``$retainKeys`` clears the keys it does not name, ``$patch: replace|delete`` on
a map, and null deletes. Every other list is replaced whole, as for taints and tolerations.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from lab.apiserver.managedfields import ITEM, Pattern
from lab.apiserver.resources import PatchStrategy


class PatchError(ValueError):
    """A patch that does not apply to the object (upstream answers 422, or 400 when malformed)."""

    def __init__(self, message: str, *, malformed: bool = False) -> None:
        super().__init__(message)
        self.malformed = malformed


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = merge_patch(out.get(name), value)
    return out


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer {path!r}", malformed=True)
    if not path:
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], op: str) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise PatchError(f"{op} operation does not apply: doc is missing path: /{'/'.join(parts)}")
    return node, parts[-1]


def _index(container: list[Any], part: str, op: str, *, insert: bool) -> int:
    if insert and part == "-":
        return len(container)
    if not part.isdigit():
        raise PatchError(f"{op} operation does not apply: invalid array index {part!r}")
    index = int(part)
    if index > len(container) or (not insert and index == len(container)):
        raise PatchError(f"{op} operation does not apply: index {index} out of bounds")
    return index


def _get(doc: Any, parts: list[str], op: str) -> Any:
    if not parts:
        return doc
    parent, last = _parent(doc, parts, op)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, op, insert=False)]
    raise PatchError(f"{op} operation does not apply: doc is missing key: /{'/'.join(parts)}")


def _add(doc: Any, parts: list[str], value: Any, op: str) -> Any:
    if not parts:
        return value
    parent, last = _parent(doc, parts, op)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, op, insert=True), value)
    else:
        raise PatchError(f"{op} operation does not apply: parent of /{'/'.join(parts)} is not a container")
    return doc


def _remove(doc: Any, parts: list[str], op: str) -> tuple[Any, Any]:
    if not parts:
        raise PatchError(f"{op} operation does not apply: cannot remove the root")
    parent, last = _parent(doc, parts, op)
    if isinstance(parent, dict) and last in parent:
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, op, insert=False))
    raise PatchError(f"{op} operation does not apply: doc is missing key: /{'/'.join(parts)}")


def json_patch(doc: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations", malformed=True)
    doc = copy.deepcopy(doc)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation:
            raise PatchError("a JSON patch operation must be an object with an op", malformed=True)
        op = operation["op"]
        parts = _pointer(operation.get("path"))
        if op in ("add", "replace", "test") and "value" not in operation:
            raise PatchError(f"{op} operation has no value", malformed=True)
        if op == "add":
            doc = _add(doc, parts, copy.deepcopy(operation["value"]), op)
        elif op == "remove":
            doc, _ = _remove(doc, parts, op)
        elif op == "replace":
            _get(doc, parts, op)
            if parts:
                doc, _ = _remove(doc, parts, op)
            doc = _add(doc, parts, copy.deepcopy(operation["value"]), op)
        elif op in ("move", "copy"):
            source = _pointer(operation.get("from"))
            if op == "move":
                doc, value = _remove(doc, source, op)
            else:
                value = copy.deepcopy(_get(doc, source, op))
            doc = _add(doc, parts, value, op)
        elif op == "test":
            if _get(doc, parts, op) != operation["value"]:
                raise PatchError(
                    f"testing value {operation.get('path')} failed: test operation does not apply"
                )
        else:
            raise PatchError(f"unexpected JSON patch operation {op!r}", malformed=True)
    return doc


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [
            _strip_directives(v) for v in value if not (isinstance(v, dict) and "$patch" in v and len(v) == 1)
        ]
    return value


_DELETE = object()


def strategic_merge_patch(
    original: Mapping[str, Any], patch: Any, strategies: Mapping[Pattern, PatchStrategy]
) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be an object", malformed=True)
    result = _patch_map(original, patch, (), strategies)
    if result is _DELETE:
        raise PatchError("a strategic merge patch cannot delete the whole object")
    assert isinstance(result, dict)
    return result


def _patch_map(
    original: Mapping[str, Any],
    patch: dict[str, Any],
    pattern: Pattern,
    strategies: Mapping[Pattern, PatchStrategy],
) -> Any:
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return _DELETE
    if directive is not None:
        raise PatchError(f"unknown patch type {directive!r} in map", malformed=True)
    out = dict(original)
    for name, value in patch.items():
        if name.startswith("$"):
            if name.startswith("$deleteFromPrimitiveList/"):
                target = name.split("/", 1)[1]
                current = out.get(target)
                if isinstance(current, list) and isinstance(value, list):
                    out[target] = [v for v in current if v not in value]
            continue
        if value is None:
            out.pop(name, None)
            continue
        child = (*pattern, name)
        current = out.get(name)
        if isinstance(value, dict):
            merged = _patch_map(current if isinstance(current, dict) else {}, value, child, strategies)
            if merged is _DELETE:
                out.pop(name, None)
            else:
                out[name] = merged
        elif isinstance(value, list):
            out[name] = _patch_list(current if isinstance(current, list) else [], value, child, strategies)
        else:
            out[name] = value
    for name, order in patch.items():
        if name.startswith("$setElementOrder/") and isinstance(order, list):
            target = name.split("/", 1)[1]
            current = out.get(target)
            if isinstance(current, list):
                out[target] = _reorder(current, order, strategies.get((*pattern, target)))
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _patch_list(
    original: list[Any], patch: list[Any], pattern: Pattern, strategies: Mapping[Pattern, PatchStrategy]
) -> list[Any]:
    strategy = strategies.get(pattern)
    if strategy is None or any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return list(_strip_directives(patch))
    if strategy.merge_key is None:
        out = list(original)
        out.extend(v for v in patch if v not in original)
        return out
    key = strategy.merge_key
    out = list(original)
    item_pattern = (*pattern, ITEM)
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"a list merged by {key!r} must hold objects", malformed=True)
        if key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}")
        at = next((i for i, v in enumerate(out) if isinstance(v, dict) and v.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            out = [v for v in out if not (isinstance(v, dict) and v.get(key) == item[key])]
            continue
        merged = _patch_map(out[at] if at is not None else {}, item, item_pattern, strategies)
        if merged is _DELETE:
            continue
        if at is None:
            out.append(merged)
        else:
            out[at] = merged
    return out


def _reorder(items: list[Any], order: list[Any], strategy: PatchStrategy | None) -> list[Any]:
    def position(item: Any) -> int | None:
        for at, wanted in enumerate(order):
            if strategy is not None and strategy.merge_key is not None:
                key = strategy.merge_key
                if isinstance(item, dict) and isinstance(wanted, dict) and item.get(key) == wanted.get(key):
                    return at
            elif item == wanted:
                return at
        return None

    ranked = [(position(item), at, item) for at, item in enumerate(items)]
    ordered = sorted((p, at, item) for p, at, item in ranked if p is not None)
    rest = [item for p, _, item in ranked if p is None]
    return [item for _, _, item in ordered] + rest
