"""YuniKorn's reading of ``queues.yaml``, re-encoded from upstream source for tests.

fleet renders the ``queues.yaml`` key of the ``yunikorn-configs`` ConfigMap (namespace ``yunikorn``).
The lab has no YuniKorn, so this module encodes what yunikorn-core does with that text:

* :func:`parse_config` -- the strict YAML decode of ``pkg/common/configs/config.go``
  ``ParseAndValidateConfig`` (go-yaml v3 ``Decoder`` with ``KnownFields(true)``), key by key and type by
  type, into a dict shaped like the Go ``SchedulerConfig`` struct (Go zero values filled in, ``None`` for
  nil maps, slices and pointers).
* :func:`config_problems` -- everything ``configvalidator.go`` ``Validate`` refuses, plus what the
  scheduler refuses when it builds the partition from a validated config (root queue name, ACL
  parsing, child templates, placement rule construction).
* :func:`resources_in_base_units` -- ``resources.NewResourceFromConf``: vcore in millicores, every other
  resource (memory in bytes) as a plain integer quantity.
* :func:`place` -- the placement manager (``pkg/scheduler/placement``) plus the partition's queue
  creation, for a pod submitted by the Kubernetes shim.

Every rule cites the upstream file and function it comes from. Upstream stops at the first error;
:func:`config_problems` lists every violation it finds (any entry means YuniKorn refuses the config).

Sources (read with ``git show <tag>:<path>``):

* apache/yunikorn-core ``v1.8.0`` (commit 656455abb3523ba3802d1e79513b9f34a2cc69da), the newest final
  release tag of the core; ``branch-1.9`` differs in these files only by refactoring the limit checks
  (same rules) and renaming the queue property ``preemption.quota.delay`` to ``quota.preemption.delay``.
* apache/yunikorn-k8shim ``v1.8.0`` (commit f30cb8715cf2ff8ec954545ca9b3f01e899234ae) for what the shim
  submits: queue name, ``namespace`` tag, user.
* apache/yunikorn-scheduler-interface ``v1.8.0-0`` ``lib/go/common/constants.go``: ``CPU = "vcore"``.
* go.yaml.in/yaml/v3 ``v3.0.4`` (github.com/yaml/go-yaml tag ``v3.0.4``), the decoder yunikorn-core's
  ``go.mod`` pins: ``decode.go``, ``resolve.go``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)

YUNIKORN_VERSION = "1.8.0"
YUNIKORN_CORE_TAG = "v1.8.0"
YUNIKORN_CORE_COMMIT = "656455abb3523ba3802d1e79513b9f34a2cc69da"
YUNIKORN_K8SHIM_TAG = "v1.8.0"
YUNIKORN_K8SHIM_COMMIT = "f30cb8715cf2ff8ec954545ca9b3f01e899234ae"
GO_YAML_VERSION = "go.yaml.in/yaml/v3 v3.0.4"

# Upstream files this module encodes (paths inside apache/yunikorn-core unless marked).
CONFIG_GO = "pkg/common/configs/config.go"
VALIDATOR_GO = "pkg/common/configs/configvalidator.go"
QUANTITY_GO = "pkg/common/resources/quantity.go"
RESOURCES_GO = "pkg/common/resources/resources.go"
ACL_GO = "pkg/common/security/acl.go"
QUEUE_GO = "pkg/scheduler/objects/queue.go"
TEMPLATE_GO = "pkg/scheduler/objects/template/template.go"
PARTITION_GO = "pkg/scheduler/partition.go"
CONTEXT_GO = "pkg/scheduler/context.go"
PLACEMENT_GO = "pkg/scheduler/placement/placement.go"
RULE_GO = "pkg/scheduler/placement/rule.go"
FIXED_RULE_GO = "pkg/scheduler/placement/fixed_rule.go"
TAG_RULE_GO = "pkg/scheduler/placement/tag_rule.go"
PROVIDED_RULE_GO = "pkg/scheduler/placement/provided_rule.go"
USER_RULE_GO = "pkg/scheduler/placement/user_rule.go"
FILTER_GO = "pkg/scheduler/placement/filter.go"
NODESORT_GO = "pkg/scheduler/policies/nodesorting_policy.go"
SHIM_UTILS_GO = "yunikorn-k8shim pkg/common/utils/utils.go"
SHIM_METADATA_GO = "yunikorn-k8shim pkg/cache/metadata.go"
GO_YAML_DECODE = "go-yaml v3 decode.go"

# config.go DefaultSchedulerConfig: what the core runs when the shim sends an empty config
# (context.go processRMRegistrationEvent / processRMConfigUpdateEvent: len(config) == 0).
DEFAULT_SCHEDULER_CONFIG = """
partitions:
  - name: default
    placementrules:
      - name: tag
        value: namespace
        create: true
    queues:
      - name: root
        submitacl: '*'
