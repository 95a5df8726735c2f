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
from reconciler.cli import complete
from reconciler.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    OUTPUT_NAMES,
    CacheOpt,
    DirOpt,
    KindOpt,
    ListFormat,
    ListOutputOpt,
    NoHeadersOpt,
    OutputFormat,
    OutputOpt,
    PathArg,
    QuietOpt,
    RepoOpt,
    RevOpt,
    SelectorOpt,
    TargetOpt,
    VerboseOpt,
    app,
    echo_data,
    engine_for,
    fail,
    guard,
    note,
    out,
    settings_of,
)
from reconciler.engine import Selection, SourceRef
from reconciler.errors import UsageError
from reconciler.kinds import kind_at, kind_named, unknown_kind_hint
from reconciler.report.diagnostics import counted, diagnostics_json, render_diagnostics
from reconciler.report.resources import resources_data, resources_table
from reconciler.spec import models
from reconciler.spec.diagnostics import closest
from reconciler.spec.loader import LoadedRevision


@app.command()
def validate(
    path: PathArg = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    directory: DirOpt = None,
    output: OutputOpt = OutputFormat.text,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail validation too.")] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Parse everything; do not read or write the cache.")
    ] = False,
    cache_dir: CacheOpt = None,
    jobs: Annotated[
        int,
        typer.Option("--jobs", "-j", metavar="N", min=0, help="Worker processes (default 0: one per CPU)."),
    ] = 0,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check every spec of a fleet repo and print every problem, each with file:line:col."""

    def run() -> LoadedRevision:
        with engine_for(settings_of(cache_dir=cache_dir, workers=jobs), cache=not no_cache) as engine:
            return engine.load(engine.open_source(SourceRef(path, repo, rev, directory)), documents=False)

    result = guard(run)
    failed = bool(result.errors) or (strict and bool(result.warnings))
    if output is not OutputFormat.text:
        echo_data(json.loads(diagnostics_json(result.diagnostics)), output)
    else:
        console = out()
        render_diagnostics(result.diagnostics, console)
        verdict = Text("invalid", style="bold red") if failed else Text("valid", style="bold green")
        counts = f"{counted(len(result.errors), 'error')}, {counted(len(result.warnings), 'warning')}"
        console.print(
            Text(f"{shorten(result.summary(), MESSAGE_LIMIT)}: ").append(verdict).append(f" ({counts})")
        )
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def split_path_and_addresses(arguments: list[str]) -> tuple[Path | None, list[str]]:
    """`fleet get [PATH] [ADDRESS...]`: an argument that names an existing directory (or a first
    one that is no address) is the repo's working tree, the others are addresses."""
    path: Path | None = None
    addresses: list[str] = []
    for index, argument in enumerate(arguments):
        is_address = "/" in argument and kind_at(argument) is not None
        if path is None and not addresses and (Path(argument).is_dir() or (index == 0 and not is_address)):
            path = Path(argument)
        else:
            addresses.append(argument)
    return path, addresses


@app.command()
def get(
    arguments: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="PATH_OR_ADDRESS",
            help="The repo's working tree (default: the current directory), then addresses to show"
            " (e.g. machine/nyc1-r01-02).",
            show_default=False,
        ),
    ] = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    directory: DirOpt = None,
    kind: KindOpt = None,
    selector: SelectorOpt = None,
    target: TargetOpt = None,
    output: ListOutputOpt = ListFormat.text,
    show_labels: Annotated[
        bool, typer.Option("--show-labels", help="Add a LABELS column to the table (as -o wide does).")
    ] = False,
    no_headers: NoHeadersOpt = False,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """List the resources a fleet repo declares (the inventory), or show the ones named.
    An invalid repo, or a directory with no fleet.yaml, is refused."""
    path, addresses = split_path_and_addresses(list(arguments or ()))
    targets = tuple([*addresses, *(target or ())])

    def run() -> tuple[list[models.Document], dict[str, str]]:
        with engine_for(settings_of(cache_dir=cache_dir)) as engine:
            selected = engine.select(
                engine.revision(SourceRef(path, repo, rev, directory)),
                Selection(kind, selector, targets),
                include_fleet=not targets,
            )
            return list(selected.documents), dict(selected.paths)

    listed, paths = guard(run)
    if output in (ListFormat.json, ListFormat.yaml):
        echo_data(resources_data(listed, paths), output)
    elif output is ListFormat.name:
        for document in listed:
            typer.echo(document.address)
    else:
        labels = show_labels or output is ListFormat.wide
        resources_table(listed, paths, out(), labels=labels, headers=not no_headers)
        note(counted(len(listed), "resource"))


class InventoryFormat(StrEnum):
    ini = "ini"
    json = "json"


