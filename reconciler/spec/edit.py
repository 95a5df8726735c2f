"""Edit values in a spec file's text so that only the lines of the edited fields change.

Comments, key order, quoting, indentation, blank lines and `---` separators all stay as they
were. ruamel.yaml's round-trip dump is not used to write: it re-flows long lines, re-indents
sequences and re-spaces comments it did not parse itself, so a one-field edit would rewrite
lines nobody asked about. Instead the documents being edited are composed with ruamel through
the loader (`yamlload.compose_documents`), whose nodes know where they start and end, and each
edit is one of three line-local operations:

- replace the span of one scalar (a field the spec writes);
- insert one `key: value` line into its mapping, at the mapping's indentation and after the key
  that comes before it in the model (a field the spec left at its default);
- remove one `key: value` line (a map entry that is gone live, such as a label).

A new scalar keeps the old one's style (plain, 'single' or "double" quotes; a quantity keeps its
unit, `48Gi` stays in `Mi` if the spec wrote `32768Mi`) when YAML 1.2 reads it back as the same
value, and is double-quoted otherwise, so a string that looks like a number, a boolean or null
is always quoted; so is one only YAML 1.1 readers take for a boolean or number (`yes`, `010`),
unless the spec already writes such a word plain there (`power: on`). Every edited text is read
back whole with the loader and must hold exactly the old documents with the edited values: an
edit that would change anything else, or that cannot be written safely (an anchored or aliased
value, a block scalar, a collection), is refused with the reason, never written. This module
never reads or writes files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

from ruamel.yaml.error import StreamMark
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver

from reconciler.spec.diagnostics import Diagnostic, YamlPath
from reconciler.spec.quantity import QuantityError, canonical_quantity, parse_quantity
from reconciler.spec.yamlload import compose_documents, load_yaml, load_yaml_reference


class _Remove:
    def __repr__(self) -> str:
        return "REMOVE"


REMOVE: Final[Any] = _Remove()
"""The value of a `FieldEdit` that removes its key from its mapping."""

_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
_STR_TAG = "tag:yaml.org,2002:str"
_QUOTES = ("'", '"')
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_SUFFIX = re.compile(r"^[+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


@dataclasses.dataclass(frozen=True, slots=True)
class FieldEdit:
    """One value to write into one document of a file.

    `path` goes from the document's root (`("spec", "members", 3, "labels", "zone")`); `value` is
    a JSON scalar, or `REMOVE` to delete the key. `quantity` marks a Kubernetes quantity, written
    in the old value's unit when that is exact. `siblings` are the keys of the parent mapping in
    the order the model declares them: an inserted key goes after the last one before it."""

    doc_index: int
    path: YamlPath
    value: Any
    quantity: bool = False
    siblings: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class EditedText:
    """The new text, and per edit (by position in the request) its 1-based line in the new text,
    or why it was not written."""

    text: str
    lines: dict[int, int]
    refused: dict[int, str]


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class _Operation:
    start: int
    end: int
    replacement: str
    edit: int


def show_path(path: YamlPath) -> str:
    """`spec.members[3].labels.zone`: a field path as the loader's diagnostics write it."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def edit_spec_text(path: str, text: str, edits: Sequence[FieldEdit]) -> EditedText:
    """Apply `edits` to the text of the spec file `path`; see the module docstring.

    Edits that cannot be written are refused one by one (`EditedText.refused`); the others are
    written. The text must be a readable YAML file (the loader's own input)."""
    nodes, failure = _compose_edited(path, text, {edit.doc_index for edit in edits})
    if failure is not None:
        reason = f"{path}:{failure.line}:{failure.col}: {failure.message}"
        return EditedText(text, {}, dict.fromkeys(range(len(edits)), reason))
    newline = "\r\n" if "\r\n" in text else "\n"
    operations: list[_Operation] = []
    refused: dict[int, str] = {}
    for number, edit in enumerate(edits):
        try:
            operations.append(_operation(path, text, nodes, edit, number, newline))
        except _Refused as exc:
            refused[number] = exc.reason
    operations = _without_overlaps(operations, refused, path)
    new_text, lines = _apply(text, operations)
    wrong = _check(path, text, new_text, [(i, edits[i]) for i in lines])
    if wrong is not None:
        # Should not happen; if it does, nothing of the file is written rather than a wrong value.
        for number in lines:
            refused[number] = wrong
        return EditedText(text, {}, refused)
    return EditedText(new_text, lines, refused)