"""

# yunikorn-scheduler-interface lib/go/common/constants.go: CPU = "vcore", Memory = "memory".
VCORE = "vcore"
MEMORY = "memory"
ROOT = "root"
DEFAULT_PLACEMENT_QUEUE = "root.default"  # pkg/common/constants.go DefaultPlacementQueue
RECOVERY_QUEUE = "@recovery@"  # pkg/common/constants.go RecoveryQueue
SHIM_DEFAULT_USER = "nobody"  # yunikorn-k8shim pkg/common/constants/constants.go DefaultUser

_INT64_MAX = (1 << 63) - 1
_INT64_MIN = -(1 << 63)
_UINT64_MAX = (1 << 64) - 1


class ConfigError(ValueError):
    """The text is not something YuniKorn would load (parse error or refused by validation)."""


# ---------------------------------------------------------------------------------------------------
# Regular expressions (Go RE2 patterns; matched with fullmatch since Python's ``$`` also matches before
# a trailing newline and Go's does not).

# configvalidator.go QueueNameRegExp
_QUEUE_NAME_RE = re.compile(r"[a-zA-Z0-9_:#/@-]{1,64}")
# configvalidator.go UserRegExp
_USER_RE = re.compile(r"[_a-zA-Z][a-zA-Z0-9:#/_.@-]*[$]?")
# configvalidator.go GroupRegExp
_GROUP_RE = re.compile(r"[_a-zA-Z][a-zA-Z0-9:_.-]*")
# configvalidator.go SpecialRegExp (unanchored: MatchString finds it anywhere)
_SPECIAL_RE = re.compile(r"[\^$*+?()\[{}|]")
# configvalidator.go RuleNameRegExp
_RULE_NAME_RE = re.compile(r"[_a-zA-Z][a-zA-Z0-9_]*")
# acl.go userNameRegExp / groupRegExp (stricter than the validator's: an ACL silently drops others)
_ACL_USER_RE = re.compile(r"[_a-zA-Z][a-zA-Z0-9_.@-]*[$]?")
_ACL_GROUP_RE = re.compile(r"[_a-zA-Z][a-zA-Z0-9_-]*")
# quantity.go legal: `^(?P<Number>[0-9]+)\s*(?P<Suffix>([mkKMGTPE]i?)?)$`; RE2 \s is [\t\n\f\r ]
_QUANTITY_RE = re.compile(r"(?P<number>[0-9]+)[\t\n\f\r ]*(?P<suffix>(?:[mkKMGTPE]i?)?)")
# quantity.go multipliers
_MULTIPLIERS: dict[str, int] = {
    "": 1,
    "m": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "Pi": 1 << 50,
    "Ei": 1 << 60,
}

# Go unicode.IsSpace, the set strings.TrimSpace removes (Python's str.strip also drops \x1c-\x1f).
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
_GO_SPACE += "\u2028\u2029\u202f\u205f\u3000"


def _go_trim_space(value: str) -> str:
    return value.strip(_GO_SPACE)


def _go_fields(value: str) -> list[str]:
    """strings.Fields: split around runs of unicode.IsSpace."""
    return [part for part in re.split("[" + re.escape(_GO_SPACE) + "]+", value) if part]


def is_queue_name_valid(name: str) -> bool:
    """configvalidator.go IsQueueNameValid (QueueNameRegExp)."""
    return _QUEUE_NAME_RE.fullmatch(name) is not None


# ---------------------------------------------------------------------------------------------------
# go-yaml v3 node model and scalar resolution (resolve.go resolve, decode.go parser.node).

_LONG_TAG_PREFIX = "tag:yaml.org,2002:"
_NULL, _BOOL, _STR, _INT, _FLOAT = "!!null", "!!bool", "!!str", "!!int", "!!float"
_TIMESTAMP, _SEQ, _MAP, _BINARY, _MERGE = "!!timestamp", "!!seq", "!!map", "!!binary", "!!merge"
_RESOLVABLE = {"", _STR, _BOOL, _INT, _FLOAT, _NULL, _TIMESTAMP}
_RESOLVE_MAP: dict[str, tuple[str, object]] = {}
for _word in ("true", "True", "TRUE"):
    _RESOLVE_MAP[_word] = (_BOOL, True)
for _word in ("false", "False", "FALSE"):
    _RESOLVE_MAP[_word] = (_BOOL, False)
for _word in ("", "~", "null", "Null", "NULL"):
    _RESOLVE_MAP[_word] = (_NULL, None)
for _word in (".nan", ".NaN", ".NAN"):
    _RESOLVE_MAP[_word] = (_FLOAT, math.nan)
for _word in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"):
    _RESOLVE_MAP[_word] = (_FLOAT, math.inf)
for _word in ("-.inf", "-.Inf", "-.INF"):
    _RESOLVE_MAP[_word] = (_FLOAT, -math.inf)
_RESOLVE_MAP["<<"] = (_MERGE, "<<")
_YAML_STYLE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_DOT_FLOAT = re.compile(r"\.[0-9]+([eE][-+]?[0-9]+)?")
# resolve.go parseTimestamp: only the first check matters here (a timestamp never fits our fields).
_TIMESTAMP_RE = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ][0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}.*)?")


class _YamlFail(Exception):
    """go-yaml failf: aborts the whole decode."""


def _short_tag(tag: str) -> str:
    if tag.startswith(_LONG_TAG_PREFIX):
        return "!!" + tag[len(_LONG_TAG_PREFIX) :]
    return tag


def _go_parse_int(text: str, base: int, signed: bool) -> int | None:
    """strconv.ParseInt / ParseUint with base 0 (prefixes 0x, 0o, 0b, and 0 for octal) or a fixed base."""
    neg = False
    rest = text
    if signed and rest[:1] in ("+", "-"):
        neg = rest[0] == "-"
        rest = rest[1:]
    if base == 0:
        base = 10
        if rest[:1] == "0" and len(rest) > 1:
            prefix = rest[1].lower()
            if prefix in "xob":
                base = {"x": 16, "o": 8, "b": 2}[prefix]
                rest = rest[2:]
            else:
                base = 8
                rest = rest[1:]
    if not rest:
        return None
    digits = "0123456789abcdef"[:base]
    if any(ch.lower() not in digits for ch in rest):
        return None
    value = int(rest, base)
    if neg:
        value = -value
    if signed:
        return value if _INT64_MIN <= value <= _INT64_MAX else None
    return value if value <= _UINT64_MAX else None


def _resolve_untyped(tag: str, text: str) -> tuple[str, object]:
    hint = "N" if text == "" else _hint(text[0])
    if hint and tag not in (_STR, _BINARY):
        if text in _RESOLVE_MAP:
            return _RESOLVE_MAP[text]
        if hint == ".":
            if _DOT_FLOAT.fullmatch(text):
                return _FLOAT, float(text)
        elif hint in ("D", "S"):
            if tag in ("", _TIMESTAMP) and _TIMESTAMP_RE.fullmatch(text):
                return _TIMESTAMP, text
            plain = text.replace("_", "")
            ivalue = _go_parse_int(plain, 0, signed=True)
            if ivalue is not None:
                return _INT, ivalue
            uvalue = _go_parse_int(plain, 0, signed=False)
            if uvalue is not None:
                return _INT, uvalue
            if _YAML_STYLE_FLOAT.fullmatch(plain):
                return _FLOAT, float(plain)
            for prefix, base in (("0b", 2), ("-0b", 2), ("0o", 8), ("-0o", 8)):
                if plain.startswith(prefix):
                    digits = plain[len(prefix) :]
                    value = _go_parse_int(("-" if prefix[0] == "-" else "") + digits, base, signed=True)
                    if value is None and prefix[0] != "-":
                        value = _go_parse_int(digits, base, signed=False)
                    if value is not None:
                        return _INT, value
                    break
    return _STR, text


def _hint(first: str) -> str:
    if first in "+-":
        return "S"
    if first in "0123456789":
        return "D"
    if first in "yYnNtTfFoO~":
        return "M"
    if first == ".":
        return "."
    return ""


def _resolve(tag: str, text: str) -> tuple[str, object]:
    """resolve.go resolve: the tag a scalar resolves to and its value; failf on an impossible explicit tag."""
    tag = _short_tag(tag)
    if tag not in _RESOLVABLE:
        return tag, text
    rtag, out = _resolve_untyped(tag, text)
    if tag in ("", rtag, _STR, _BINARY):
        return rtag, out
    if tag == _FLOAT and rtag == _INT and isinstance(out, int):
        return _FLOAT, float(out)
    raise _YamlFail(f"cannot decode {rtag} `{text}` as a {tag}")


@dataclass(eq=False)
class _Node:
    kind: str  # "scalar" | "mapping" | "sequence" | "alias"
    line: int  # 1-based like go-yaml's Node.Line
    tag: str = ""
    value: str = ""
    quoted: bool = False  # single/double quoted, literal or folded style
    content: list[_Node] = field(default_factory=list)
    alias: _Node | None = None

    def indicated_string(self) -> bool:
        return self.kind == "scalar" and (
            _short_tag(self.tag) == _STR or (self.tag in ("", "!") and self.quoted)
        )

    def short_tag(self) -> str:
        if self.indicated_string():
            return _STR
        if self.tag in ("", "!"):
            if self.kind == "mapping":
                return _MAP
            if self.kind == "sequence":
                return _SEQ
            if self.kind == "alias":
                return self.alias.short_tag() if self.alias is not None else ""
            if self.kind == "scalar":
                return _resolve("", self.value)[0]
            return ""
        return _short_tag(self.tag)


def _node_tag(kind: str, explicit: str | None, value: str, quoted: bool) -> str:
    """go-yaml parser.node: explicit tags are kept, otherwise the default or the resolved tag is set."""
    if explicit and explicit != "!":
        return _short_tag(explicit)
    if kind == "mapping":
        return _MAP
    if kind == "sequence":
        return _SEQ
    if quoted:
        return _STR
    if value == "<<":
        return _MERGE
    return _resolve("", value)[0]


def _compose_first_document(text: str) -> _Node | None:
    """Parse events with ruamel.yaml's safe parser and build go-yaml-like nodes for the first document.

    ``yaml.NewDecoder(...).Decode`` reads one document: later ones are ignored, and an empty stream
    is io.EOF, which ParseAndValidateConfig accepts as an empty config.
    """
    events: Iterator[Event] = iter(YAML(typ="safe", pure=True).parse(io.StringIO(text)))
    anchors: dict[str, _Node] = {}
    first = next(events)
    if not isinstance(first, StreamStartEvent):
        raise ConfigError(f"yaml: unexpected event {first!r}")
    start = next(events)
    if isinstance(start, StreamEndEvent):
        return None
    if not isinstance(start, DocumentStartEvent):
        raise ConfigError(f"yaml: unexpected event {start!r}")

    def build(event: Event) -> _Node:
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, AliasEvent):
            target = anchors.get(str(event.anchor))
            if target is None:
                raise ConfigError(f"yaml: unknown anchor '{event.anchor}' referenced")
            return _Node("alias", line, value=str(event.anchor), alias=target)
        node: _Node
        if isinstance(event, ScalarEvent):
            quoted = event.style is not None and event.style != ""
            value = str(event.value)
            node = _Node("scalar", line, _node_tag("scalar", event.tag, value, quoted), value, quoted)
        elif isinstance(event, MappingStartEvent | SequenceStartEvent):
            kind = "mapping" if isinstance(event, MappingStartEvent) else "sequence"
            node = _Node(kind, line, _node_tag(kind, event.tag, "", False))
            end = MappingEndEvent if kind == "mapping" else SequenceEndEvent
            if event.anchor is not None:
                anchors[str(event.anchor)] = node
            while True:
                child = next(events)
                if isinstance(child, end):
                    break
                node.content.append(build(child))
            return node
        else:
            raise ConfigError(f"yaml: unexpected event {event!r}")
        if event.anchor is not None:
            anchors[str(event.anchor)] = node
        return node

    root = build(next(events))
    end = next(events)
    if not isinstance(end, DocumentEndEvent):
        raise ConfigError(f"yaml: unexpected event {end!r}")
    return root


# ---------------------------------------------------------------------------------------------------
# The config structs (config.go) as decoder types. Keys are go-yaml v3's: the lower-cased Go field
# name unless the yaml tag names one (only UserGroupResolver.Type: `yaml:"type,omitempty"`). Keys are
# matched case-sensitively: `placementRules` is an unknown field, `placementrules` is the key.


@dataclass(frozen=True)
class _T:
    kind: str  # "str" | "bool" | "uint64" | "float64" | "ptr" | "map" | "list" | "struct"
    elem: _T | None = None
    name: str = ""

    def go(self) -> str:
        if self.kind == "str":
            return "string"
        if self.kind in ("bool", "uint64", "float64"):
            return self.kind
        if self.kind == "struct" or self.elem is None:
            return "configs." + self.name
        prefix = {"ptr": "*", "map": "map[string]", "list": "[]"}[self.kind]
        return prefix + self.elem.go()


_STR_T = _T("str")
_BOOL_T = _T("bool")
_UINT_T = _T("uint64")
_FLOAT_T = _T("float64")
_STRMAP_T = _T("map", _STR_T)


def _struct(name: str) -> _T:
    return _T("struct", name=name)


def _list(elem: _T) -> _T:
    return _T("list", elem)


SCHEMA: dict[str, dict[str, _T]] = {
    "SchedulerConfig": {"partitions": _list(_struct("PartitionConfig")), "checksum": _STR_T},
    "PartitionConfig": {
        "name": _STR_T,
        "queues": _list(_struct("QueueConfig")),
        "placementrules": _list(_struct("PlacementRule")),
        "limits": _list(_struct("Limit")),
        "preemption": _struct("PartitionPreemptionConfig"),
        "nodesortpolicy": _struct("NodeSortingPolicy"),
        "usergroupresolver": _struct("UserGroupResolver"),
    },
    "UserGroupResolver": {"type": _STR_T},
    "PartitionPreemptionConfig": {
        "enabled": _T("ptr", _BOOL_T),
        "quotapreemptionenabled": _T("ptr", _BOOL_T),
    },
    "QueueConfig": {
        "name": _STR_T,
        "parent": _BOOL_T,
        "resources": _struct("Resources"),
        "maxapplications": _UINT_T,
        "properties": _STRMAP_T,
        "adminacl": _STR_T,
        "submitacl": _STR_T,
        "childtemplate": _struct("ChildTemplate"),
        "queues": _list(_struct("QueueConfig")),
        "limits": _list(_struct("Limit")),
    },
    "ChildTemplate": {"maxapplications": _UINT_T, "properties": _STRMAP_T, "resources": _struct("Resources")},
    "Resources": {"guaranteed": _STRMAP_T, "max": _STRMAP_T},
    "PlacementRule": {
        "name": _STR_T,
        "create": _BOOL_T,
        "filter": _struct("Filter"),
        "parent": _T("ptr", _struct("PlacementRule")),
        "value": _STR_T,
    },
    "Filter": {"type": _STR_T, "users": _list(_STR_T), "groups": _list(_STR_T)},
    "Limit": {
        "limit": _STR_T,
        "users": _list(_STR_T),
        "groups": _list(_STR_T),
        "maxresources": _STRMAP_T,
        "maxapplications": _UINT_T,
    },
    "NodeSortingPolicy": {"type": _STR_T, "resourceweights": _T("map", _FLOAT_T)},
}


def _zero(t: _T) -> Any:
    if t.kind == "str":
        return ""
    if t.kind == "bool":
        return False
    if t.kind == "uint64":
        return 0
    if t.kind == "float64":
        return 0.0
    if t.kind == "struct":
        return {key: _zero(ft) for key, ft in SCHEMA[t.name].items()}
    return None  # ptr, map, list: nil


class _Decoder:
    """go-yaml v3 decoder (decode.go) with knownFields=true and uniqueKeys=true, for the types above."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._merged: set[str] | None = None
        self._active_aliases: set[int] = set()

    def terror(self, node: _Node, tag: str, t: _T, path: str) -> None:
        if node.tag:
            tag = node.tag
        value = node.value
        if tag not in (_SEQ, _MAP):
            value = " `" + value[:7] + "...`" if len(value) > 10 else " `" + value + "`"
        else:
            value = ""
        self.errors.append(
            f"line {node.line}: cannot unmarshal {_short_tag(tag)}{value} into {t.go()} "
            f"(at {path or '<top>'})"
        )

    def unmarshal(self, node: _Node, t: _T, cur: Any, path: str) -> tuple[bool, Any]:
        if node.kind == "alias":
            if id(node) in self._active_aliases:
                raise _YamlFail(f"anchor '{node.value}' value contains itself")
            assert node.alias is not None
            self._active_aliases.add(id(node))
            try:
                return self.unmarshal(node.alias, t, cur, path)
            finally:
                self._active_aliases.discard(id(node))
        is_null = node.short_tag() == _NULL
        if t.kind == "ptr" and not is_null:
            # decode.go prepare: allocate and dereference the pointer.
            assert t.elem is not None
            inner = cur if cur is not None else _zero(t.elem)
            _, value = self.unmarshal(node, t.elem, inner, path)
            return True, value
        if node.kind == "scalar":
            return self.scalar(node, t, cur, path)
        if node.kind == "mapping":
            return self.mapping(node, t, cur, path)
        if node.kind == "sequence":
            return self.sequence(node, t, cur, path)
        raise _YamlFail(f"cannot decode node with unknown kind {node.kind}")

    def scalar(self, node: _Node, t: _T, cur: Any, path: str) -> tuple[bool, Any]:
        resolved: object
        if node.indicated_string():
            tag, resolved = _STR, node.value
        else:
            tag, resolved = _resolve(node.tag, node.value)
            if tag == _BINARY:
                try:
                    resolved = base64.b64decode(node.value, validate=True).decode("latin-1")
                except (binascii.Error, ValueError) as exc:
                    raise _YamlFail("!!binary value contains invalid base64 data") from exc
        if resolved is None:
            # decode.go null: pointers, maps and slices become nil; other kinds stay as they are.
            if t.kind in ("ptr", "map", "list"):
                return True, None
            return False, cur
        if t.kind == "str":
            return True, (resolved if tag == _BINARY else node.value)
        if t.kind == "bool":
            if isinstance(resolved, bool):
                return True, resolved
            if isinstance(resolved, str):
                # YAML 1.1 compatibility, only for typed bool targets.
                if resolved in ("y", "Y", "yes", "Yes", "YES", "on", "On", "ON"):
                    return True, True
                if resolved in ("n", "N", "no", "No", "NO", "off", "Off", "OFF"):
                    return True, False
        elif t.kind == "uint64":
            if isinstance(resolved, int) and not isinstance(resolved, bool):
                if 0 <= resolved <= _UINT64_MAX:
                    return True, resolved
            elif isinstance(resolved, float) and not math.isnan(resolved) and resolved <= float(_UINT64_MAX):
                # Go: uint64(float) truncates; a negative float converts to an implementation-defined
                # value that the decoder accepts. Modelled as wrap-around of the truncated value.
                return True, int(resolved) & _UINT64_MAX if resolved < 0 else int(resolved)
        elif t.kind == "float64" and isinstance(resolved, int | float) and not isinstance(resolved, bool):
            return True, float(resolved)
        self.terror(node, tag, t, path)
        return False, cur

    def _pairs(self, node: _Node) -> list[tuple[_Node, _Node]]:
        return [(node.content[i], node.content[i + 1]) for i in range(0, len(node.content) - 1, 2)]

    @staticmethod
    def _is_merge(node: _Node) -> bool:
        return (
            node.kind == "scalar"
            and node.value == "<<"
            and (node.tag in ("", "!") or _short_tag(node.tag) == _MERGE)
        )

    def mapping(self, node: _Node, t: _T, cur: Any, path: str) -> tuple[bool, Any]:
        pairs = self._pairs(node)
        duplicate = False
        for i, (ki, _) in enumerate(pairs):
            for kj, _ in pairs[i + 1 :]:
                if ki.kind == kj.kind and ki.value == kj.value:
                    self.errors.append(
                        f'line {kj.line}: mapping key "{kj.value}" already defined at line {ki.line}'
                        f" (at {path or '<top>'})"
                    )
                    duplicate = True
        if duplicate:
            return False, cur
        if t.kind == "struct":
            return True, self.mapping_struct(node, pairs, t, cur, path)
        if t.kind == "map":
            return True, self.mapping_map(node, pairs, t, cur, path)
        self.terror(node, _MAP, t, path)
        return False, cur

    def _key(self, key: _Node, path: str) -> str | None:
        ok, name = self.unmarshal(key, _STR_T, "", path)
        return str(name) if ok else None

    def mapping_struct(
        self, node: _Node, pairs: list[tuple[_Node, _Node]], t: _T, cur: Any, path: str
    ) -> dict[str, Any]:
        fields = SCHEMA[t.name]
        out: dict[str, Any] = dict(cur) if isinstance(cur, dict) else _zero(t)
        merged, self._merged = self._merged, None
        done: set[str] = set()
        merge_node: _Node | None = None
        for key, value in pairs:
            if self._is_merge(key):
                merge_node = value
                continue
            name = self._key(key, path)
            if name is None:
                continue
            if merged is not None:
                if name in merged:
                    continue
                merged.add(name)
            sub = f"{path}.{name}" if path else name
            if name in fields:
                if name in done:
                    self.errors.append(
                        f"line {key.line}: field {name} already set in type {t.go()} (at {sub})"
                    )
                    continue
                done.add(name)
                _, out[name] = self.unmarshal(value, fields[name], out[name], sub)
            else:
                # decode.go mappingStruct with knownFields (config.go: decoder.KnownFields(true)).
                self.errors.append(f"line {key.line}: field {name} not found in type {t.go()} (at {sub})")
        self._merged = merged
        if merge_node is not None:
            out = self.merge(node, merge_node, t, out, path)
        return out

    def mapping_map(
        self, node: _Node, pairs: list[tuple[_Node, _Node]], t: _T, cur: Any, path: str
    ) -> dict[str, Any]:
        assert t.elem is not None
        map_is_new = cur is None
        out: dict[str, Any] = {} if cur is None else dict(cur)
        merged, self._merged = self._merged, None
        merge_node: _Node | None = None
        for key, value in pairs:
            if self._is_merge(key):
                merge_node = value
                continue
            name = self._key(key, path)
            if name is None:
                continue
            if merged is not None:
                if name in merged:
                    continue
                merged.add(name)
            ok, decoded = self.unmarshal(value, t.elem, _zero(t.elem), f"{path}.{name}")
            if ok or (value.short_tag() == _NULL and (map_is_new or name not in out)):
                out[name] = decoded
        self._merged = merged
        if merge_node is not None:
            out = self.merge(node, merge_node, t, out, path)
        return out

    def merge(self, parent: _Node, merge: _Node, t: _T, out: Any, path: str) -> Any:
        saved = self._merged
        if self._merged is None:
            self._merged = {key.value for key, _ in self._pairs(parent) if key.kind == "scalar"}
        targets: list[_Node]
        if merge.kind == "mapping":
            targets = [merge]
        elif merge.kind == "alias" and merge.alias is not None and merge.alias.kind == "mapping":
            targets = [merge]
        elif merge.kind == "sequence":
            targets = []
            for item in merge.content:
                target = item.alias if item.kind == "alias" else item
                if target is None or target.kind != "mapping":
                    raise _YamlFail("map merge requires map or sequence of maps as the value")
                targets.append(item)
        else:
            raise _YamlFail("map merge requires map or sequence of maps as the value")
        for target in targets:
            _, out = self.unmarshal(target, t, out, path)
        self._merged = saved
        return out

    def sequence(self, node: _Node, t: _T, cur: Any, path: str) -> tuple[bool, Any]:
        if t.kind != "list":
            self.terror(node, _SEQ, t, path)
            return False, cur
        assert t.elem is not None
        out: list[Any] = []
        for index, item in enumerate(node.content):
            ok, value = self.unmarshal(item, t.elem, _zero(t.elem), f"{path}[{index}]")
            if ok:
                out.append(value)  # decode.go sequence: elements that fail to decode are dropped
        return True, out


