"""The fast loader (rapidyaml) gives exactly the values of the reference loader (ruamel.yaml, YAML 1.2).

Files the fast path is unsure about go to ruamel, so agreement must hold for every
file; these tests prove it on the example, the corpus and a table of tricky scalars,
and check that the fast path really is taken for ordinary spec files.
"""

from __future__ import annotations

import math
import random

import pytest
from fleet_testing import EXAMPLE, ROOT

from reconciler.spec.yamlload import load_yaml, load_yaml_reference

CORPUS_FILES = sorted(
    p for p in [*EXAMPLE.rglob("*.y*ml"), *(ROOT / "tests" / "corpus").rglob("*.y*ml")] if p.is_file()
)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _agree(path: str, data: bytes) -> bool:
    fast, reference = load_yaml(path, data), load_yaml_reference(path, data)
    assert [d.code for d in fast.diagnostics] == [d.code for d in reference.diagnostics]
    assert _same(fast.documents, reference.documents), (
        f"{path}: {fast.documents!r} != {reference.documents!r}"
    )
    return fast.fast


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_loaders_agree_on_every_example_and_corpus_file(path) -> None:
    _agree(str(path), path.read_bytes())


def test_fast_path_is_taken_for_ordinary_spec_files() -> None:
    machine_files = sorted((EXAMPLE / "machines").rglob("*.yaml"))
    assert machine_files
    assert all(_agree(str(p), p.read_bytes()) for p in machine_files)


TRICKY_SCALARS = [
    "on",
    "off",
    "yes",
    "no",
    "y",
    "n",
    "true",
    "True",
    "TRUE",
    "false",
    "null",
    "Null",
    "NULL",
    "~",
    "",
    "0",
    "-0",
    "+0",
    "017",
    "0o17",
    "0x1F",
    "0b101",
    "1_000",
    "12:30",
    "1:2:3",
    "1.",
    ".5",
    "-.5",
    "+.5",
    "1e3",
    "1E3",
    "1.0e+3",
    "1e+3",
    "12e3",
    ".inf",
    "-.Inf",
    ".NaN",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "10.0.0.1",
    "1.2.3",
    "0.0.1",
    "=",
    "<<",
    "-",
    "--",
    "a-b",
    "3Gi",
    "500m",
    "99999999999999999999",
    "'quoted'",
    '"double"',
    '"\\u00e9t\\u00e9"',
    "'it''s'",
    '"tab\\there"',
    "x#y",
    "é",
    "0777",
    "+12",
    "-12",
    "0.1",
    "-1.5e-3",
    "1__0",
    "0x",
    "0b",
    "0o",
    "1e",
    "e3",
    ".e3",
    "inf",
    "nan",
    "NaN",
]


@pytest.mark.parametrize("scalar", TRICKY_SCALARS)
def test_loaders_agree_on_tricky_scalars(scalar: str) -> None:
    for shape in (
        "value: {s}\n",
        "- {s}\n",
        "list: [a, {s}]\nk: v\n",
        "{s}: key\n",
        "nested:\n  deeper:\n    x: {s}\n",
    ):
        text = shape.format(s=scalar)
        if scalar in ("", "-", "--", "=") and shape.startswith("{s}"):
            continue
        _agree("t.yaml", text.encode())


@pytest.mark.parametrize(
    "text",
    [
        "---\na: 1\n---\nb: 2\n",
        "---\n---\na: 1\n",
        "a: 1\n...\n---\nb: 2\n",
        "# only a comment\n",
        "a: |\n  line one\n  line two\n",
        "a: >-\n  folded\n  text\n",
        "a:\n- 1\n- 2\n",
        "? complex\n: value\n",
        'a: "multi\n  line"\n',
        "a: 'x' # trailing comment\n",
        "\ufeffa: bom\n",
        "a: [1, 2]\nb: {c: d}\n",
        "- a: 1\n  b: 2\n- c: 3\n",
    ],
)
def test_loaders_agree_on_document_shapes(text: str) -> None:
    _agree("t.yaml", text.encode("utf-8"))


def test_power_on_is_a_string_never_a_boolean() -> None:
    loaded = load_yaml("m.yaml", b"spec:\n  power: on\n  bootPersistent: true\n")
    assert loaded.documents == [{"spec": {"power": "on", "bootPersistent": True}}]


ORDINARY_SCALARS = [
    "alpha",
    "10.0.0.1",
    "3Gi",
    "500m",
    "web-01",
    "x y z",
    "1",
    "2.5",
    "nyc1-r01-07",
    "/etc/x",
]


def _scalar(rng: random.Random) -> str:
    return rng.choice(TRICKY_SCALARS if rng.random() < 0.3 else ORDINARY_SCALARS)


def _random_document(rng: random.Random, depth: int = 0) -> str:
    """A YAML mapping built from tricky scalars in every quoting style."""
    lines = []
    for index in range(rng.randint(1, 6)):
        key = rng.choice([f"k{index}", _scalar(rng) or "e", f"'{_scalar(rng)}'"])
        choice = rng.random()
        indent = "  " * depth
        if choice < 0.2 and depth < 4:
            lines.append(f"{indent}{key}:")
            lines.append(_random_document(rng, depth + 1))
        elif choice < 0.35:
            items = ", ".join(_scalar(rng) or "x" for _ in range(rng.randint(0, 4)))
            lines.append(f"{indent}{key}: [{items}]")
        elif choice < 0.5:
            lines.append(f"{indent}{key}:")
            for _ in range(rng.randint(1, 3)):
                lines.append(f"{indent}- {_scalar(rng)}")
        else:
            value = _scalar(rng)
            style = rng.choice(["{v}", "'{v}'", '"{v}"', "{v} # note"])
            if "'" in value or '"' in value or "\\" in value:
                style = "{v}"
            lines.append(f"{indent}{key}: {style.format(v=value)}")
    return "\n".join(lines)


def test_loaders_agree_on_random_documents() -> None:
    rng = random.Random(20261125)
    fast_taken = 0
    for _ in range(400):
        text = "\n---\n".join(_random_document(rng) for _ in range(rng.randint(1, 3))) + "\n"
        fast_taken += _agree("random.yaml", text.encode())
    assert fast_taken > 20, "the generator should also produce files the fast path takes"