# --- composing only the documents edited -------------------------------------------------

# A line that starts a document. Composing a file of 100 documents to edit 10 of them costs ten
# times what it must (ruamel's composer is pure Python): the edited documents are composed alone.
_DOCUMENT_START = re.compile(r"^---(?=[ \t\r\n]|$)", re.M)
_NOT_SPLIT = re.compile(r"^(?:\.\.\.|%)", re.M)  # document ends and directives: compose the whole file


def _compose_edited(path: str, text: str, wanted: set[int]) -> tuple[dict[int, Node], Diagnostic | None]:
    """The composed nodes of the documents `wanted` (by index in the file), with marks that are
    positions in the whole text. A file with document-end markers or directives, or whose split
    does not compose to one document a piece, is composed whole. (Whatever is written is read
    back whole in `_check`, so a wrong split could only refuse an edit, never misplace one.)"""
    starts = [m.start() for m in _DOCUMENT_START.finditer(text)]
    if _NOT_SPLIT.search(text) or not starts:
        return _compose_whole(path, text)
    head = text[: starts[0]]
    bounds = [(0, starts[0])] if _has_content(head) else []
    bounds += list(zip(starts, [*starts[1:], len(text)], strict=True))
    found: dict[int, Node] = {}
    for index in sorted(wanted):
        if not 0 <= index < len(bounds):
            continue
        start, end = bounds[index]
        nodes, failure = compose_documents(path, text[start:end], fast=True)
        if failure is not None or len(nodes) != 1:
            return _compose_whole(path, text)
        _shift(nodes[0], start, text.count("\n", 0, start))
        found[index] = nodes[0]
    return found, None


def _compose_whole(path: str, text: str) -> tuple[dict[int, Node], Diagnostic | None]:
    nodes, failure = compose_documents(path, text, fast=True)
    return dict(enumerate(nodes)), failure


def _has_content(text: str) -> bool:
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