def parse_config(text: str) -> dict[str, Any]:
    """Decode ``queues.yaml`` text as yunikorn-core does (config.go ParseAndValidateConfig, decode step).

    Strict: an unknown key anywhere raises :class:`ConfigError` naming the key, the Go struct and the
    path. Types follow go-yaml v3: every scalar is accepted for a string field (its text as written, so
    ``vcore: 256000`` is the string ``"256000"``); ``bool`` fields take true/false and the YAML 1.1 words
    (yes/no/on/off/y/n, even quoted) but not the quoted string ``"true"``; ``uint64`` fields take
    non-negative integers (and floats, truncated). Null values leave the Go zero value. The result has
    every struct key with its Go zero value, and ``None`` for nil maps, slices and pointers.
    """
    try:
        root = _compose_first_document(text)
    except YAMLError as exc:
        raise ConfigError(f"yaml: {exc} ({CONFIG_GO} ParseAndValidateConfig)") from exc
    except StopIteration as exc:  # pragma: no cover - ruamel always ends the stream
        raise ConfigError("yaml: unexpected end of stream") from exc
    config_t = _struct("SchedulerConfig")
    config: Any = _zero(config_t)
    if root is None:
        return dict(config)
    decoder = _Decoder()
    try:
        _, config = decoder.unmarshal(root, config_t, config, "")
    except _YamlFail as exc:
        raise ConfigError(f"yaml: {exc} ({CONFIG_GO} ParseAndValidateConfig)") from exc
    if decoder.errors:
        details = "\n  ".join(decoder.errors)
        raise ConfigError(
            f"yaml: unmarshal errors:\n  {details}\n({CONFIG_GO} ParseAndValidateConfig: "
            "yaml.NewDecoder with KnownFields(true))"
        )
    return dict(config)


