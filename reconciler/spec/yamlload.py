"""Turn the bytes of one spec file into YAML 1.2 values, or into diagnostics.

Two loaders give the same values. ruamel.yaml (YAML 1.2, pure Python) is the
reference and the only one that reports positions; it runs hardened against
hostile input (duplicate keys, alias bombs, deep nesting, unknown tags). The fast
path parses with rapidyaml (C++) to JSON and is taken only for files that use
none of the YAML features where the two could disagree: any doubt, and the file
goes to ruamel. A test proves both give equal values on every example and
corpus file. This module never reads files itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Iterator
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.resolver import VersionedResolver

from reconciler.spec.diagnostics import Diagnostic, YamlPath, error

DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64
# An alias may repeat a subtree; the document, expanded, may hold at most this many nodes
# more than it was written with. Generous for `<<: *defaults`, far below a "billion laughs".
MAX_ALIAS_EXPANSION = 100_000

_CORE_TAGS = frozenset(
    "tag:yaml.org,2002:" + t
    for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge", "timestamp")
)


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH


@dataclasses.dataclass(slots=True)
class LoadedFile:
    """The documents of one file (None for an empty document) and what went wrong."""

    path: str
    documents: list[Any]
    diagnostics: list[Diagnostic]
    fast: bool = False


# --- the fast path -----------------------------------------------------------------------


def _non_string_scalar_patterns() -> list[str]:
    """The regexes of ruamel's YAML 1.2 resolver for every tag but str, unanchored."""
    resolver = VersionedResolver(version=(1, 2))
    patterns: set[str] = set()
    for entries in resolver.versioned_resolver.values():
        for tag, regexp in entries:
            if tag != "tag:yaml.org,2002:str":
                pattern = regexp.pattern
                assert pattern.startswith("^(?:") and pattern.endswith(")$"), pattern
                patterns.add(pattern[1:-1])
    return sorted(patterns)


# Plain scalars ruamel would read as something other than a string (bool, int, float,
# null, timestamp, merge, ...). rapidyaml's JSON leaves the ones it does not know as
# strings, so a JSON string matching one of these means "maybe different": the file
# goes to ruamel. One search over the whole JSON text, keys included.
_ALTERNATIVES = "|".join(f"(?:{p})" for p in _non_string_scalar_patterns())
_NON_STRING = re.compile(f"^(?:{_ALTERNATIVES})$", re.X)
# The lookahead lists every first character of those patterns: most strings fail there.
_QUOTED_NON_STRING = re.compile(f'"(?=[-+.0-9tTfFnN~<=!&*])(?:{_ALTERNATIVES})"', re.X)
# Features the fast path leaves to ruamel: anchors, aliases, tags, merge keys,
# directives, tabs; and nested or multi-line flow collections (an opener whose line
# has no closer before the next bracket).
_REFERENCE_ONLY_MARKERS = ("\t", "<<", "\n%")
# An anchor, alias or tag starts a node: after a line start, a space or a flow indicator,
# and so do the indicators a plain scalar may not start with (rapidyaml reads `a: @x` and
# `a: ]`, YAML and ruamel reject them). Text in comments does not count; a `*` inside a
# word or a quoted path such as "playbooks/**" is neither.
_SPECIAL = re.compile(r"[&*!@`%\]}]")
_NODE_START_BEFORE = frozenset(" \t\n[{,:")


def _starts_a_node(text: str) -> bool:
    """Whether any anchor, alias, tag or reserved indicator may start a node."""
    for match in _SPECIAL.finditer(text):
        at = match.start()
        line_start = text.rfind("\n", 0, at) + 1
        if text[line_start:at].lstrip(" ").startswith("#"):
            continue
        if match.group() in "]}":
            before = text[line_start:at].rstrip(" ")
            if not before or before[-1] in ":-":
                return True
        elif at == 0 or text[at - 1] in _NODE_START_BEFORE:
            return True
    return False


_INFINITY_OR_NAN = re.compile(r'(?i)"[-+]?\.?(?:inf|nan)"')
_JSON_LITERAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null")


def _plain_non_string_in_tree(tree: Any) -> bool:
    """Whether a plain scalar of the parsed tree is one ruamel reads differently.

    A plain key ruamel resolves to a non-string differs (JSON keys are strings); a plain
    value does unless it is a JSON literal, which rapidyaml emits as that literal.
    Walking the tree is slow in Python, so it runs only when the JSON holds a candidate.
    """
    for node in range(tree.size()):
        if tree.has_key(node) and tree.is_key_plain(node):
            key = bytes(tree.key(node)).decode("utf-8")
            if _NON_STRING.match(key):
                return True
        if tree.has_val(node) and tree.is_val_plain(node):
            value = bytes(tree.val(node)).decode("utf-8")
            if value and _NON_STRING.match(value) and not _JSON_LITERAL.fullmatch(value):
                return True
    return False