def _shift(root: Node, index: int, line: int) -> None:
    """Give every node of a document composed alone the marks of where it is in the whole text
    (libyaml's marks cannot be changed: they are replaced)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        start, end = node.start_mark, node.end_mark
        node.start_mark = StreamMark(start.name, start.index + index, start.line + line, start.column)
        node.end_mark = StreamMark(end.name, end.index + index, end.line + line, end.column)
        if isinstance(node, MappingNode):
            stack.extend(part for pair in node.value for part in pair)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)


# --- planning one edit -------------------------------------------------------------------


def _operation(
    path: str, text: str, nodes: Mapping[int, Node], edit: FieldEdit, number: int, newline: str
) -> _Operation:
    where = f"{path}: {show_path(edit.path)}"
    if not edit.path:
        raise _Refused(f"{where}: a whole document is never replaced")
    if edit.doc_index not in nodes:
        raise _Refused(f"{path}: there is no document {edit.doc_index + 1} in the file")
    node: Node = nodes[edit.doc_index]
    parent: MappingNode | None = None
    key_node: ScalarNode | None = None
    flow = False  # inside a flow collection ([a, b], {a: b}), where a plain scalar may hold no comma
    for depth, part in enumerate(edit.path):
        _refuse_shared(text, node, path, edit.path[:depth])
        flow = flow or bool(getattr(node, "flow_style", False))
        if isinstance(node, MappingNode) and isinstance(part, str):
            found = _find_key(node, part)
            if found is None:
                if depth < len(edit.path) - 1:
                    raise _Refused(f"{where}: the file has no {show_path(edit.path[: depth + 1])}")
                if edit.value is REMOVE:
                    raise _Refused(
                        f"{where}: the key is not written in the file, so there is nothing to remove"
                    )
                return _insert(path, text, node, part, edit, number, newline)
            parent, key_node, node = node, found[0], found[1]
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            parent, key_node, node = None, None, node.value[part]
        else:
            raise _Refused(f"{where}: the file has no {show_path(edit.path[: depth + 1])}")
    _refuse_shared(text, node, path, edit.path)
    if edit.value is REMOVE:
        if parent is None or key_node is None:
            raise _Refused(f"{where}: only a key of a mapping can be removed")
        return _remove(path, text, parent, key_node, node, number)
    return _replace(path, text, node, edit, number, flow)


def _refuse_shared(text: str, node: Node, path: str, at: YamlPath) -> None:
    """An anchored node (or an alias of one, which is the same node) is shared: editing it would
    change every place that refers to it."""
    start = node.start_mark.index
    if text.startswith("&", start):
        anchor = re.match(r"&(\S+)", text[start : start + 256])
        name = anchor.group(1) if anchor else ""
        raise _Refused(
            f"{path}: {show_path(at) or 'the document'} is shared through the YAML anchor &{name};"
            " edit it by hand where the anchor is defined"
        )


def _find_key(mapping: MappingNode, key: str) -> tuple[ScalarNode, Node] | None:
    for key_node, value in mapping.value:
        if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE_TAG and key_node.value == key:
            return key_node, value
    return None


def _replace(path: str, text: str, node: Node, edit: FieldEdit, number: int, flow: bool) -> _Operation:
    where = f"{path}:{node.start_mark.line + 1}: {show_path(edit.path)}"
    if not isinstance(node, ScalarNode):
        raise _Refused(f"{where}: the spec holds a list or mapping there, not a single value")
    start, end = node.start_mark.index, node.end_mark.index
    style = node.style or None  # plain: None from the reference composer, "" from libyaml
    if style not in (None, *_QUOTES):
        raise _Refused(f"{where}: written as a block scalar (| or >); edit it by hand")
    if start == end or text[start] in "!&*":
        raise _Refused(f"{where}: written empty or with a tag; edit it by hand")
    value = edit.value
    if edit.quantity:
        value = _in_unit(value, node)
    yaml11_words = style is None and not is_yaml11_string(str(node.value))
    rendered = render_scalar(value, style, flow=flow, yaml11_words=yaml11_words)
    if rendered is None:
        raise _Refused(f"{where}: {value!r} cannot be written as a YAML scalar that reads back the same")
    return _Operation(start, end, rendered, number)


def _remove(
    path: str, text: str, parent: MappingNode, key_node: ScalarNode, value: Node, number: int
) -> _Operation:
    line = key_node.start_mark.line + 1
    where = f"{path}:{line}: {key_node.value}"
    if parent.flow_style:
        raise _Refused(f"{where}: the key is in a flow mapping ({{...}}); remove it by hand")
    if any(isinstance(k, ScalarNode) and k.tag == _MERGE_TAG for k, _ in parent.value):
        raise _Refused(f"{where}: the mapping merges another (<<), which removing a key would expose")
    if len(parent.value) < 2:
        raise _Refused(f"{where}: it is the mapping's only key; remove the mapping by hand")
    line_start = text.rfind("\n", 0, key_node.start_mark.index) + 1
    if text[line_start : key_node.start_mark.index].strip(" "):
        raise _Refused(f"{where}: the key shares its line with a list item's dash; remove it by hand")
    if _last_line(value) != key_node.start_mark.line or isinstance(value, MappingNode | SequenceNode):
        raise _Refused(f"{where}: the entry spans several lines; remove it by hand")
    line_end = text.find("\n", value.end_mark.index)
    rest = text[value.end_mark.index : line_end if line_end >= 0 else len(text)].strip()
    if rest and not rest.startswith("#"):
        raise _Refused(f"{where}: the line holds more than this entry; remove it by hand")
    return _Operation(line_start, line_end + 1 if line_end >= 0 else len(text), "", number)


def _insert(
    path: str, text: str, mapping: MappingNode, key: str, edit: FieldEdit, number: int, newline: str
) -> _Operation:
    where = f"{path}:{mapping.start_mark.line + 1}: {show_path(edit.path)}"
    if mapping.flow_style or not mapping.value:
        raise _Refused(f"{where}: the mapping is written in flow style ({{...}}); add the key by hand")
    indent = mapping.value[0][0].start_mark.column
    order = edit.siblings
    after = mapping.value[-1]
    if key in order:
        before = set(order[: order.index(key)])
        earlier = [
            pair for pair in mapping.value if isinstance(pair[0], ScalarNode) and pair[0].value in before
        ]
        if earlier:
            after = max(earlier, key=lambda pair: order.index(pair[0].value))
    last = max(_last_line(after[0]), _last_line(after[1]))
    offset = _line_offset(text, last + 1)
    prefix = ""
    if offset == len(text) and text and not text.endswith("\n"):
        prefix = newline
    key_text = render_scalar(key, None, flow=False)
    value = edit.value
    if edit.quantity:
        try:
            value = canonical_quantity(value)
        except QuantityError as exc:
            raise _Refused(f"{where}: {exc}") from None
        value = int(value) if value.isdigit() else value  # `cpu: 4`, as specs write whole numbers
    value_text = render_scalar(value, None, flow=False)
    if key_text is None or value_text is None:
        raise _Refused(f"{where}: {key}: {value!r} cannot be written as YAML that reads back the same")
    return _Operation(offset, offset, f"{prefix}{' ' * indent}{key_text}: {value_text}{newline}", number)


def _line_offset(text: str, line: int) -> int:
    """Where 0-based `line` starts (the end of the text when there are fewer lines)."""
    offset = 0
    for _ in range(line):
        found = text.find("\n", offset)
        if found < 0:
            return len(text)
        offset = found + 1
    return offset


def _last_line(node: Node) -> int:
    """The 0-based line of a node's last character."""
    if isinstance(node, ScalarNode):
        end = node.end_mark
        if node.style in ("|", ">") and end.column == 0 and end.line > node.start_mark.line:
            return int(end.line) - 1
        return int(end.line)
    if getattr(node, "flow_style", False) or not node.value:
        return int(node.end_mark.line)
    if isinstance(node, MappingNode):
        key, value = node.value[-1]
        return max(_last_line(key), _last_line(value))
    return _last_line(node.value[-1])


