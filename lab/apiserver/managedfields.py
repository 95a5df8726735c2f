"""Server-side apply field ownership, as kube-apiserver records it in `metadata.managedFields`.

A field path is a tuple of fieldsV1 keys, e.g. ``("f:spec", 'k:{"name":"web"}', "f:image")``:
``f:NAME`` for a map or struct field, ``k:{JSON}`` for an item of an associative list (keys sorted,
key fields that the schema defaults filled in, as ``protocol: TCP`` for container ports), ``v:JSON``
for an item of a set list. A field set is a set of such paths; in fieldsV1 a path that is owned
itself and also has owned children carries a ``".": {}`` entry, as upstream writes it.

What is owned follows structured-merge-diff (sigs.k8s.io/structured-merge-diff/v4):
- an Apply owns the leaves of its configuration (scalars, atomic lists and maps) and the items of
  associative and set lists it names; an Update owns what it added or changed, including the new
  maps and list items themselves (hence ``".": {}`` in Update entries);
- a write that changes a field owned by another manager conflicts unless forced (Update
  operations are always forced); the other manager then loses the field;
- an Apply that drops a field it applied before removes that field from the object unless
  another manager owns it, or something under it.

Lists are atomic unless the schema says otherwise; maps are granular unless marked atomic.
Deviation: an empty map or list in an Apply configuration is owned as a leaf (upstream owns
nothing for an empty struct), so that ``emptyDir: {}`` can be pruned like any other field.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Path = tuple[str, ...]
# A schema pattern: field names from the object root, with ITEM for "any item of this list".
Pattern = tuple[str, ...]
ITEM = "[]"


class FieldSetError(ValueError):
    """An object that cannot be turned into a field set (e.g. a list item without its key)."""


@dataclass(frozen=True, slots=True)
class ListType:
    """How a list merges: "atomic" (replaced whole), "set" (scalars, by value) or "map" (by keys)."""

    kind: str = "atomic"
    keys: tuple[str, ...] = ()
    defaults: tuple[tuple[str, Any], ...] = ()


ATOMIC = ListType()
SET = ListType("set")


def map_list(*keys: str, **defaults: Any) -> ListType:
    return ListType("map", tuple(keys), tuple(sorted(defaults.items())))


class Schema:
    """Which lists are associative and which maps atomic, by pattern; everything else is default."""

    def __init__(
        self, lists: Mapping[Pattern, ListType] | None = None, atomic_maps: Iterable[Pattern] = ()
    ) -> None:
        self.lists: dict[Pattern, ListType] = dict(lists or {})
        self.atomic_maps: frozenset[Pattern] = frozenset(atomic_maps)

    def list_type(self, pattern: Pattern) -> ListType:
        return self.lists.get(pattern, ATOMIC)

    def atomic_map(self, pattern: Pattern) -> bool:
        return pattern in self.atomic_maps


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def item_element(item: Any, list_type: ListType) -> str:
    """The path element naming one item of a set or associative list."""
    if list_type.kind == "set":
        try:
            return _value_element(item)
        except TypeError:  # unhashable: not worth caching
            return "v:" + _json(item)
    if not isinstance(item, dict):
        raise FieldSetError("associative list item is not an object")
    pairs: list[tuple[str, Any]] = []
    for name in list_type.keys:
        value = item.get(name)
        if value is None:
            default = dict(list_type.defaults).get(name)
            if default is None:
                raise FieldSetError(
                    f'associative list with keys has an element that omits key field "{name}" '
                    "(and doesn't have default value)"
                )
            value = default
        pairs.append((name, value))
    try:
        return _key_element(tuple(pairs))
    except TypeError:
        return "k:" + _json(dict(pairs))


# Elements are built for every list item of every write; the same few keys recur endlessly.
@functools.lru_cache(maxsize=65536)
def _key_element(pairs: tuple[tuple[str, Any], ...]) -> str:
    return "k:" + _json(dict(pairs))


@functools.lru_cache(maxsize=65536)
def _value_element(value: Any) -> str:
    return "v:" + _json(value)


def _index(items: list[Any], list_type: ListType) -> dict[str, Any]:
    """Items by path element, in list order; a repeated key keeps its first item."""
    out: dict[str, Any] = {}
    for item in items:
        out.setdefault(item_element(item, list_type), item)
    return out


def field_set(obj: Mapping[str, Any], schema: Schema) -> set[Path]:
    """The fields an Apply of `obj` owns."""
    out: set[Path] = set()
    for name, value in obj.items():
        # Top-level maps are structs (metadata, spec, status): empty, they own nothing.
        if value != {}:
            _set_walk(value, (name,), ("f:" + name,), schema, out)
    return out


def _set_walk(value: Any, pattern: Pattern, path: Path, schema: Schema, out: set[Path]) -> None:
    if isinstance(value, dict):
        if not value or schema.atomic_map(pattern):
            out.add(path)
            return
        for name, child in value.items():
            _set_walk(child, (*pattern, name), (*path, "f:" + name), schema, out)
    elif isinstance(value, list):
        list_type = schema.list_type(pattern)
        if list_type.kind == "atomic" or not value:
            out.add(path)
            return
        item_pattern = (*pattern, ITEM)
        for item in value:
            item_path = (*path, item_element(item, list_type))
            out.add(item_path)
            if list_type.kind == "map":
                for name, child in item.items():
                    _set_walk(child, (*item_pattern, name), (*item_path, "f:" + name), schema, out)
    else:
        out.add(path)


@dataclass(slots=True)
class Comparison:
    added: set[Path] = field(default_factory=set)
    modified: set[Path] = field(default_factory=set)
    removed: set[Path] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.modified or self.removed)


def compare(old: Mapping[str, Any], new: Mapping[str, Any], schema: Schema) -> Comparison:
    """What changed from `old` to `new`: leaves, and maps and list items that appeared or went."""
    result = Comparison()
    _compare_maps(old, new, (), (), schema, result)
    return result


def _compare_maps(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    pattern: Pattern,
    path: Path,
    schema: Schema,
    result: Comparison,
) -> None:
    for name, new_value in new.items():
        child_pattern, child_path = (*pattern, name), (*path, "f:" + name)
        if name in old:
            _compare(old[name], new_value, child_pattern, child_path, schema, result)
        else:
            _add_tree(new_value, child_pattern, child_path, schema, result.added)
    for name, old_value in old.items():
        if name not in new:
            _add_tree(old_value, (*pattern, name), (*path, "f:" + name), schema, result.removed)


def _compare(old: Any, new: Any, pattern: Pattern, path: Path, schema: Schema, result: Comparison) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        if schema.atomic_map(pattern):
            if old != new:
                result.modified.add(path)
        elif old or new:
            _compare_maps(old, new, pattern, path, schema, result)
        return
    if isinstance(old, list) and isinstance(new, list):
        list_type = schema.list_type(pattern)
        if list_type.kind == "atomic" or (not old and not new):
            if old != new:
                result.modified.add(path)
            return
        old_items, new_items = _index(old, list_type), _index(new, list_type)
        item_pattern = (*pattern, ITEM)
        for element, item in new_items.items():
            item_path = (*path, element)
            if element not in old_items:
                _add_tree(item, item_pattern, item_path, schema, result.added, list_type)
            elif list_type.kind == "map":
                _compare(old_items[element], item, item_pattern, item_path, schema, result)
        for element, item in old_items.items():
            if element not in new_items:
                _add_tree(item, item_pattern, (*path, element), schema, result.removed, list_type)
        return
    if old != new or type(old) is not type(new):
        result.modified.add(path)


def _add_tree(
    value: Any,
    pattern: Pattern,
    path: Path,
    schema: Schema,
    out: set[Path],
    item_of: ListType | None = None,
) -> None:
    out.add(path)
    if item_of is not None and item_of.kind != "map":
        return
    if isinstance(value, dict) and not schema.atomic_map(pattern):
        for name, child in value.items():
            _add_tree(child, (*pattern, name), (*path, "f:" + name), schema, out)
    elif isinstance(value, list) and value:
        list_type = schema.list_type(pattern)
        if list_type.kind != "atomic":
            item_pattern = (*pattern, ITEM)
            for element, item in _index(value, list_type).items():
                _add_tree(item, item_pattern, (*path, element), schema, out, list_type)


def merge(live: Mapping[str, Any], config: Mapping[str, Any], schema: Schema) -> dict[str, Any]:
    """`config` merged into `live` the way Apply merges; neither input is modified."""
    out = dict(live)
    for name, value in config.items():
        out[name] = _merge(live[name], value, (name,), schema) if name in live else value
    return out


def _merge(live: Any, config: Any, pattern: Pattern, schema: Schema) -> Any:
    if isinstance(live, dict) and isinstance(config, dict) and not schema.atomic_map(pattern):
        out = dict(live)
        for name, value in config.items():
            out[name] = _merge(live[name], value, (*pattern, name), schema) if name in live else value
        return out
    if isinstance(live, list) and isinstance(config, list) and live:
        list_type = schema.list_type(pattern)
        if list_type.kind != "atomic":
            return _merge_list(live, config, list_type, pattern, schema)
    return config


def _merge_list(
    live: list[Any], config: list[Any], list_type: ListType, pattern: Pattern, schema: Schema
) -> Any:
    # Upstream's order: the configuration's order, live-only items kept where they were.
    lhs, rhs = _index(live, list_type), _index(config, list_type)
    lhs_order, rhs_order = list(lhs), list(rhs)
    shared = [element for element in rhs_order if element in lhs]
    item_pattern = (*pattern, ITEM)

    def merged(element: str) -> Any:
        if list_type.kind == "map" and element in lhs:
            return _merge(lhs[element], rhs[element], item_pattern, schema)
        return rhs[element]

    out: list[Any] = []
    next_shared_at = 0
    li = ri = 0
    while li < len(lhs_order) or ri < len(rhs_order):
        next_shared = shared[next_shared_at] if next_shared_at < len(shared) else None
        if li < len(lhs_order) and ri < len(rhs_order):
            element = lhs_order[li]
            if element == rhs_order[ri]:
                out.append(merged(element))
                li += 1
                ri += 1
                next_shared_at += 1
                continue
            if element in rhs and next_shared is not None and next_shared != element:
                li += 1
                continue
        if li < len(lhs_order) and lhs_order[li] not in rhs:
            out.append(lhs[lhs_order[li]])
            li += 1
            continue
        if ri < len(rhs_order):
            element = rhs_order[ri]
            out.append(merged(element))
            ri += 1
            if element == next_shared:
                next_shared_at += 1
            continue
        li += 1  # a shared item already taken from the configuration's side
    return out


def remove_paths(
    obj: Mapping[str, Any], paths: Iterable[Path], schema: Schema, protected: set[Path]
) -> dict[str, Any]:
    """`obj` without `paths`; maps emptied by the removal go too unless `protected` names them."""
    trie: dict[str, Any] = {}
    for path in paths:
        node = trie
        for element in path:
            node = node.setdefault(element, {})
        node["."] = True
    result = _remove(obj, trie, (), (), schema, protected)
    assert isinstance(result, dict)
    return result


def _remove(
    value: Any, trie: dict[str, Any], pattern: Pattern, path: Path, schema: Schema, protected: set[Path]
) -> Any:
    if isinstance(value, dict):
        out = dict(value)
        for element, sub in trie.items():
            if not element.startswith("f:") or element[2:] not in out:
                continue
            name = element[2:]
            if "." in sub:
                del out[name]
                continue
            before = out[name]
            after = _remove(before, sub, (*pattern, name), (*path, element), schema, protected)
            if isinstance(after, dict | list) and not after and before and (*path, element) not in protected:
                del out[name]
            else:
                out[name] = after
        return out
    if isinstance(value, list):
        list_type = schema.list_type(pattern)
        if list_type.kind == "atomic":
            return value
        items: list[Any] = []
        for item in value:
            element = item_element(item, list_type)
            sub = trie.get(element)
            if sub is not None:
                if "." in sub:
                    continue
                item = _remove(item, sub, (*pattern, ITEM), (*path, element), schema, protected)
            items.append(item)
        return items
    return value


def prefixes(paths: Iterable[Path]) -> set[Path]:
    """Every path in `paths` and every ancestor of one."""
    out: set[Path] = set()
    for path in paths:
        for end in range(len(path), 0, -1):
            prefix = path[:end]
            if prefix in out:
                break
            out.add(prefix)
    return out


def to_fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in paths:
        node = root
        for element in path:
            node = node.setdefault(element, {})
        node["."] = None
    return _serialize(root)


def _serialize(node: dict[str, Any]) -> dict[str, Any]:
    children = sorted(name for name in node if name != ".")
    out: dict[str, Any] = {}
    if not children:
        return out
    if "." in node:
        out["."] = {}
    for name in children:
        out[name] = _serialize(node[name])
    return out


def from_fields_v1(tree: Any) -> set[Path]:
    if not isinstance(tree, dict):
        raise FieldSetError("fieldsV1 is not an object")
    out: set[Path] = set()
    stack: list[tuple[dict[str, Any], Path]] = [(tree, ())]
    while stack:
        node, path = stack.pop()
        for name, child in node.items():
            if name == ".":
                out.add(path)
                continue
            if not isinstance(child, dict):
                raise FieldSetError(f"fieldsV1 entry {name!r} is not an object")
            child_path = (*path, name)
            if child:
                stack.append((child, child_path))
            else:
                out.add(child_path)
    return out


def path_string(path: Path) -> str:
    """A path as upstream prints it in conflicts: ``.spec.containers[name="web"].image``."""
    parts: list[str] = []
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            parts.append("." + rest)
        elif kind == "k":
            key = json.loads(rest)
            parts.append("[" + ",".join(f"{name}={_json(value)}" for name, value in key.items()) + "]")
        elif kind == "v":
            parts.append(f"[={rest}]")
        else:
            parts.append(f"[{rest}]")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class ManagedEntry:
    """One `metadata.managedFields` entry."""

    manager: str
    operation: str
    api_version: str
    time: str | None
    fields: frozenset[Path]
    subresource: str = ""

    @property
    def identity(self) -> tuple[str, str, str, str]:
        # An applier keeps one entry across API versions; an updater has one per version.
        return (
            self.manager,
            self.operation,
            self.subresource,
            "" if self.operation == "Apply" else self.api_version,
        )

    def describe(self) -> str:
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}"
        return text

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
        }
        if self.time:
            out["time"] = self.time
        out["fieldsType"] = "FieldsV1"
        out["fieldsV1"] = to_fields_v1(self.fields)
        if self.subresource:
            out["subresource"] = self.subresource
        return out

    @classmethod
    def from_json(cls, entry: Any) -> ManagedEntry:
        if not isinstance(entry, dict):
            raise FieldSetError("managedFields entry is not an object")
        operation = entry.get("operation") or "Update"
        if operation not in ("Apply", "Update"):
            raise FieldSetError(f"managedFields operation {operation!r} is neither Apply nor Update")
        if entry.get("fieldsType", "FieldsV1") != "FieldsV1":
            raise FieldSetError(f"managedFields fieldsType {entry.get('fieldsType')!r} is not FieldsV1")
        return cls(
            manager=str(entry.get("manager") or ""),
            operation=operation,
            api_version=str(entry.get("apiVersion") or ""),
            time=entry.get("time"),
            fields=frozenset(from_fields_v1(entry.get("fieldsV1") or {})),
            subresource=str(entry.get("subresource") or ""),
        )


def sort_entries(entries: Iterable[ManagedEntry]) -> list[ManagedEntry]:
    # Upstream's order: Apply before Update, then oldest first, then by name.
    return sorted(entries, key=lambda e: (e.operation, e.time or "", e.manager, e.api_version, e.subresource))


def decode_entries(raw: Any) -> list[ManagedEntry]:
    if not raw:
        return []
    if not isinstance(raw, list):
        raise FieldSetError("metadata.managedFields is not a list")
    # An entry without a manager is how clients ask to reset the managed fields.
    return [entry for entry in map(ManagedEntry.from_json, raw) if entry.manager]


def encode_entries(entries: Iterable[ManagedEntry]) -> list[dict[str, Any]]:
    return [entry.to_json() for entry in sort_entries(entries)]


@dataclass(frozen=True, slots=True)
class Conflict:
    manager: ManagedEntry
    path: Path


class ApplyConflict(Exception):
    """An Apply would change fields other managers own; upstream answers 409 with these causes."""

    def __init__(self, conflicts: list[Conflict]) -> None:
        self.conflicts = sorted(conflicts, key=lambda c: (c.manager.describe(), path_string(c.path)))
        super().__init__(self.message())

    def message(self) -> str:
        if len(self.conflicts) == 1:
            only = self.conflicts[0]
            where = path_string(only.path)
            return f"Apply failed with 1 conflict: conflict with {only.manager.describe()}: {where}"
        lines: list[str] = []
        by_manager: dict[str, list[str]] = {}
        for conflict in self.conflicts:
            by_manager.setdefault(conflict.manager.describe(), []).append(path_string(conflict.path))
        for manager in sorted(by_manager):
            lines.append(f"conflicts with {manager}:")
            lines.extend(f"- {path}" for path in by_manager[manager])
        return f"Apply failed with {len(self.conflicts)} conflicts: " + "\n".join(lines)


def apply(
    live: Mapping[str, Any],
    config: Mapping[str, Any],
    entries: list[ManagedEntry],
    *,
    manager: str,
    api_version: str,
    force: bool,
    schema: Schema,
    now: str,
    subresource: str = "",
) -> tuple[dict[str, Any], list[ManagedEntry], bool]:
    """Apply `config` to `live` for `manager`: (new object, new entries, whether the object changed).

    Both objects leave out what the field manager ignores (apiVersion, kind, server-set
    metadata); raises ApplyConflict unless `force`.
    """
    applied = frozenset(field_set(config, schema))
    merged = merge(live, config, schema)
    me = ManagedEntry(manager, "Apply", api_version, None, applied, subresource)
    previous = next((e for e in entries if e.identity == me.identity), None)
    others = [e for e in entries if e.identity != me.identity]
    if previous is not None:
        dropped = previous.fields - applied
        if dropped:
            owned_elsewhere = set(applied)
            for other in others:
                owned_elsewhere |= other.fields
            protected = prefixes(owned_elsewhere)
            removable = [path for path in dropped if path not in protected]
            if removable:
                merged = remove_paths(merged, removable, schema, protected)
    diff = compare(live, merged, schema)
    changed = diff.added | diff.modified
    conflicts = [Conflict(other, path) for other in others for path in other.fields & changed]
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    out: list[ManagedEntry] = []
    for other in others:
        kept = other.fields - changed - diff.removed
        if kept:
            out.append(other if kept == other.fields else _with_fields(other, kept))
    time = now if diff.changed or previous is None else previous.time
    if applied:
        out.append(ManagedEntry(manager, "Apply", api_version, time, applied, subresource))
    return merged, sort_entries(out), diff.changed


def update(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    entries: list[ManagedEntry],
    *,
    manager: str,
    api_version: str,
    schema: Schema,
    now: str,
    subresource: str = "",
) -> tuple[list[ManagedEntry], bool]:
    """Record a non-apply write from `old` to `new` by `manager`: (new entries, whether it changed)."""
    diff = compare(old, new, schema)
    if not diff.changed:
        return entries, False
    changed = diff.added | diff.modified
    me = ManagedEntry(manager, "Update", api_version, now, frozenset(), subresource)
    previous: ManagedEntry | None = None
    out: list[ManagedEntry] = []
    for entry in entries:
        if entry.identity == me.identity:
            previous = entry
            continue
        kept = entry.fields - changed - diff.removed
        if kept:
            out.append(entry if kept == entry.fields else _with_fields(entry, kept))
    mine = ((previous.fields if previous else frozenset()) - diff.removed) | changed
    if mine:
        time = now if changed or previous is None else previous.time
        out.append(ManagedEntry(manager, "Update", api_version, time, frozenset(mine), subresource))
    return sort_entries(out), True


def _with_fields(entry: ManagedEntry, fields: Iterable[Path]) -> ManagedEntry:
    return ManagedEntry(
        entry.manager, entry.operation, entry.api_version, entry.time, frozenset(fields), entry.subresource
    )