# Characters YAML does not allow in a stream; ruamel reports them, rapidyaml lets them in.
# NEL and the Unicode line separators are line breaks to ruamel, text to rapidyaml.
_NON_PRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
_OPEN_FLOW = re.compile(r"[\[{][^\[\]{}\n]*+(?![\]}])")


class _Disagreement(Exception):
    """The fast path saw something where it might differ from ruamel."""


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Disagreement  # a duplicate key: ruamel reports it with its line
    return result


def _reject_constant(name: str) -> Any:
    raise _Disagreement


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """rapidyaml prints parse errors to fd 2; the reference loader reports them properly."""
    try:
        saved = os.dup(2)
    except OSError:  # pragma: no cover - no fd 2 at all
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _fast_load(data: bytes, text: str, limits: Limits) -> list[Any] | None:
    """Documents via rapidyaml, or None when the file must go to the reference loader."""
    if text.startswith("%") or any(marker in text for marker in _REFERENCE_ONLY_MARKERS):
        return None
    if _NON_PRINTABLE.search(text):
        return None
    if _starts_a_node(text):
        return None
    if _OPEN_FLOW.search(text):
        return None
    # Every block level indents by at least one space, and a mapping's sequence value
    # may share its key's column: depth <= 2 * (indent + 1) + 1 (one inline flow level).
    if "\n" + " " * max(1, (limits.max_depth - 3) // 2) in "\n" + text:
        return None
    try:
        import ryml

        with _quiet_stderr():
            tree = ryml.parse_in_arena(data)
            root = tree.root_id()
            is_stream = tree.is_stream(root)
            emitted = ryml.emit_json_malloc(tree, root)
        if emitted is None:
            return None
        if _INFINITY_OR_NAN.search(emitted):
            return None  # rapidyaml rewrites inf/nan spellings, quoted or not
        if ('"":' in emitted or _QUOTED_NON_STRING.search(emitted)) and _plain_non_string_in_tree(tree):
            return None
        loaded = json.loads(
            emitted, object_pairs_hook=_object_pairs, parse_constant=_reject_constant, strict=False
        )
    except (_Disagreement, RecursionError):
        return None
    except Exception:
        return None
    if is_stream:
        if not isinstance(loaded, list):
            return None
        documents = loaded
    else:
        documents = [loaded]
    return documents


# --- the reference path ------------------------------------------------------------------


def _reference_yaml() -> YAML:
    yaml = YAML(typ="safe", pure=True)
    yaml.allow_duplicate_keys = False
    return yaml


def _mark(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _check_nodes(path: str, root: Node, index: int, limits: Limits) -> list[Diagnostic]:
    """Tags, duplicate keys, depth and alias expansion of one composed document."""
    problems: list[Diagnostic] = []
    expanded: dict[int, int] = {}
    visiting: set[int] = set()
    written: set[int] = set()

    def size(node: Node, depth: int) -> int:
        ident = id(node)
        if ident in expanded:
            return expanded[ident]
        if depth > limits.max_depth:
            line, col = _mark(node)
            problems.append(
                error(
                    "yaml-too-deep",
                    f"document nests deeper than {limits.max_depth} levels",
                    path,
                    line=line,
                    col=col,
                    hint="flatten the structure; fleet specs never need this depth",
                    doc_index=index,
                )
            )
            raise _Stop
        if ident in visiting:
            line, col = _mark(node)
            problems.append(
                error(
                    "yaml-recursive-alias",
                    "an alias refers to a node that contains it",
                    path,
                    line=line,
                    col=col,
                    hint="remove the self-referencing alias",
                    doc_index=index,
                )
            )
            raise _Stop
        visiting.add(ident)
        written.add(ident)
        tag = node.tag
        if tag not in _CORE_TAGS:
            line, col = _mark(node)
            problems.append(
                error(
                    "yaml-unknown-tag",
                    f"tag {tag!r} is not allowed in fleet specs",
                    path,
                    line=line,
                    col=col,
                    hint="remove the tag; specs use plain YAML 1.2 values only",
                    doc_index=index,
                )
            )
        total = 1
        if isinstance(node, MappingNode):
            seen: dict[tuple[str | None, Any], int] = {}
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.tag == "tag:yaml.org,2002:null":
                    line, col = _mark(key)
                    problems.append(
                        error(
                            "empty-key",
                            "a mapping key is empty",
                            path,
                            line=line,
                            col=col,
                            hint="write the key's name before the colon",
                            doc_index=index,
                        )
                    )
                elif isinstance(key, ScalarNode):
                    marker = (key.tag, key.value)
                    if marker in seen and key.tag != "tag:yaml.org,2002:merge":
                        line, col = _mark(key)
                        problems.append(
                            error(
                                "duplicate-key",
                                f"key {key.value!r} is repeated in a mapping (first on line {seen[marker]})",
                                path,
                                line=line,
                                col=col,
                                hint="keep one of them; YAML would silently drop the other",
                                doc_index=index,
                            )
                        )
                    seen.setdefault(marker, _mark(key)[0])
                else:
                    line, col = _mark(key)
                    problems.append(
                        error(
                            "complex-key",
                            "a mapping key must be a plain scalar",
                            path,
                            line=line,
                            col=col,
                            hint="use a string key",
                            doc_index=index,
                        )
                    )
                total += size(key, depth + 1) + size(value, depth + 1)
        elif isinstance(node, SequenceNode):
            for item in node.value:
                total += size(item, depth + 1)
        visiting.discard(ident)
        expanded[ident] = total
        return total

    try:
        total = size(root, 1)
    except _Stop:
        return problems
    except RecursionError:
        line, col = _mark(root)
        return [dataclasses.replace(_unreadably_deep(path), line=line, col=col, doc_index=index)]
    if total - len(written) > MAX_ALIAS_EXPANSION:
        line, col = _mark(root)
        problems.append(
            error(
                "yaml-alias-bomb",
                f"aliases expand this document to {total:,} nodes from {len(written):,} written",
                path,
                line=line,
                col=col,
                hint="write the values out instead of repeating aliases of aliases",
                doc_index=index,
            )
        )
    return problems


class _Stop(Exception):
    pass


def _syntax_error(path: str, exc: Exception, text: str = "") -> Diagnostic:
    line = col = 1
    problem = str(exc)
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            line, col = mark.line + 1, mark.column + 1
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or problem
    elif isinstance(exc, ReaderError):
        position = max(0, min(int(exc.position), len(text)))
        line = text.count("\n", 0, position) + 1
        col = position - (text.rfind("\n", 0, position) + 1) + 1
        problem = f"character {exc.character!r} is not allowed in YAML"
    problem = " ".join(problem.split())
    return error(
        "yaml-syntax",
        f"YAML syntax error: {problem}",
        path,
        line=line,
        col=col,
        hint="fix the YAML at this position; an editor using fleet's schemas shows it as you type",
    )


def _unreadably_deep(path: str) -> Diagnostic:
    return error(
        "yaml-too-deep",
        "document nests too deeply to read",
        path,
        line=1,
        col=1,
        hint="flatten the structure",
    )


def _compose(path: str, text: str) -> tuple[list[Node], Diagnostic | None]:
    yaml = _reference_yaml()
    nodes: list[Node] = []
    try:
        for node in yaml.compose_all(text):
            nodes.append(node)
    except RecursionError:
        return nodes, _unreadably_deep(path)
    except (YAMLError, ValueError) as exc:
        return nodes, _syntax_error(path, exc, text)
    return nodes, None


def _flow_too_deep(path: str, text: str, limits: Limits) -> Diagnostic | None:
    """Deep flow nesting costs ruamel's scanner quadratic time: refuse it before parsing.
    Brackets inside quotes count too; that only makes the bound stricter."""
    if text.count("[") + text.count("{") <= limits.max_depth:
        return None
    depth = 0
    for match in _BRACKET.finditer(text):
        depth += 1 if match.group() in "[{" else -1
        if depth > limits.max_depth:
            at = match.start()
            line = text.count("\n", 0, at) + 1
            col = at - (text.rfind("\n", 0, at) + 1) + 1
            return error(
                "yaml-too-deep",
                f"flow collections nest deeper than {limits.max_depth} levels",
                path,
                line=line,
                col=col,
                hint="flatten the structure; fleet specs never need this depth",
            )
        depth = max(depth, 0)
    return None


_BRACKET = re.compile(r"[\[\]{}]")


def _reference_load(path: str, text: str, limits: Limits) -> LoadedFile:
    too_deep = _flow_too_deep(path, text, limits)
    if too_deep is not None:
        return LoadedFile(path, [], [too_deep])
    nodes, failure = _compose(path, text)
    if failure is not None:
        return LoadedFile(path, [], [failure])
    problems: list[Diagnostic] = []
    for index, node in enumerate(nodes):
        problems.extend(_check_nodes(path, node, index, limits))
    if problems:
        return LoadedFile(path, [], problems)
    yaml = _reference_yaml()
    documents: list[Any] = []
    try:
        for node in nodes:
            documents.append(yaml.constructor.construct_document(node))
    except RecursionError:
        return LoadedFile(
            path,
            [],
            [_unreadably_deep(path)],
        )
    except (YAMLError, ValueError, TypeError) as exc:
        return LoadedFile(path, [], [_syntax_error(path, exc, text)])
    return LoadedFile(path, documents, [])


# --- entry points ------------------------------------------------------------------------

_TAB_INDENT = re.compile(r"^[ ]*\t", re.M)


def _line_of_offset(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    return line, offset - start + 1


def decode(path: str, data: bytes, limits: Limits) -> tuple[str | None, list[Diagnostic]]:
    """The text of a spec file, or diagnostics saying why it is not a readable YAML file."""
    if len(data) > limits.max_file_bytes:
        return None, [
            error(
                "file-too-large",
                f"file is {len(data):,} bytes, over the limit of {limits.max_file_bytes:,}",
                path,
                line=1,
                col=1,
                hint="split it into several files, or raise spec.limits.maxFileBytes in fleet.yaml",
            )
        ]
    nul = data.find(b"\x00")
    if nul >= 0:
        line, col = _line_of_offset(data, nul)
        return None, [
            error(
                "file-binary",
                "file contains NUL bytes: it is binary, not YAML",
                path,
                line=line,
                col=col,
                hint="remove it, or exclude it in fleet.yaml spec.exclude",
            )
        ]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_of_offset(data, exc.start)
        return None, [
            error(
                "file-not-utf8",
                f"byte 0x{data[exc.start]:02x} is not valid UTF-8",
                path,
                line=line,
                col=col,
                hint="save the file as UTF-8",
            )
        ]
    if text.startswith("\ufeff"):
        text = text[1:]
    tab = _TAB_INDENT.search(text) if "\t" in text else None
    if tab:
        line = text.count("\n", 0, tab.start()) + 1
        col = tab.end() - tab.start()
        return None, [
            error(
                "yaml-tab",
                "a tab is used for indentation; YAML allows only spaces",
                path,
                line=line,
                col=col,
                hint="replace the tab with spaces",
            )
        ]
    return text, []


def load_yaml(path: str, data: bytes, limits: Limits = Limits()) -> LoadedFile:
    """All documents of one file, YAML 1.2 values as ruamel.yaml reads them."""
    text, problems = decode(path, data, limits)
    if text is None:
        return LoadedFile(path, [], problems)
    documents = _fast_load(text.encode("utf-8") if data.startswith(b"\xef\xbb\xbf") else data, text, limits)
    if documents is not None:
        return LoadedFile(path, documents, [], fast=True)
    return _reference_load(path, text, limits)


def load_yaml_reference(path: str, data: bytes, limits: Limits = Limits()) -> LoadedFile:
    """The same as `load_yaml` without the fast path (used to prove they agree)."""
    text, problems = decode(path, data, limits)
    if text is None:
        return LoadedFile(path, [], problems)
    return _reference_load(path, text, limits)


class Locator:
    """Line and column (1-based) of fields of one file's documents; the file is parsed once,
    on the first question, however many are asked."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._nodes: list[Node] | None = None

    def _documents(self) -> list[Node]:
        if self._nodes is None:
            try:
                text = self._data.decode("utf-8-sig")
            except UnicodeDecodeError:
                self._nodes = []
            else:
                self._nodes, _ = _compose("", text)
        return self._nodes

    def __call__(self, doc_index: int | None, field_path: YamlPath) -> tuple[int, int]:
        """Where a field of a document is, or its nearest existing parent (1, 1 if unknown)."""
        nodes = self._documents()
        if doc_index is None or doc_index >= len(nodes):
            return 1, 1
        node: Node = nodes[doc_index]
        best = _mark(node)
        for part in field_path:
            if isinstance(node, MappingNode):
                for key, value in node.value:
                    if isinstance(key, ScalarNode) and (
                        key.tag == "tag:yaml.org,2002:null" if part is None else key.value == str(part)
                    ):
                        best = _mark(key)
                        node = value
                        break
                else:
                    return best
            elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                best = _mark(node)
            else:
                return best
        return best


def compose_documents(path: str, text: str, *, fast: bool = False) -> tuple[list[Node], Diagnostic | None]:
    """The composed nodes of every document of a file's text, with their exact positions (start
    and end marks, in characters), as the reference loader reads them: what the spec editor edits by.

    With `fast`, ruamel's C parser (libyaml, about six times faster) composes the text when it
    accepts it; the positions, styles and structure are the same, but a plain scalar's style is
    "" (None from the reference) and nodes do not carry their anchor (the text at their start
    does: `&name`). Values are never constructed from these nodes: the loader reads them."""
    if fast:
        try:
            # ruamel.yaml.clib's CParser when installed, else the pure parser; one per call, as
            # a YAML instance keeps the state of the stream it reads.
            return list(YAML(typ="safe").compose_all(text)), None
        except Exception:  # libyaml refuses what the reference may accept: ask the reference
            pass
    return _compose(path, text)


def locate(data: bytes, doc_index: int | None, field_path: YamlPath) -> tuple[int, int]:
    """Line and column (1-based) of a field of a document, or of its nearest existing parent."""
    return Locator(data)(doc_index, field_path)