def _in_unit(value: Any, old: ScalarNode) -> Any:
    """A quantity in the unit the spec wrote the old one in, when exact (`49152Mi` beside
    `32768Mi`); a plain integer stays a YAML integer. Otherwise its canonical form."""
    try:
        amount, _ = parse_quantity(str(value))
        canonical = canonical_quantity(str(value))
    except QuantityError:
        return value
    match = _SUFFIX.match(old.value.strip())
    if match is None:
        return canonical
    suffix = match.group(1) or ""
    unit = Decimal(1024) ** _BINARY[suffix] if suffix in _BINARY else Decimal(10) ** _DECIMAL.get(suffix, 0)
    scaled = amount / unit
    if scaled != scaled.to_integral_value():
        return canonical
    if not suffix and not old.style and old.tag == _INT_TAG:
        return int(scaled)
    return f"{int(scaled)}{suffix}"


# --- writing scalars ---------------------------------------------------------------------


def render_scalar(value: Any, style: str | None, *, flow: bool, yaml11_words: bool = False) -> str | None:
    """`value` as a YAML scalar in `style` (None plain, ' or ") when that reads back as the same
    value and type, else double-quoted; None when no spelling does.

    A plain string is also quoted when a YAML 1.1 reader would take it for something else
    (`yes`, `off`, `010`, `1:20`), unless `yaml11_words`: the old value was written plain
    that way too (`power: on`), and the file's style is kept."""
    for candidate in _candidates(value, style):
        if (
            isinstance(value, str)
            and candidate == value
            and not yaml11_words
            and not is_yaml11_string(candidate)
        ):
            continue
        if _reads_as(candidate, _Typed(value), flow):
            return candidate
    return None


@functools.lru_cache(maxsize=4096)
def is_yaml11_string(plain: str) -> bool:
    """Whether a YAML 1.1 reader (Ansible, PyYAML) reads the plain scalar as a string too."""
    resolved = VersionedResolver(version=(1, 1)).resolve(ScalarNode, plain, (True, False))
    return bool(resolved == _STR_TAG)


def _candidates(value: Any, style: str | None) -> list[str]:
    if value is None:
        return ["null"]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, float):
        return [repr(value), json.dumps(value)]
    if not isinstance(value, str):
        return []
    single = "'" + value.replace("'", "''") + "'"
    double = [json.dumps(value, ensure_ascii=False), json.dumps(value)]
    if style == "'":
        return [single, *double]
    if style == '"':
        return double
    return [value, *double] if value and "\n" not in value else double


