"""What a fleet repo declares, as `fleet get` lists it: a table (see `report.table`), addresses,
or the documents as data (the same fields in JSON and YAML), long values shortened (see
`reconciler.bounded`; `fleet inventory` gives Ansible the whole values)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console

from reconciler.bounded import shorten, shorten_all
from reconciler.kinds import kind_of
from reconciler.report.table import Cell, cell, write_table
from reconciler.spec import models


def _labels(document: models.Document) -> str:
    return ",".join(f"{shorten(k)}={shorten(v)}" for k, v in sorted(document.metadata.labels.items()))


def resources_table(
    documents: Sequence[models.Document],
    paths: Mapping[str, str],
    console: Console,
    *,
    labels: bool = False,
    headers: bool = True,
) -> None:
    """KIND NAME WHERE WHAT FILE, and LABELS with `labels` (`--show-labels`, `-o wide`)."""
    columns = ["KIND", "NAME", "WHERE", "WHAT", "FILE"] + (["LABELS"] if labels else [])
    rows: list[list[Cell]] = []
    for document in documents:
        kind = kind_of(document)
        row = [
            cell(document.kind_name),
            cell(document.metadata.name),
            cell(kind.where(document)),
            cell(kind.what(document)),
            cell(paths.get(document.address, "")),
        ]
        if labels:
            row.append(Cell(_labels(document)))
        rows.append(row)
    write_table(console, columns, rows, headers=headers)


def resources_data(documents: Sequence[models.Document], paths: Mapping[str, str]) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = shorten_all(
        [
            {
                "address": d.address,
                "path": paths.get(d.address, ""),
                **d.model_dump(mode="json", by_alias=True),
            }
            for d in documents
        ]
    )
    return data


def resources_json(documents: Sequence[models.Document], paths: Mapping[str, str]) -> str:
    return json.dumps(resources_data(documents, paths), indent=2)