# ---------------------------------------------------------------------------------------------------
# Resources (quantity.go, resources.go).


class _QuantityError(ValueError):
    pass


def _parse_quantity(value: str, milli: bool) -> int:
    """quantity.go parse: ParseQuantity (milli=False) and ParseVCore (milli=True)."""
    value = _go_trim_space(value)
    match = _QUANTITY_RE.fullmatch(value)
    if match is None:
        raise _QuantityError("invalid quantity")
    number = int(match.group("number"))
    if number > _INT64_MAX:  # strconv.ParseInt(number, 10, 64)
        raise _QuantityError("invalid quantity: overflow")
    suffix = match.group("suffix")
    scale = _MULTIPLIERS.get(suffix)
    if scale is None or (suffix == "m" and not milli):
        raise _QuantityError("invalid suffix")
    result = number * scale
    if milli and suffix != "m":
        result *= 1000
    if result > _INT64_MAX:
        raise _QuantityError("invalid quantity: overflow")
    return result


def parse_vcore(value: str) -> int:
    """quantity.go ParseVCore: millicores. ``"10"`` -> 10000, ``"500m"`` -> 500, ``"2k"`` -> 2000000."""
    try:
        return _parse_quantity(value, milli=True)
    except _QuantityError as exc:
        raise ConfigError(f"vcore {value!r}: {exc} ({QUANTITY_GO} ParseVCore)") from exc


def parse_quantity(value: str) -> int:
    """quantity.go ParseQuantity: plain integer with optional k/M/G/T/P/E or Ki/Mi/Gi/Ti/Pi/Ei suffix."""
    try:
        return _parse_quantity(value, milli=False)
    except _QuantityError as exc:
        raise ConfigError(f"quantity {value!r}: {exc} ({QUANTITY_GO} ParseQuantity)") from exc


def resources_in_base_units(resources: Mapping[str, object]) -> dict[str, int]:
    """resources.go NewResourceFromConf: YuniKorn's internal values for a config resource map.

    ``vcore`` goes through ParseVCore (millicores); every other key, ``memory`` included, through
    ParseQuantity (bytes for memory, a count for anything else). Values are read as the Go decoder sees
    them, i.e. as text: an int ``256`` is the string ``"256"``. Raises :class:`ConfigError` on a value
    YuniKorn refuses (negative, fractional, unknown suffix, ``m`` outside vcore, int64 overflow).
    """
    out: dict[str, int] = {}
    for key, raw in resources.items():
        text = raw if isinstance(raw, str) else str(raw)
        out[key] = parse_vcore(text) if key == VCORE else parse_quantity(text)
    return out


def _resource(conf: Mapping[str, str] | None) -> dict[str, int]:
    return resources_in_base_units(conf or {})


def _fit_in_max_undef(larger: Mapping[str, int] | None, smaller: Mapping[str, int] | None) -> bool:
    """resources.go FitInMaxUndef: types missing from ``larger`` are unlimited; nil larger is empty."""
    if smaller is None:
        return True
    larger = larger or {}
    for key, value in smaller.items():
        if key not in larger:
            continue
        if value > max(0, larger[key]):
            return False
    return True


def _component_wise_min(
    left: Mapping[str, int] | None, right: Mapping[str, int] | None
) -> dict[str, int] | None:
    """resources.go ComponentWiseMin: a type missing on one side takes the other side's value."""
    if left is None and right is None:
        return None
    if left is None:
        return dict(right or {})
    if right is None:
        return dict(left)
    out = dict(left)
    for key, value in right.items():
        out[key] = min(value, left[key]) if key in left else value
    return out


def _add_to(base: dict[str, int], add: Mapping[str, int] | None) -> None:
    """resources.go AddTo with addVal's saturation at the int64 limits."""
    for key, value in (add or {}).items():
        total = base.get(key, 0) + value
        base[key] = max(_INT64_MIN, min(_INT64_MAX, total))


def _is_zero(res: Mapping[str, int] | None) -> bool:
    return res is None or all(value == 0 for value in res.values())


def _strictly_greater_than_zero(res: Mapping[str, int] | None) -> bool:
    if res is None:
        return False
    return all(value >= 0 for value in res.values()) and any(value > 0 for value in res.values())


def _fmt(res: Mapping[str, int] | None) -> str:
    return (
        "nil resource" if res is None else "map[" + " ".join(f"{k}:{v}" for k, v in sorted(res.items())) + "]"
    )


# ---------------------------------------------------------------------------------------------------
# Validation (configvalidator.go Validate, then partition/queue/placement construction).


def _problem(rule: str, message: str, source: str) -> str:
    return f"{rule}: {message} [{source}]"


