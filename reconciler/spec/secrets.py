"""Find literal secrets in spec documents, without ever repeating them.

Credentials reach fleet only through `credentialsRef`. A value under a key that
names a secret (password, token, API key, ...) or a PEM private key anywhere is
an error. Diagnostics name the field, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from reconciler.spec.diagnostics import YamlPath


class Secret:
    """A secret value (a password, a token, a key); `reveal()` is the only way to read it, and
    its repr and str are masked. Credential sources hand these out; the forges take them."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))  # worker processes need the value itself


# A cheap gate, run on the lower-cased file: without any of these words it holds no
# secret-looking key and no PEM block.
_GATE_WORDS = ("pass", "secret", "token", "pwd", "key", "begin")


def may_hold_secrets(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in _GATE_WORDS)


_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_SECRET_WORDS = frozenset({"password", "passwd", "pass", "pwd", "passphrase", "secret", "token"})
_SECRET_PAIRS = frozenset(
    {("api", "key"), ("apikey",), ("private", "key"), ("access", "key"), ("secret", "key"), ("auth", "key")}
)
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
# A reference to a secret kept elsewhere is fine: a Jinja expression or an Ansible vault lookup.
_TEMPLATE = re.compile(r"^\s*(\{\{.*\}\}|\$\{[A-Za-z_][A-Za-z0-9_]*\})\s*$", re.S)


def is_secret_key(key: str) -> bool:
    words = [w.lower() for w in _WORDS.findall(key)]
    if not words:
        return False
    if words[-1] in _SECRET_WORDS:
        return True
    return tuple(words[-2:]) in _SECRET_PAIRS or (words[-1],) in _SECRET_PAIRS


def find_literal_secrets(value: Any, path: YamlPath = ()) -> Iterator[tuple[YamlPath, str]]:
    """Yield (field path, reason) for every literal secret in a document."""
    stack: list[tuple[Any, YamlPath]] = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            for key, child in node.items():
                child_path = (*where, str(key))
                if (
                    isinstance(key, str)
                    and is_secret_key(key)
                    and isinstance(child, (str, int, float))
                    and not isinstance(child, bool)
                    and str(child) != ""
                    and not _TEMPLATE.match(str(child))
                ):
                    yield child_path, f"field {key!r} holds a literal secret"
                else:
                    stack.append((child, child_path))
        elif isinstance(node, list):
            stack.extend((child, (*where, index)) for index, child in enumerate(node))
        elif isinstance(node, str) and _PRIVATE_KEY.search(node):
            yield where, "a private key is written into the spec"