@dataclasses.dataclass(frozen=True, slots=True)
class _Typed:
    """A value compared with its type: True is not 1, and "1" is not 1."""

    value: Any

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Typed):
            return NotImplemented
        return type(self.value) is type(other.value) and self.value == other.value

    def __hash__(self) -> int:
        return hash((type(self.value), self.value))


@functools.lru_cache(maxsize=8192)
def _reads_as(candidate: str, expected: _Typed, flow: bool) -> bool:
    if "\n" in candidate or "\r" in candidate:
        return False
    document = f"{{k: {candidate}}}\n" if flow else f"k: {candidate}\n"
    loaded = load_yaml_reference("", document.encode("utf-8"))
    if loaded.diagnostics or len(loaded.documents) != 1:
        return False
    read = loaded.documents[0]
    return isinstance(read, dict) and list(read) == ["k"] and _Typed(read["k"]) == expected


# --- applying and checking ---------------------------------------------------------------


def _without_overlaps(operations: list[_Operation], refused: dict[int, str], path: str) -> list[_Operation]:
    kept: list[_Operation] = []
    for operation in sorted(operations, key=lambda o: (o.start, o.end, o.edit)):
        if kept and operation.start < kept[-1].end:
            refused[operation.edit] = f"{path}: the same lines are edited by another field; edit it by hand"
            continue
        kept.append(operation)
    return kept


def _apply(text: str, operations: list[_Operation]) -> tuple[str, dict[int, int]]:
    """The text with every operation done (they do not overlap), and each one's new 1-based line."""
    pieces: list[str] = []
    lines: dict[int, int] = {}
    cursor = 0
    shift = 0  # lines added so far, before the current position
    for operation in operations:
        pieces.append(text[cursor : operation.start])
        lines[operation.edit] = text.count("\n", 0, operation.start) + shift + 1
        pieces.append(operation.replacement)
        shift += operation.replacement.count("\n") - text.count("\n", operation.start, operation.end)
        cursor = operation.end
    pieces.append(text[cursor:])
    return "".join(pieces), lines


def _check(path: str, old: str, new: str, written: list[tuple[int, FieldEdit]]) -> str | None:
    """None when `new` holds exactly the documents of `old` with the written values, else why not."""
    after = load_yaml(path, new.encode("utf-8"))
    if after.diagnostics:
        first = after.diagnostics[0]
        return f"{path}:{first.line}:{first.col}: the edited file would not read: {first.message}"
    expected = load_yaml(path, old.encode("utf-8")).documents  # changed below into what must be read
    for _, edit in written:
        if edit.doc_index >= len(expected) or edit.doc_index >= len(after.documents):
            return f"{path}: the edited file would not hold the same documents"
        problem = _expect(expected, after.documents, edit)
        if problem is not None:
            return f"{path}: {show_path(edit.path)}: {problem}"
    if expected != after.documents:
        return f"{path}: editing would change other values of the file; edit it by hand"
    return None


def _expect(expected: list[Any], documents: list[Any], edit: FieldEdit) -> str | None:
    """Write the edit's value, as it reads back from the new text, into the expected documents."""
    target: Any = expected[edit.doc_index]
    read: Any = documents[edit.doc_index]
    *parents, last = edit.path
    try:
        for part in parents:
            target, read = target[part], read[part]
    except (KeyError, IndexError, TypeError):
        return "the edited file lost the field's parents"
    if edit.value is REMOVE:
        if not isinstance(target, dict) or last not in target or (isinstance(read, dict) and last in read):
            return "the key was not removed"
        del target[last]
        return None
    if not isinstance(read, dict | list):
        return "the field's parent is not a mapping or list any more"
    try:
        written = read[last]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return "the value was not written"
    if edit.quantity:
        try:
            same = parse_quantity(str(written))[0] == parse_quantity(str(edit.value))[0]
        except QuantityError:
            same = False
    else:
        same = _Typed(written) == _Typed(edit.value)
    if not same:
        return f"reads back as {written!r}, not {edit.value!r}"
    target[last] = written
    return None
