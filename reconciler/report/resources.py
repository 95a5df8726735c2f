"""What a fleet repo declares, as `fleet get` lists it: a table, JSON or YAML of the documents,
long values shortened (see `reconciler.bounded`; `fleet inventory` gives Ansible the whole values)."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text
from ruamel.yaml import YAML

from reconciler.bounded import shorten, shorten_all
from reconciler.kinds import kind_of
from reconciler.spec import models


def resources_table(
    documents: Sequence[models.Document], paths: Mapping[str, str], console: Console, *, labels: bool
) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ["KIND", "NAME", "WHERE", "WHAT", "FILE"] + (["LABELS"] if labels else [])
    for column in columns:
        table.add_column(
            column, no_wrap=column != "LABELS", overflow="fold" if column == "LABELS" else "ellipsis"
        )
    for document in documents:
        kind = kind_of(document)
        row = [
            document.kind_name,
            document.metadata.name,
            kind.where(document),
            kind.what(document),
            paths.get(document.address, ""),
        ]
        if labels:
            row.append(
                ",".join(f"{shorten(k)}={shorten(v)}" for k, v in sorted(document.metadata.labels.items()))
            )
        table.add_row(*(Text(shorten(cell)) for cell in row))
    console.print(table)
    console.print(Text(f"{len(documents)} resources", style="dim"))


def resources_json(documents: Sequence[models.Document], paths: Mapping[str, str]) -> str:
    return json.dumps(
        shorten_all(
            [
                {
                    "address": d.address,
                    "path": paths.get(d.address, ""),
                    **d.model_dump(mode="json", by_alias=True),
                }
                for d in documents
            ]
        ),
        indent=2,
    )


def resources_yaml(documents: Sequence[models.Document]) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump_all([shorten_all(d.model_dump(mode="json", by_alias=True)) for d in documents], out)
    return out.getvalue()
