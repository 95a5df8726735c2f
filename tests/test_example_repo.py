"""The example fleet repo is what a real team would own: it validates clean and matches the schemas."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from fleet_testing import EXAMPLE, ROOT, run_cli
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from reconciler.spec.schema import schema_file_name


def _spec_files() -> list:
    # Hidden paths (the CI examples under .github/, .gitlab-ci.yml) are no specs: fleet skips them.
    return sorted(
        p
        for p in EXAMPLE.rglob("*.y*ml")
        if "playbooks" not in (parts := p.relative_to(EXAMPLE).parts)
        and not any(part.startswith(".") for part in parts)
    )


def _documents() -> list[tuple[str, dict]]:
    yaml = YAML(typ="safe", pure=True)
    out = []
    for path in _spec_files():
        for doc in yaml.load_all(path.read_text()):
            if doc is not None:
                out.append((str(path.relative_to(EXAMPLE)), doc))
    return out


def test_example_validates_clean() -> None:
    code, output = run_cli("validate", str(EXAMPLE), "--no-cache", "--strict", "--format", "json")
    assert code == 0, output
    assert json.loads(output) == []


def test_example_is_a_realistic_fleet() -> None:
    kinds = Counter(doc["kind"] for _, doc in _documents())
    assert kinds["Fleet"] == 1
    assert kinds["Machine"] >= 24
    assert kinds["VirtualMachine"] >= 6
    assert kinds["Cluster"] == 2
    assert kinds["SparkPool"] == 3
    roles = Counter(doc["spec"].get("role") for _, doc in _documents() if doc["kind"] == "Machine")
    assert roles["hypervisor"] >= 2 and roles["kubernetes-node"] >= 2 and roles["spark-node"] >= 2
    sites = {doc["spec"]["site"] for _, doc in _documents() if doc["kind"] == "Machine"}
    assert len(sites) == 2
    assert (EXAMPLE / "playbooks" / "roles").is_dir()


@pytest.mark.parametrize("path", _spec_files(), ids=lambda p: str(p.relative_to(EXAMPLE)))
def test_every_spec_file_names_its_schema_for_editors(path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    schema = (path.parent / first.split("$schema=", 1)[1].strip()).resolve()
    assert schema.is_file(), f"{path}: {schema} does not exist"
    kinds = {doc["kind"] for doc in YAML(typ="safe", pure=True).load_all(path.read_text()) if doc}
    assert kinds == {json.loads(schema.read_text())["title"].split()[-1]}, (
        "one kind per file, matching its schema"
    )


def test_every_example_document_matches_its_json_schema() -> None:
    validators = {}
    for path, doc in _documents():
        name = schema_file_name(doc["kind"])
        if name not in validators:
            schema = json.loads((ROOT / "schemas" / name).read_text())
            Draft202012Validator.check_schema(schema)
            validators[name] = Draft202012Validator(schema)
        errors = [e.message for e in validators[name].iter_errors(doc)]
        assert errors == [], f"{path}: {doc['metadata']['name']}: {errors}"
