"""The commands that read a fleet repo and nothing live: validate, get, inventory, schema."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from providers.registry import ansible_inventory
from reconciler.bounded import MESSAGE_LIMIT, shorten
from reconciler.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    CacheOpt,
    OutputFormat,
    PathArg,
    RepoOpt,
    RevOpt,
    app,
    engine_for,
    fail,
    guard,
    out,
    settings_of,
)
from reconciler.engine import Selection, SourceRef
from reconciler.errors import UsageError
from reconciler.kinds import KINDS, kind_named
from reconciler.report.diagnostics import counted, diagnostics_json, render_diagnostics
from reconciler.report.resources import resources_json, resources_table, resources_yaml
from reconciler.spec import models
from reconciler.spec.loader import LoadedRevision


@app.command()
def validate(
    path: PathArg = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    output: Annotated[
        OutputFormat, typer.Option("--format", "-o", help="Output format.")
    ] = OutputFormat.text,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail validation too.")] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Parse everything; do not read or write the cache.")
    ] = False,
    cache_dir: CacheOpt = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=0, help="Worker processes (default 0: one per CPU).")
    ] = 0,
) -> None:
    """Check every spec of a fleet repo and print every problem, each with file:line:col."""

    def run() -> LoadedRevision:
        with engine_for(settings_of(cache_dir=cache_dir, workers=jobs), cache=not no_cache) as engine:
            return engine.load(engine.open_source(SourceRef(path, repo, rev)), documents=False)

    result = guard(run)
    failed = bool(result.errors) or (strict and bool(result.warnings))
    if output is OutputFormat.json:
        typer.echo(diagnostics_json(result.diagnostics))
    else:
        console = out()
        render_diagnostics(result.diagnostics, console)
        verdict = Text("invalid", style="bold red") if failed else Text("valid", style="bold green")
        counts = f"{counted(len(result.errors), 'error')}, {counted(len(result.warnings), 'warning')}"
        console.print(
            Text(f"{shorten(result.summary(), MESSAGE_LIMIT)}: ").append(verdict).append(f" ({counts})")
        )
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


class GetFormat(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


@app.command()
def get(
    path: PathArg = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    kind: Annotated[str | None, typer.Option("--kind", "-k", help="Only this kind (e.g. Machine).")] = None,
    selector: Annotated[
        str | None,
        typer.Option("--selector", "-l", help="Label selector, e.g. 'role=hypervisor,site in (nyc1)'."),
    ] = None,
    output: Annotated[GetFormat, typer.Option("--format", "-o", help="Output format.")] = GetFormat.table,
    show_labels: Annotated[
        bool, typer.Option("--show-labels", help="Add a LABELS column to the table.")
    ] = False,
    cache_dir: CacheOpt = None,
) -> None:
    """List the resources a fleet repo declares (the inventory). An invalid repo is refused."""

    def run() -> tuple[list[models.Document], dict[str, str]]:
        with engine_for(settings_of(cache_dir=cache_dir)) as engine:
            selected = engine.select(
                engine.revision(SourceRef(path, repo, rev)), Selection(kind, selector), include_fleet=True
            )
            return list(selected.documents), dict(selected.paths)

    listed, paths = guard(run)
    if output is GetFormat.json:
        typer.echo(resources_json(listed, paths))
    elif output is GetFormat.yaml:
        typer.echo(resources_yaml(listed), nl=False)
    else:
        resources_table(listed, paths, out(), labels=show_labels)


class InventoryFormat(StrEnum):
    ini = "ini"
    json = "json"


@app.command()
def inventory(
    path: PathArg = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    output: Annotated[
        InventoryFormat, typer.Option("--format", "-o", help="ini, or json (dynamic-inventory shape).")
    ] = InventoryFormat.ini,
    cache_dir: CacheOpt = None,
) -> None:
    """Print the Ansible inventory of a fleet repo: a host per Machine or VM with `config`, its vars,
    and groups per site, rack, role, Cluster and SparkPool. Use it with plain ansible-playbook:
    `fleet inventory -o json > inv.json; ansible-playbook -i inv.json site.yml`. An invalid repo is
    refused: its inventory would be missing hosts."""

    def run() -> str:
        with engine_for(settings_of(cache_dir=cache_dir)) as engine:
            revision = engine.revision(SourceRef(path, repo, rev))
            if revision.fleet is None:
                raise UsageError("the repo has no valid fleet.yaml", hint="run `fleet validate` to see why")
            documents = [d.document for d in revision.documents if d.document is not revision.fleet]
            return ansible_inventory(documents, revision.fleet, output.value)

    typer.echo(guard(run), nl=False)


@app.command()
def schema(
    kind: Annotated[
        str | None, typer.Argument(help="Print the schema of one kind.", show_default=False)
    ] = None,
    write: Annotated[
        Path | None, typer.Option("--write", help="Write every kind's schema into this directory.")
    ] = None,
) -> None:
    """Print or write the JSON Schemas (2020-12) of the fleet kinds."""
    from reconciler.report.plan_json import schema_text
    from reconciler.spec.schema import all_schemas, kind_schema, render, write_schemas

    if write is not None:
        try:
            for target in write_schemas(write):
                typer.echo(str(target))
            plan_schema = write / "plan.schema.json"
            if not plan_schema.exists() or plan_schema.read_text() != schema_text():
                plan_schema.write_text(schema_text())
            typer.echo(str(plan_schema))
        except OSError as exc:
            fail(f"cannot write schemas to {write}: {exc.strerror}")
        return
    if kind is not None:
        named = kind_named(kind)
        if named is None:
            fail(f"unknown kind {kind!r} (use one of {', '.join(KINDS)})")
        typer.echo(render(kind_schema(named.name)), nl=False)
        return
    typer.echo(json.dumps({name: json.loads(content) for name, content in all_schemas().items()}, indent=2))
