"""The files fleet writes for Ansible (the inventory, the playbook that imports the spec's), with
the values Ansible must take as data, never as Jinja templates, tagged `!unsafe`.

Ansible renders every string of an inventory or playbook it trusts as a template, and a template
can run code on the controller (`lookup('pipe', ...)`, filters). A value wrapped in `Unsafe` is
written with YAML's `!unsafe` tag on every string inside it that could be a template, mapping
keys included, so Ansible hands it to modules exactly as written. Everything is written in YAML's
flow style (JSON with tags), every string double-quoted with every character outside printable
ASCII escaped, so what Ansible reads back is exactly the value given, whatever it holds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

UNSAFE_TAG = "!unsafe"

# Ansible's `!unsafe` constructor resolves a scalar's type again, ignoring its quotes: `!unsafe
# "off"` reads back as false, `!unsafe "1"` as 1. A string without these characters (those that
# open Jinja's blocks, `{{ {% {#`, and Ansible's `#jinja2:` header, which can change them) is
# never a template, so it is written untagged and stays a string; every other string is tagged
# (none of them looks like a YAML boolean, number, null or timestamp).
_TEMPLATE_CHARACTERS = frozenset("{%#")


@dataclasses.dataclass(frozen=True, slots=True)
class Unsafe:
    """A value (a string, or a list or mapping holding strings) Ansible must never template."""

    value: Any


def dump_yaml(value: Any) -> str:
    """`value` as one line of flow-style YAML, the strings inside `Unsafe` values tagged `!unsafe`.

    Mapping keys that are not strings become strings as JSON makes them (`1` -> "1", `true` ->
    "true"); anything but mappings, lists, tuples, strings, numbers, booleans and None is a
    TypeError, as for `json.dumps`."""
    return _node(value, unsafe=False) + "\n"


def _node(value: Any, *, unsafe: bool) -> str:
    if isinstance(value, Unsafe):
        return _node(value.value, unsafe=True)
    if isinstance(value, Mapping):
        items = (f"{_string(_key(k), unsafe=unsafe)}: {_node(v, unsafe=unsafe)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_node(v, unsafe=unsafe) for v in value) + "]"
    if isinstance(value, str):
        return _string(value, unsafe=unsafe)
    return _scalar(value)


def _key(key: Any) -> str:
    if isinstance(key, Unsafe):
        key = key.value
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return _scalar(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    raise TypeError(f"Object of type {type(value).__name__} is not YAML serializable")


def _string(text: str, *, unsafe: bool) -> str:
    quoted = '"' + "".join(_escaped(c) for c in text) + '"'
    if unsafe and not _TEMPLATE_CHARACTERS.isdisjoint(text):
        return f"{UNSAFE_TAG} {quoted}"
    return quoted


def _escaped(char: str) -> str:
    if char == '"':
        return '\\"'
    if char == "\\":
        return "\\\\"
    code = ord(char)
    if 0x20 <= code < 0x7F:
        return char
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