def _normalise_partitions(config: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Validate's per-partition preamble and checkQueuesStructure; returns the normalised partitions."""
    problems: list[str] = []
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for original in config.get("partitions") or []:
        partition = copy.deepcopy(original)
        # configvalidator.go Validate: "" and any case of "default" become "default"; names unique
        # case-insensitively.
        if partition["name"] == "" or partition["name"].lower() == "default":
            partition["name"] = "default"
        if partition["name"].lower() in seen:
            problems.append(
                _problem(
                    "partition-unique",
                    f"duplicate partition name found with name {partition['name']}",
                    f"{VALIDATOR_GO} Validate",
                )
            )
        seen.add(partition["name"].lower())
        # configvalidator.go checkQueuesStructure: queues must be set; root inserted when the top level
        # is not exactly one queue named root (any case); root is always a parent.
        if partition["queues"] is None:
            problems.append(
                _problem("queues-set", "queue config is not set", f"{VALIDATOR_GO} checkQueuesStructure")
            )
            continue
        queues = partition["queues"]
        if len(queues) != 1 or queues[0]["name"].lower() != ROOT:
            root = _zero(_struct("QueueConfig"))
            root["name"] = ROOT
            root["parent"] = True
            root["queues"] = queues
            partition["queues"] = [root]
        else:
            queues[0]["parent"] = True
        root = partition["queues"][0]
        if root["resources"]["guaranteed"] is not None or root["resources"]["max"] is not None:
            problems.append(
                _problem(
                    "root-no-resources",
                    "root queue must not have resource limits set",
                    f"{VALIDATOR_GO} checkQueuesStructure",
                )
            )
        # partition.go initialPartitionFromConfig: the partition is only built when the top queue's name
        # is exactly "root" (the validator compared it lower-cased).
        if root["name"] != ROOT:
            problems.append(
                _problem(
                    "root-name-exact",
                    f"top queue is named {root['name']!r}: partition cannot be created without root queue",
                    f"{PARTITION_GO} initialPartitionFromConfig",
                )
            )
        # configvalidator.go checkLimitsStructure
        partition_limits = partition["limits"] or []
        root_limits = root["limits"] or []
        if partition_limits and root_limits and partition["limits"] != root["limits"]:
            problems.append(
                _problem(
                    "limits-structure",
                    "partition limits and root queue limits are not equivalent",
                    f"{VALIDATOR_GO} checkLimitsStructure",
                )
            )
        if partition_limits and not root_limits:
            root["limits"] = partition["limits"]
        out.append(partition)
    return out, problems


def _check_acl(acl: str, what: str, queue: str) -> list[str]:
    problems: list[str] = []
    # configvalidator.go checkACL: after TrimSpace, at most two whitespace separated fields.
    trimmed = _go_trim_space(acl)
    if trimmed and trimmed != "*" and len(_go_fields(trimmed)) > 2:
        problems.append(
            _problem(
                "acl-syntax",
                f"queue {queue} {what}: multiple spaces found in ACL: '{acl}'",
                f"{VALIDATOR_GO} checkACL",
            )
        )
    # acl.go NewACL (called from queue.go applyConf when the partition is built): the raw string is
    # split on single spaces *before* trimming, so "a b " or "a  b" (3 parts) fails queue creation.
    elif acl != "" and len(acl.split(" ")) > 2:
        problems.append(
            _problem(
                "acl-single-space",
                f"queue {queue} {what}: multiple spaces found in ACL: '{acl}' "
                "(split on single spaces before trimming)",
                f"{ACL_GO} NewACL via {QUEUE_GO} applyConf",
            )
        )
    return problems


def _check_limit(
    limit: Mapping[str, Any],
    users_seen: dict[str, bool],
    groups_seen: dict[str, bool],
    queue: Mapping[str, Any],
) -> str | None:
    """configvalidator.go checkLimit (one limit entry of a queue); returns the first error."""
    users: list[str] = limit["users"] or []
    groups: list[str] = limit["groups"] or []
    if not users and not groups:
        return f"empty user and group lists defined in limit '{limit['limit']}'"
    for name in users:
        if name != "*" and _USER_RE.fullmatch(name) is None:
            return f"invalid limit user name '{name}' in limit definition"
        if users_seen.get(name):
            return f"duplicated user name '{name}', already exists"
        users_seen[name] = True
        if users_seen.get("*") and name != "*":
            return f"should not set no wildcard user {name} after wildcard user limit"
    for name in groups:
        if name != "*" and _GROUP_RE.fullmatch(name) is None:
            return f"invalid limit group name '{name}' in limit definition"
        if groups_seen.get(name):
            return f"duplicated group name '{name}'"
        groups_seen[name] = True
        if groups_seen.get("*") and name != "*":
            return f"should not set no wildcard group {name} after wildcard group limit"
    if groups_seen.get("*") and len(groups_seen) == 1:
        return "should not specify only one group limit that is using the wildcard"
    limit_resource: dict[str, int] = {}
    max_resources: dict[str, str] = limit["maxresources"] or {}
    if max_resources:
        try:
            limit_resource = _resource(max_resources)
        except ConfigError as exc:
            return str(exc)
        if not _strictly_greater_than_zero(limit_resource):
            return f"MaxResources should be greater than zero in '{limit['limit']}' limit"
    if limit["maxapplications"] == 0 and not max_resources:
        return f"invalid resource combination for limit {limit['limit']} all resource limits are null"
    if queue["maxapplications"] != 0 and queue["maxapplications"] < limit["maxapplications"]:
        return (
            f"invalid MaxApplications settings for limit {limit['limit']} exceed current the queue "
            "MaxApplications"
        )
    if queue["name"] != ROOT:
        try:
            queue_max = _resource(queue["resources"]["max"])
        except ConfigError as exc:
            return f"parse queue {queue['name']} max resource failed: {exc}"
        if not _fit_in_max_undef(queue_max, limit_resource):
            return (
                f"invalid MaxResources settings for limit {limit['limit']} exceed current the queue "
                "MaxResources"
            )
    return None


def _check_queues(queue: Mapping[str, Any], path: str, level: int, problems: list[str]) -> None:
    """configvalidator.go checkQueues: ACLs, limits, then the children's names and uniqueness."""
    problems.extend(_check_acl(queue["adminacl"], "adminacl", path))
    problems.extend(_check_acl(queue["submitacl"], "submitacl", path))
    users_seen: dict[str, bool] = {}
    groups_seen: dict[str, bool] = {}
    for limit in queue["limits"] or []:
        error = _check_limit(limit, users_seen, groups_seen, queue)
        if error is not None:
            problems.append(_problem("limit", f"queue {path}: {error}", f"{VALIDATOR_GO} checkLimit"))
            break  # the seen-maps are shared by the queue's limits: later entries depend on earlier ones
    names: set[str] = set()
    for child in queue["queues"] or []:
        if not is_queue_name_valid(child["name"]):
            problems.append(
                _problem(
                    "queue-name",
                    f"invalid queue name {child['name']!r} under {path}: must match "
                    "^[a-zA-Z0-9_:#/@-]{1,64}$",
                    f"{VALIDATOR_GO} IsQueueNameValid (QueueNameRegExp)",
                )
            )
        lowered = child["name"].lower()
        if lowered in names:
            problems.append(
                _problem(
                    "queue-name-unique",
                    f"duplicate child name found with name '{child['name']}', level {level} (under {path})",
                    f"{VALIDATOR_GO} checkQueues",
                )
            )
        names.add(lowered)
    for child in queue["queues"] or []:
        _check_queues(child, f"{path}.{child['name']}", level + 1, problems)


def _check_queue_resource(
    queue: Mapping[str, Any], parent_max: dict[str, int] | None, path: str, problems: list[str]
) -> dict[str, int]:
    """configvalidator.go checkQueueResource (with checkResourceConfig), recursively.

    Enforced, per resource type, where the larger side defines that type (FitInMaxUndef):
    guaranteed <= max; max <= the parent's effective max (the minimum over the ancestors); sum of the
    children's guaranteed <= own guaranteed; sum of the children's guaranteed <= own effective max. A
    queue without guaranteed passes its children's sum up, so the check reaches the next ancestor that
    has one. A child's guaranteed above the parent's max is refused through the sum check.
    """
    source = f"{VALIDATOR_GO} checkQueueResource"
    guaranteed: dict[str, int] = {}
    maximum: dict[str, int] = {}
    try:
        guaranteed = _resource(queue["resources"]["guaranteed"])
    except ConfigError as exc:
        problems.append(
            _problem(
                "resource-quantity", f"queue {path} guaranteed: {exc}", f"{RESOURCES_GO} NewResourceFromConf"
            )
        )
    try:
        maximum = _resource(queue["resources"]["max"])
    except ConfigError as exc:
        problems.append(
            _problem("resource-quantity", f"queue {path} max: {exc}", f"{RESOURCES_GO} NewResourceFromConf")
        )
    if not _fit_in_max_undef(maximum, guaranteed):
        problems.append(
            _problem(
                "guaranteed-le-max",
                f"guaranteed resource {_fmt(guaranteed)} is larger than maximum resource {_fmt(maximum)} "
                f"for queue {path}",
                f"{VALIDATOR_GO} checkResourceConfig",
            )
        )
    if not _fit_in_max_undef(parent_max, maximum):
        problems.append(
            _problem(
                "child-max-le-parent-max",
                f"max resource of parent {_fmt(parent_max)} is smaller than maximum resource {_fmt(maximum)} "
                f"for queue {path}",
                source,
            )
        )
    effective_max = _component_wise_min(maximum, parent_max)
    sum_guaranteed: dict[str, int] = {}
    for child in queue["queues"] or []:
        _add_to(
            sum_guaranteed, _check_queue_resource(child, effective_max, f"{path}.{child['name']}", problems)
        )
    if not _fit_in_max_undef(guaranteed, sum_guaranteed):
        problems.append(
            _problem(
                "children-guaranteed-le-parent-guaranteed",
                f"guaranteed resource of parent {_fmt(guaranteed)} is smaller than sum of guaranteed "
                f"resources {_fmt(sum_guaranteed)} of the children for queue {path}",
                source,
            )
        )
    if not _fit_in_max_undef(effective_max, sum_guaranteed):
        problems.append(
            _problem(
                "children-guaranteed-le-parent-max",
                f"max resource {_fmt(effective_max)} is smaller than sum of guaranteed resources "
                f"{_fmt(sum_guaranteed)} of the children for queue {path}",
                source,
            )
        )
    return sum_guaranteed if _is_zero(guaranteed) else guaranteed


def _check_placement_filter(flt: Mapping[str, Any]) -> str | None:
    """configvalidator.go checkPlacementFilter."""
    ftype = flt["type"]
    if ftype != "" and ftype.lower() not in ("allow", "deny"):
        return f"invalid rule filter type {ftype}, filter type  must be either '', allow or deny"
    for kind, entries, name_re in (("user", flt["users"], _USER_RE), ("group", flt["groups"], _GROUP_RE)):
        if entries is not None and len(entries) == 1 and name_re.fullmatch(entries[0]) is None:
            try:
                re.compile(entries[0])
                compiles = True
            except re.error:
                compiles = False
            if not compiles or _SPECIAL_RE.search(entries[0]) is None:
                return f"invalid rule filter {kind} list is not a proper list or regexp: {entries}"
    return None


def _rule_chain(rule: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """configvalidator.go getRuleChain: parents first."""
    chain: list[Mapping[str, Any]] = []
    if rule["parent"] is not None:
        chain.extend(_rule_chain(rule["parent"]))
    chain.append(rule)
    return chain


def _longest_static_path(rule: Mapping[str, Any]) -> tuple[str, str, bool]:
    """configvalidator.go getLongestStaticPath; raises ValueError on a second qualified fixed rule."""
    static_path = ""
    chain_names = ""
    dynamic = False
    for entry in _rule_chain(rule):
        chain_names = entry["name"] if chain_names == "" else f"{chain_names}->{entry['name']}"
        if dynamic:
            continue
        if entry["name"] != "fixed":  # types.Fixed, compared case-sensitively here
            if static_path == "":
                static_path = "<dynamic>"
            dynamic = True
            continue
        queue_name: str = entry["value"]
        if queue_name.startswith(ROOT):  # strings.HasPrefix(queueName, "root"): "rootx" counts too
            if static_path != "":
                raise ValueError(f"illegal fully qualified 'fixed' rule with value {queue_name}")
            static_path = queue_name
            continue
        if static_path == "":
            static_path = ROOT
        static_path = f"{static_path}.{queue_name}"
    return static_path, chain_names, dynamic


def _check_hierarchy_for_placement(
    path: list[str],
    create: bool,
    dynamic: bool,
    conf: list[Mapping[str, Any]],
    parent_conf: Mapping[str, Any] | None,
) -> tuple[str, str]:
    """configvalidator.go checkQueueHierarchyForPlacement (names compared exactly; ``parent`` is the
    config flag, which only root gets automatically)."""
    queue_name = path[0]
    if not conf:
        assert parent_conf is not None
        if not parent_conf["parent"]:
            return "errLastQueueLeaf", parent_conf["name"]
        if not create:
            return "errNonExistingQueue", ""
        return "ok", ""
    found = next((queue for queue in conf if queue["name"] == queue_name), None)
    if found is None:
        return ("ok", "") if create else ("errNonExistingQueue", "")
    if len(path) == 1:
        if dynamic:
            return ("ok", "") if found["parent"] else ("errQueueNotLeaf", "")
        return ("errQueueNotLeaf", "") if found["parent"] else ("ok", "")
    return _check_hierarchy_for_placement(path[1:], create, dynamic, found["queues"] or [], found)


def _check_placement_rules(partition: Mapping[str, Any], problems: list[str]) -> None:
    """configvalidator.go checkPlacementRules (checkPlacementRule, getLongestPlacementPaths)."""
    rules: list[Mapping[str, Any]] = partition["placementrules"] or []
    for index, rule in enumerate(rules):
        current: Mapping[str, Any] | None = rule
        while current is not None:
            if _RULE_NAME_RE.fullmatch(current["name"]) is None:
                problems.append(
                    _problem(
                        "placement-rule-name",
                        f"rule #{index}: invalid rule name {current['name']}, "
                        "a name must be a valid identifier",
                        f"{VALIDATOR_GO} checkPlacementRule",
                    )
                )
            error = _check_placement_filter(current["filter"])
            if error is not None:
                problems.append(
                    _problem(
                        "placement-filter", f"rule #{index}: {error}", f"{VALIDATOR_GO} checkPlacementFilter"
                    )
                )
            current = current["parent"]
    for index, rule in enumerate(rules):
        try:
            path, chain, dynamic = _longest_static_path(rule)
        except ValueError as exc:
            problems.append(
                _problem(
                    "placement-fixed-qualified",
                    f"rule #{index}: {exc}",
                    f"{VALIDATOR_GO} getLongestStaticPath",
                )
            )
            continue
        if not path.startswith(ROOT):
            continue
        parts = path.lower().split(".")
        result, last = _check_hierarchy_for_placement(
            parts, rule["create"], dynamic, partition["queues"], None
        )
        source = f"{VALIDATOR_GO} checkQueueHierarchyForPlacement"
        if result == "errQueueNotLeaf":
            message = f"placement rule no. #{index} ({chain}) references a queue ({path}) which is not a leaf"
        elif result == "errNonExistingQueue":
            message = (
                f"placement rule no. #{index} ({chain}) references non-existing queues ({path}) "
                "and create is 'false'"
            )
        elif result == "errLastQueueLeaf":
            message = (
                f"placement rule no. #{index} ({chain}) references non-existing queues ({path}) which cannot "
                f"be created because the last queue ({last}) in the hierarchy is a leaf"
            )
        else:
            continue
        problems.append(_problem("placement-static-path", message, source))


def _rule_build_error(rule: Mapping[str, Any]) -> str | None:
    """placement/rule.go newRule and each rule's initialise; None when the rule can be built."""
    name = rule["name"].lower()  # rule.go normalise
    if name == "recovery":
        return "recovery rule cannot be part of the config, failing placement rule config"
    if name not in ("user", "fixed", "provided", "tag", "test"):
        return f"unknown rule name specified {rule['name']}, failing placement rule config"
    if name == "fixed":
        queue = rule["value"].lower()
        if queue == "":
            return f"a fixed queue rule must have a queue name set ({FIXED_RULE_GO} initialise)"
        for part in queue.split("."):
            if not is_queue_name_valid(part):
                return f"fixed rule value {rule['value']!r}: invalid queue name {part!r} ({FIXED_RULE_GO})"
        if queue.startswith(ROOT) and rule["parent"] is not None:
            return "cannot have a fixed queue rule with qualified queue getName and a parent rule"
        if queue.startswith(ROOT) and queue != ROOT and not queue.startswith(ROOT + "."):
            # fixed_rule.go: qualified = HasPrefix(queue, "root"); a value like "rootx" is used as is,
            # never resolves to a queue, and with create true crashes PlaceApplication's walk up.
            return f"fixed rule value {rule['value']!r} starts with 'root' but is not 'root.'-qualified"
    if name == "tag" and rule["value"] == "":
        return f"a tag queue rule must have a tag name set ({TAG_RULE_GO} initialise)"
    if rule["parent"] is not None:
        return _rule_build_error(rule["parent"])
    return None


def _check_child_templates(queue: Mapping[str, Any], path: str, problems: list[str]) -> None:
    """queue.go applyConf -> setTemplate -> template.go FromConf: on a parent queue (parent: true or has
    children) a non-empty childtemplate must have parseable resources, or the partition is not built."""
    is_leaf = not queue["parent"] and not queue["queues"]
    template = queue["childtemplate"]
    if not is_leaf:
        empty = (
            template["maxapplications"] == 0
            and _map_empty(template["properties"])
            and _map_empty(template["resources"]["guaranteed"])
            and _map_empty(template["resources"]["max"])
        )
        if not empty:
            for kind in ("max", "guaranteed"):
                try:
                    _resource(template["resources"][kind])
                except ConfigError as exc:
                    problems.append(
                        _problem(
                            "childtemplate-resources",
                            f"queue {path} childtemplate {kind}: {exc}",
                            f"{TEMPLATE_GO} FromConf via {QUEUE_GO} setTemplate",
                        )
                    )
    for child in queue["queues"] or []:
        _check_child_templates(child, f"{path}.{child['name']}", problems)


def _map_empty(mapping: Mapping[str, str] | None) -> bool:
    """template.go isMapEmpty: only entries with a non-empty key and value count."""
    return not any(key != "" and value != "" for key, value in (mapping or {}).items())


def _check_max_applications(queue: Mapping[str, Any], path: str, problems: list[str]) -> None:
    """configvalidator.go checkQueueMaxApplications."""
    source = f"{VALIDATOR_GO} checkQueueMaxApplications"
    for child in queue["queues"] or []:
        if queue["maxapplications"] != 0 and queue["maxapplications"] < child["maxapplications"]:
            problems.append(
                _problem(
                    "maxapplications",
                    f"queue {path}: parent maxApplications must be larger than child maxApplications",
                    source,
                )
            )
        if queue["maxapplications"] != 0 and child["maxapplications"] == 0:
            problems.append(
                _problem(
                    "maxapplications",
                    f"queue {path}.{child['name']}: maxApplications is either undefined or zero, "
                    "which is not allowed when parent queue's maxApplications is defined",
                    source,
                )
            )
        _check_max_applications(child, f"{path}.{child['name']}", problems)


def _check_limit_resource(
    queue: Mapping[str, Any],
    parent_users: dict[str, dict[str, int]],
    parent_groups: dict[str, dict[str, int]],
    path: str,
    problems: list[str],
) -> None:
    """configvalidator.go checkLimitResource: a user/group limit's max resources must fit in the same
    user's/group's (or, failing that, the wildcard's) limit set on an ancestor."""
    users = dict(parent_users)
    groups = dict(parent_groups)
    for limit in queue["limits"] or []:
        try:
            limit_max = _resource(limit["maxresources"])
        except ConfigError as exc:
            problems.append(
                _problem("limit-resource", f"queue {path}: {exc}", f"{VALIDATOR_GO} checkLimitResource")
            )
            return
        for kind, names, parent, current in (
            ("user", limit["users"] or [], parent_users, users),
            ("group", limit["groups"] or [], parent_groups, groups),
        ):
            for name in names:
                if name in parent:
                    if not _fit_in_max_undef(parent[name], limit_max):
                        problems.append(
                            _problem(
                                "limit-resource",
                                f"{kind} {name} max resource {_fmt(limit_max)} of queue {path} is greater "
                                f"than immediate or ancestor parent maximum resource {_fmt(parent[name])}",
                                f"{VALIDATOR_GO} checkLimitResource",
                            )
                        )
                        return
                    current[name] = _component_wise_min(limit_max, parent[name]) or {}
                elif "*" in parent and name != "*":
                    if not _fit_in_max_undef(parent["*"], limit_max):
                        problems.append(
                            _problem(
                                "limit-resource",
                                f"{kind} {name} max resource {_fmt(limit_max)} of queue {path} is greater "
                                f"than wildcard maximum resource {_fmt(parent['*'])} of immediate or "
                                "ancestor parent queue",
                                f"{VALIDATOR_GO} checkLimitResource",
                            )
                        )
                        return
                    current[name] = limit_max
                else:
                    current[name] = limit_max
    for child in queue["queues"] or []:
        _check_limit_resource(child, users, groups, f"{path}.{child['name']}", problems)


def _check_limit_max_applications(
    queue: Mapping[str, Any],
    parent_users: dict[str, int],
    parent_groups: dict[str, int],
    path: str,
    problems: list[str],
) -> None:
    """configvalidator.go checkLimitMaxApplications: same inheritance as checkLimitResource for
    maxapplications (0 = unlimited, so a 0 below a set limit is refused)."""
    users = dict(parent_users)
    groups = dict(parent_groups)
    for limit in queue["limits"] or []:
        wanted: int = limit["maxapplications"]
        for kind, names, parent, current in (
            ("user", limit["users"] or [], parent_users, users),
            ("group", limit["groups"] or [], parent_groups, groups),
        ):
            for name in names:
                inherited: int | None = None
                label = "immediate or ancestor parent max applications"
                if name in parent:
                    inherited = parent[name]
                elif "*" in parent and name != "*":
                    inherited = parent["*"]
                    label = "wildcard max applications"
                if inherited is not None and inherited != 0 and (inherited < wanted or wanted == 0):
                    problems.append(
                        _problem(
                            "limit-maxapplications",
                            f"{kind} {name} max applications {wanted} of queue {path} is greater than "
                            f"{label} {inherited}",
                            f"{VALIDATOR_GO} checkLimitMaxApplications",
                        )
                    )
                    return
                current[name] = wanted
    for child in queue["queues"] or []:
        _check_limit_max_applications(child, users, groups, f"{path}.{child['name']}", problems)


def _partition_problems(partition: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    root = partition["queues"][0]
    _check_queues(root, ROOT, 1, problems)
    _check_queue_resource(root, None, ROOT, problems)
    _check_placement_rules(partition, problems)
    # configvalidator.go checkNodeSortingPolicy -> nodesorting_policy.go SortingPolicyFromString
    policy = partition["nodesortpolicy"]
    if policy["type"] not in ("", "fair", "binpacking"):
        problems.append(
            _problem(
                "nodesortpolicy",
                f"undefined policy: {policy['type']} (exactly '', 'fair' or 'binpacking')",
                f"{NODESORT_GO} SortingPolicyFromString via {VALIDATOR_GO} checkNodeSortingPolicy",
            )
        )
    for key, weight in (policy["resourceweights"] or {}).items():
        if weight < 0:
            problems.append(
                _problem(
                    "nodesortpolicy",
                    f"negative resource weight for {key} is not allowed",
                    f"{VALIDATOR_GO} checkNodeSortingPolicy",
                )
            )
    _check_max_applications(root, ROOT, problems)
    _check_limit_resource(root, {}, {}, ROOT, problems)
    _check_limit_max_applications(root, {}, {}, ROOT, problems)
    # Refused when the scheduler builds the partition from the validated config (context.go
    # updateSchedulerConfig -> partition.go newPartitionContext / updatePartitionDetails).
    _check_child_templates(root, ROOT, problems)
    for index, rule in enumerate(partition["placementrules"] or []):
        error = _rule_build_error(rule)
        if error is not None:
            problems.append(
                _problem(
                    "placement-rule-build",
                    f"rule #{index}: {error} (at start-up the placement manager then has no rules and "
                    "rejects every application; on a reload the config is refused)",
                    f"{RULE_GO} newRule via {PLACEMENT_GO} NewPlacementManager/UpdateRules",
                )
            )
    return problems


def config_problems(text: str) -> list[str]:
    """Every reason YuniKorn would refuse this ``queues.yaml`` (empty list: it loads).

    Each entry is ``"<rule>: <message> [<upstream file> <function>]"``. A parse error (unknown key, wrong
    type, bad YAML) is returned as the single entry. Upstream stops at the first error; this lists all
    it finds, so any entry means the config is refused.
    """
    try:
        config = parse_config(text)
    except ConfigError as exc:
        return [_problem("parse", str(exc), f"{CONFIG_GO} ParseAndValidateConfig")]
    partitions, problems = _normalise_partitions(config)
    for partition in partitions:
        problems.extend(_partition_problems(partition))
    return problems


def validated_partitions(text: str) -> list[dict[str, Any]]:
    """The partitions as Validate leaves them (root inserted, names normalised); ConfigError if refused."""
    problems = config_problems(text)
    if problems:
        raise ConfigError("\n".join(problems))
    partitions, _ = _normalise_partitions(parse_config(text))
    return partitions


# ---------------------------------------------------------------------------------------------------
# Placement simulation (placement.go PlaceApplication, the rules, partition.go AddApplication).


@dataclass
class _ACL:
    """acl.go ACL built by NewACL."""

    users: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    all_allowed: bool = False

    @classmethod
    def parse(cls, text: str) -> _ACL:
        acl = cls()
        if text == "":
            return acl
        fields = text.split(" ")
        acl.all_allowed = _go_trim_space(text) == "*"
        user_list = fields[0].split(",")
        if len(user_list) == 1 and user_list[0] == "*":
            acl.all_allowed = True
        else:
            acl.users = {user for user in user_list if user and _ACL_USER_RE.fullmatch(user)}
        if len(fields) == 2 and not acl.all_allowed:
            group_list = fields[1].split(",")
            if len(group_list) == 1 and group_list[0] == "*":
                acl.users = set()
                acl.all_allowed = True
            else:
                acl.groups = {group for group in group_list if group and _ACL_GROUP_RE.fullmatch(group)}
        return acl

    def check(self, user: str, groups: Sequence[str]) -> bool:
        return self.all_allowed or user in self.users or any(group in self.groups for group in groups)


@dataclass(eq=False)
class _Queue:
    name: str
    path: str
    leaf: bool
    submit: _ACL
    admin: _ACL
    parent: _Queue | None = None
    children: dict[str, _Queue] = field(default_factory=dict)

    def check_submit_access(self, user: str, groups: Sequence[str]) -> bool:
        """queue.go CheckSubmitAccess: submit or admin ACL here or on any ancestor."""
        if self.path == f"{ROOT}.{RECOVERY_QUEUE}":
            return False
        if self.submit.check(user, groups) or self.admin.check(user, groups):
            return True
        return self.parent.check_submit_access(user, groups) if self.parent is not None else False


def _build_queue(conf: Mapping[str, Any], parent: _Queue | None) -> _Queue:
    """queue.go NewConfiguredQueue/applyConf: names lower-cased; a leaf unless parent: true or children."""
    name = conf["name"].lower()
    queue = _Queue(
        name=name,
        path=name if parent is None else f"{parent.path}.{name}",
        leaf=not conf["parent"] and not conf["queues"],
        submit=_ACL.parse(conf["submitacl"]),
        admin=_ACL.parse(conf["adminacl"]),
        parent=parent,
    )
    for child in conf["queues"] or []:
        built = _build_queue(child, queue)
        queue.children[built.name] = built
    return queue


class _Rejected(Exception):
    """The application is rejected (placement error or failed queue creation)."""


@dataclass
class _App:
    queue_path: str
    tags: dict[str, str]
    user: str
    groups: list[str]

    def tag(self, name: str) -> str:
        """application.go GetTag: the key is matched case-insensitively."""
        for key, value in self.tags.items():
            if key.lower() == name.lower():
                return value
        return ""


@dataclass
class _Filter:
    """filter.go Filter built by newFilter."""

    allow: bool = True
    empty: bool = True
    users: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    user_exp: re.Pattern[str] | None = None
    group_exp: re.Pattern[str] | None = None

    @classmethod
    def build(cls, conf: Mapping[str, Any]) -> _Filter:
        flt = cls(allow=conf["type"] != "deny")  # case-sensitive here, unlike the validator
        for kind, entries, name_re in (
            ("user", conf["users"], _USER_RE),
            ("group", conf["groups"], _GROUP_RE),
        ):
            entries = entries or []
            names: set[str] = set()
            expression: re.Pattern[str] | None = None
            if len(entries) == 1:
                if _SPECIAL_RE.search(entries[0]):
                    try:
                        expression = re.compile(entries[0])
                    except re.error:
                        expression = None
                elif name_re.fullmatch(entries[0]):
                    names.add(entries[0])
                flt.empty = False
            elif len(entries) >= 2:
                names = {entry for entry in entries if name_re.fullmatch(entry)}
                flt.empty = False
            if kind == "user":
                flt.users, flt.user_exp = names, expression
            else:
                flt.groups, flt.group_exp = names, expression
        return flt

    def allow_user(self, user: str, groups: Sequence[str]) -> bool:
        if self.empty:
            return self.allow
        if (self.user_exp.search(user) is not None) if self.user_exp else user in self.users:
            return self.allow
        for group in groups:
            if (self.group_exp.search(group) is not None) if self.group_exp else group in self.groups:
                return self.allow
        return not self.allow


class _Partition:
    def __init__(self, conf: Mapping[str, Any]) -> None:
        self.root = _build_queue(conf["queues"][0], None)
        rules = conf["placementrules"] or []
        # placement.go buildRules: no rules means one implicit provided rule with create false.
        self.rules: list[Mapping[str, Any]] = (
            list(rules) if rules else [{**_zero(_struct("PlacementRule")), "name": "provided"}]
        )

    def get_queue(self, name: str) -> _Queue | None:
        """partition.go getQueueInternal: lower-cased, must start at root."""
        parts = name.lower().split(".")
        if not parts or parts[0] != ROOT:
            return None
        queue: _Queue | None = self.root
        for part in parts[1:]:
            assert queue is not None
            queue = queue.children.get(part)
            if queue is None:
                break
        return queue

    def _qualify_parent(self, rule: Mapping[str, Any], app: _App) -> str:
        """The parent part shared by the fixed/tag/provided/user rules.

        "" when the parent rule did not match; an existing leaf as parent is an error (rejection)."""
        parent_name = ""
        if rule["parent"] is not None:
            parent_name = self.run_rule(rule["parent"], app)
            if parent_name == "":
                return ""
            if not parent_name.startswith(ROOT + "."):
                parent_name = f"{ROOT}.{parent_name}"
            parent_queue = self.get_queue(parent_name)
            if parent_queue is not None and parent_queue.leaf:
                raise _Rejected(f"parent rule returned a leaf queue: {parent_name}")
        return parent_name or ROOT

    def run_rule(self, rule: Mapping[str, Any], app: _App) -> str:
        """placement/*_rule.go placeApplication; "" means the rule did not match."""
        name = rule["name"].lower()
        flt = _Filter.build(rule["filter"])
        if name == "provided":  # provided_rule.go
            queue_name = app.queue_path
            if queue_name == "" or not flt.allow_user(app.user, app.groups):
                return ""
            queue_name = self._dynamic_name(queue_name, rule, app)
        elif name == "tag":  # tag_rule.go
            value = app.tag(rule["value"].lower())
            if value == "" or not flt.allow_user(app.user, app.groups):
                return ""
            queue_name = self._dynamic_name(value, rule, app)
        elif name == "user":  # user_rule.go
            if not flt.allow_user(app.user, app.groups):
                return ""
            child = app.user.replace(".", "_dot_")
            if not is_queue_name_valid(child):
                raise _Rejected(f"invalid queue name from user {app.user}")
            parent_name = self._qualify_parent(rule, app)
            if parent_name == "":
                return ""
            queue_name = f"{parent_name}.{child}"
        elif name == "fixed":  # fixed_rule.go
            if not flt.allow_user(app.user, app.groups):
                return ""
            queue_name = rule["value"].lower()
            if not queue_name.startswith(ROOT):
                parent_name = self._qualify_parent(rule, app)
                if parent_name == "":
                    return ""
                queue_name = f"{parent_name}.{queue_name}"
        else:
            raise ConfigError(f"rule {rule['name']!r} is not simulated ({RULE_GO} newRule)")
        if not rule["create"] and self.get_queue(queue_name) is None:
            return ""
        return queue_name

    def _dynamic_name(self, value: str, rule: Mapping[str, Any], app: _App) -> str:
        """provided_rule.go / tag_rule.go: a "root."-qualified value is used as is (each part must be a
        valid name); otherwise dots become "_dot_" and the parent rule (or root) is put in front.
        An invalid name is an error, which rejects the application outright."""
        if value.startswith(ROOT + "."):
            for part in value.split("."):
                if not is_queue_name_valid(part):
                    raise _Rejected(f"invalid queue name part {part!r} in {value!r}")
            return value
        child = value.replace(".", "_dot_")
        if not is_queue_name_valid(child):
            raise _Rejected(f"invalid queue name {child!r}")
        parent_name = self._qualify_parent(rule, app)
        if parent_name == "":
            return ""
        return f"{parent_name}.{child}"

    def place(self, app: _App) -> str:
        """placement.go PlaceApplication followed by partition.go AddApplication's queue handling."""
        queue_name = ""
        rules: list[Mapping[str, Any] | None] = [*self.rules, None]  # None: the implicit recovery rule
        remaining = len(rules)
        for rule in rules:
            remaining -= 1
            # recovery_rule.go: only for forced (already running) applications; a new pod is not forced.
            queue_name = self.run_rule(rule, app) if rule is not None else ""
            # placement.go: no queue after the last rule -> root.default if that queue exists.
            if remaining == 0 and queue_name == "" and self.get_queue(DEFAULT_PLACEMENT_QUEUE) is not None:
                queue_name = DEFAULT_PLACEMENT_QUEUE
            if queue_name == "":
                continue
            queue = self.get_queue(queue_name)
            if queue is None:
                current = queue_name
                while queue is None:
                    if "." not in current:
                        raise _Rejected(f"no existing ancestor for {queue_name} (Go slice panic)")
                    current = current[: current.rfind(".")]
                    queue = self.get_queue(current)
                if not queue.check_submit_access(app.user, app.groups):
                    queue_name = ""
                    continue
            else:
                if not queue.leaf or not queue.check_submit_access(app.user, app.groups):
                    queue_name = ""
                    continue
            break
        if queue_name == "":
            raise _Rejected("application rejected: no placement rule matched")
        queue = self.get_queue(queue_name)
        if queue is None:
            queue = self._create_queue(queue_name, app)
        if not queue.leaf:
            raise _Rejected(f"failed to find queue {queue_name}")
        return queue.path

    def _create_queue(self, name: str, app: _App) -> _Queue:
        """partition.go createQueue and queue.go NewDynamicQueue."""
        if not name.startswith(ROOT) or "." not in name:
            raise _Rejected(f"illegal queue name passed in: {name}")
        to_create: list[str] = []
        current = name
        queue = self.get_queue(current)
        while queue is None:
            to_create.append(current[current.rfind(".") + 1 :])
            current = current[: current.rfind(".")]
            queue = self.get_queue(current)
        if not queue.check_submit_access(app.user, app.groups):
            raise _Rejected(f"submit access to queue {current} denied during create of: {name}")
        if queue.leaf:
            raise _Rejected(f"creation of queue {name} failed parent is already a leaf: {current}")
        for index in range(len(to_create) - 1, -1, -1):
            part = to_create[index]
            if not is_queue_name_valid(part) or part == RECOVERY_QUEUE:
                raise _Rejected(f"invalid dynamic queue name {part!r}")
            child = _Queue(
                name=part.lower(),
                path=f"{queue.path}.{part.lower()}",
                leaf=index == 0,
                submit=_ACL(),
                admin=_ACL(),
                parent=queue,
            )
            queue.children[child.name] = child
            queue = child
        return queue


def place(
    config_text: str,
    *,
    queue_label: str | None,
    namespace: str | None,
    partition: str = "default",
    user: str = SHIM_DEFAULT_USER,
    groups: Sequence[str] | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> str | None:
    """The fully qualified leaf queue a new pod's application lands in, or None when it is rejected.

    ``queue_label`` is the queue name the shim sends (yunikorn-k8shim utils.go GetQueueNameFromPod: label
    ``yunikorn.apache.org/queue``, else annotation ``yunikorn.apache.org/queue``, else label ``queue``;
    None/"" when absent -- since 1.6.0, YUNIKORN-2711, the shim no longer defaults it to root.default).
    It is passed as is, not lower-cased; queue lookups lower-case it. The shim tags the application
    with ``namespace`` (metadata.go getAppMetadata; "default" for an empty namespace). The user defaults
    to the shim's ``nobody``; without groups the core's no-resolver cache gives the user's name as the
    only group (usergroup_no_resolver.go). ``namespace=None`` sends no namespace tag at all (not
    something the shim does; it matches upstream's placement tests). An empty ``config_text`` means config.go
    DefaultSchedulerConfig (context.go). Raises :class:`ConfigError` when the config would be refused.
    """
    text = config_text if config_text != "" else DEFAULT_SCHEDULER_CONFIG
    partitions = validated_partitions(text)
    # context.go handleRMUpdateApplicationEvent: an unknown partition rejects the application.
    conf = next((p for p in partitions if p["name"] == partition), None)
    if conf is None:
        return None
    tags = {"application.create.force": "false"}
    if namespace is not None:
        tags["namespace"] = namespace or "default"
    tags.update(extra_tags or {})
    app = _App(
        queue_path=queue_label or "",
        tags=tags,
        user=user,
        groups=list(groups) if groups is not None else [user],
    )
    try:
        return _Partition(conf).place(app)
    except _Rejected:
        return None
