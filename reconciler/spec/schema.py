"""JSON Schemas (2020-12) of every kind, generated from the models.

`schemas/` in the repo is the output of `fleet schema --write schemas/`; a test
fails when the two differ, so editors always check against the real model.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.spec import models

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_file_name(kind: str) -> str:
    return f"{kind.lower()}.schema.json"


def kind_schema(kind: str) -> dict[str, Any]:
    model = models.KINDS[kind]
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"https://fleet.dev/schemas/{models.API_VERSION}/{schema_file_name(kind)}",
        "title": f"fleet {kind}",
        "description": (model.__doc__ or kind).strip().splitlines()[0],
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def all_schemas() -> dict[str, str]:
    """File name -> file content, for every kind."""
    return {schema_file_name(kind): render(kind_schema(kind)) for kind in models.KINDS}