@app.command()
def inventory(
    path: PathArg = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    directory: DirOpt = None,
    output: Annotated[
        InventoryFormat, typer.Option(*OUTPUT_NAMES, help="ini, or json (dynamic-inventory shape).")
    ] = InventoryFormat.ini,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Print the Ansible inventory of a fleet repo: a host per Machine or VM with `config`, its vars,
    and groups per site, rack, role, Cluster and SparkPool. Use it with plain ansible-playbook:
    `fleet inventory -o json > inv.json; ansible-playbook -i inv.json site.yml`. An invalid repo is
    refused: its inventory would be missing hosts."""

    def run() -> str:
        with engine_for(settings_of(cache_dir=cache_dir)) as engine:
            revision = engine.revision(SourceRef(path, repo, rev, directory))
            if revision.fleet is None:
                raise UsageError("the repo has no valid fleet.yaml", hint="run `fleet validate` to see why")
            documents = [d.document for d in revision.documents if d.document is not revision.fleet]
            return ansible_inventory(documents, revision.fleet, output.value)

    typer.echo(guard(run), nl=False)


@app.command()
def schema(
    kind: Annotated[
        str | None,
        typer.Argument(
            metavar="KIND",
            help="One kind (Machine, vm, ...), `plan` (the plan's JSON) or `openapi` (fleet serve's API).",
            show_default=False,
        ),
    ] = None,
    write: Annotated[
        Path | None,
        typer.Option(
            "--write",
            metavar="DIR",
            help="Write the schema files (of KIND, or of every kind and the plan) here.",
        ),
    ] = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Print or write the JSON Schemas (2020-12) of the fleet kinds and of `fleet plan -o json`,
    or the OpenAPI schema of `fleet serve` (`openapi`)."""
    from reconciler.report.plan_json import schema_text
    from reconciler.spec.schema import all_schemas, kind_schema, render, schema_file_name

    files: dict[str, str]
    if kind is None:
        files = {**all_schemas(), PLAN_SCHEMA_FILE: schema_text()}
    elif kind.lower() == "plan":
        files = {PLAN_SCHEMA_FILE: schema_text()}
    elif kind.lower() == "openapi":
        from reconciler.controller.api import openapi_document

        files = {OPENAPI_FILE: openapi_document()}
    else:
        named = kind_named(kind)
        if named is None:
            fail(f"unknown kind {kind!r} ({unknown_kind_hint(kind)}, or plan)")
        files = {schema_file_name(named.name): render(kind_schema(named.name))}
    if write is None:
        if len(files) == 1:
            typer.echo(next(iter(files.values())), nl=False)
        else:
            typer.echo(json.dumps({name: json.loads(content) for name, content in files.items()}, indent=2))
        return
    try:
        write.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            target = write / name
            if not target.exists() or target.read_text() != content:
                target.write_text(content)
            typer.echo(str(target))
    except OSError as exc:
        fail(f"cannot write schemas to {write}: {exc.strerror}")


PLAN_SCHEMA_FILE = "plan.schema.json"
OPENAPI_FILE = "openapi.json"


@app.command()
def explain(
    field: Annotated[
        str,
        typer.Argument(
            metavar="KIND[.FIELD...]",
            help="A kind (Machine, vm, sp, ...) and a path into it, e.g. sp.spec.queue.deserved.",
            autocompletion=complete.kinds,
        ),
    ],
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Describe a kind or one of its fields, as `kubectl explain` does: its type, whether it is
    required, its default, the values it allows and its fields (from the models the schemas are
    made of)."""
    from reconciler.spec.schema import UnknownField
    from reconciler.spec.schema import explain as explain_field

    name, *path = field.split(".")
    named = kind_named(name)
    if named is None:
        fail(f"unknown kind {name!r} ({unknown_kind_hint(name)})")
    try:
        found = explain_field(named.name, path)
    except UnknownField as exc:
        close = closest(exc.field.rsplit(".", 1)[-1], exc.known)
        hint = f"did you mean {close!r}?" if close else f"its fields: {', '.join(exc.known) or 'none'}"
        fail(f"{named.name} has no field {exc.field} ({hint})")
    lines: list[str] = []
    lines.append(f"KIND:     {found.kind}")
    if found.path:
        required = " (required)" if found.required else ""
        lines.append(f"FIELD:    {'.'.join(found.path)} <{found.type}>{required}")
    lines.append("")
    lines.append("DESCRIPTION:")
    for line in (found.description or "(none)").splitlines():
        lines.append(f"  {line}")
    if found.has_default:
        lines.append("")
        lines.append(f"DEFAULT:  {json.dumps(found.default)}")
    if found.allowed:
        lines.append("")
        lines.append(f"ALLOWED:  {', '.join(map(str, found.allowed))}")
    if found.fields:
        lines.append("")
        lines.append("FIELDS:")
        for child, kind, needed, description in found.fields:
            lines.append(f"  {child} <{kind}>{' (required)' if needed else ''}")
            if description:
                lines.append(f"    {description}")
    typer.echo("\n".join(lines))
