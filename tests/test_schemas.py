"""schemas/ is generated from the models and must never fall behind them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fleet_testing import ROOT, copy_example, run_cli
from jsonschema import Draft202012Validator

from reconciler.spec import models
from reconciler.spec.schema import all_schemas


@pytest.mark.parametrize("directory", ["schemas", "fleet-repo-example/schemas"])
def test_schemas_directory_is_up_to_date(directory: str) -> None:
    from reconciler.report.plan_json import schema_text

    expected = {**all_schemas(), "plan.schema.json": schema_text()}
    on_disk = {p.name: p.read_text() for p in (ROOT / directory).glob("*.schema.json")}
    stale = sorted(name for name in expected if on_disk.get(name) != expected[name])
    extra = sorted(set(on_disk) - set(expected))
    assert not stale and not extra, f"run `make schemas` (stale in {directory}: {stale}, unknown: {extra})"


def test_the_checked_in_openapi_schema_is_the_served_one() -> None:
    from reconciler.controller.api import openapi_document

    on_disk = (ROOT / "schemas" / "openapi.json").read_text()
    assert on_disk == openapi_document(), "run `make schemas`: schemas/openapi.json is stale"
    paths = json.loads(on_disk)["paths"]
    assert {"/healthz", "/readyz", "/metrics", "/api/v1/status", "/api/v1/reconcile"} <= set(paths)


def test_the_examples_schema_headers_resolve_wherever_it_is_copied(tmp_path: Path) -> None:
    copy = copy_example(tmp_path / "elsewhere" / "my-fleet")
    headers = 0
    for spec in copy.rglob("*.yaml"):
        match = re.search(r"# yaml-language-server: \$schema=(\S+)", spec.read_text())
        if match is None:
            continue
        headers += 1
        target = (spec.parent / match.group(1)).resolve()
        assert target.is_file() and target.is_relative_to(copy), (spec, match.group(1))
        kind = re.search(r"^kind: (\w+)$", spec.read_text(), re.M)
        assert kind is not None and target.name == f"{kind.group(1).lower()}.schema.json", spec


def test_every_kind_has_a_valid_2020_12_schema() -> None:
    schemas = all_schemas()
    assert len(schemas) == len(models.KINDS)
    for content in schemas.values():
        schema = json.loads(content)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)
        assert schema["additionalProperties"] is False


def test_schemas_reject_what_the_models_reject() -> None:
    schema = json.loads(all_schemas()["machine.schema.json"])
    validator = Draft202012Validator(schema)
    document = {
        "apiVersion": "fleet/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": "m1"},
        "spec": {"site": "s", "rack": "r", "bmc": {"address": "10.0.0.1", "credentialsRef": "c"}},
    }
    assert list(validator.iter_errors(document)) == []
    document["spec"]["powr"] = "on"
    assert [e.validator for e in validator.iter_errors(document)] == ["additionalProperties"]


def test_schema_command_writes_and_prints(tmp_path) -> None:
    code, output = run_cli("schema", "--write", str(tmp_path))
    assert code == 0, output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*all_schemas(), "plan.schema.json"])
    code, output = run_cli("schema", "machine")
    assert code == 0 and json.loads(output)["title"] == "fleet Machine"
    code, output = run_cli("schema", "gizmo")
    assert code == 2 and "unknown kind" in output


def test_every_model_is_a_registered_kind() -> None:
    from reconciler.kinds import KINDS

    assert tuple(models.KINDS) == tuple(KINDS)
    assert all(KINDS[name].model is model for name, model in models.KINDS.items())
