"""The `fleet` command.

Every command that reads a fleet repo takes it the same way: a PATH (the working
tree, uncommitted edits included) or `--repo PATH_OR_URL --rev REV` (a Git
revision read without checkout). Exit codes: 0 success, 1 the repo is invalid
(or a command failed), 2 usage or infrastructure error. No traceback reaches a
user: every failure ends as one clear message.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from reconciler import __version__
from reconciler.errors import FleetError, SourceError, UsageError
from reconciler.source.snapshot import Snapshot
from reconciler.source.worktree import read_worktree
from reconciler.spec.cache import SpecCache
from reconciler.spec.diagnostics import Diagnostic
from reconciler.spec.selector import parse_selector
from reconciler.workspace import (
    Validation,
    cache_path,
    default_workers,
    load_documents,
    validate_snapshot,
)

if TYPE_CHECKING:
    from reconciler.spec import models

KIND_NAMES = ("Fleet", "Machine", "VirtualMachine", "Cluster", "SparkPool")

app = typer.Typer(
    name="fleet",
    help="GitOps reconciler for physical infrastructure: machines, VMs, Kubernetes clusters and Spark pools.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


class GetFormat(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    _err().print(Text(f"error: {message}", style="bold red"))
    raise typer.Exit(code)


T = TypeVar("T")


def _guard(action: Callable[[], T]) -> T:
    """Turn fleet's own errors into one line and an exit code."""
    try:
        return action()
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE)
    except SourceError as exc:
        _fail(str(exc), EXIT_USAGE)
    except FleetError as exc:
        _fail(str(exc), EXIT_INVALID)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fleet {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """GitOps reconciler for physical infrastructure."""


# --- reading a repo the same way everywhere ----------------------------------------------

PathArg = Annotated[
    Path | None,
    typer.Argument(help="Fleet repo working tree (default: the current directory).", show_default=False),
]
RepoOpt = Annotated[
    str | None,
    typer.Option("--repo", help="Read a Git repository (path or URL) at --rev instead of a working tree."),
]
RevOpt = Annotated[str | None, typer.Option("--rev", help="Revision to read with --repo (default: HEAD).")]
CacheOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Cache directory (default: $XDG_CACHE_HOME/fleet).", show_default=False),
]


@dataclasses.dataclass(frozen=True)
class RepoRef:
    path: Path | None
    repo: str | None
    rev: str | None
    cache_dir: Path | None

    def snapshot(self) -> Snapshot:
        if self.repo is not None and self.path is not None:
            raise UsageError("give either PATH or --repo, not both")
        if self.rev is not None and self.repo is None:
            raise UsageError("--rev needs --repo", hint="e.g. --repo . --rev main")
        if self.repo is not None:
            from reconciler.source.git import read_revision

            return read_revision(self.repo, self.rev or "HEAD", cache_path(self.cache_dir))
        return read_worktree(self.path or Path("."))


# --- fleet validate ----------------------------------------------------------------------


def _render_diagnostic(console: Console, d: Diagnostic) -> None:
    style = "bold red" if d.severity.value == "error" else "bold yellow"
    where = d.path + (f":{d.line}:{d.col or 1}" if d.line else "")
    line = Text()
    line.append(where, style="bold")
    line.append(": ")
    line.append(f"{d.severity.value}[{d.code}]", style=style)
    line.append(f": {d.message}")
    if d.address:
        line.append(f" [{d.address}]", style="cyan")
    console.print(line)
    if d.hint:
        console.print(Text(f"    = help: {d.hint}", style="dim"))


def _summary(v: Validation) -> str:
    kinds = ", ".join(f"{count} {kind}" for kind, count in v.documents.items()) or "no documents"
    return f"{v.source}: {v.files} files, {kinds}"


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
    ref = RepoRef(path, repo, rev, cache_dir)

    def run() -> Validation:
        snapshot = ref.snapshot()
        cache = None if no_cache else SpecCache(cache_path(cache_dir) / "specs.sqlite")
        try:
            return validate_snapshot(snapshot, cache, jobs or default_workers())
        finally:
            if cache is not None:
                cache.close()

    result = _guard(run)
    failed = bool(result.errors) or (strict and bool(result.warnings))
    if output is OutputFormat.json:
        typer.echo(json.dumps([d.as_json() for d in result.diagnostics], indent=2))
    else:
        console = _out()
        for d in result.diagnostics:
            _render_diagnostic(console, d)
        verdict = Text("invalid", style="bold red") if failed else Text("valid", style="bold green")
        counts = f"{len(result.errors)} errors, {len(result.warnings)} warnings"
        console.print(Text(f"{_summary(result)}: ").append(verdict).append(f" ({counts})"))
    raise typer.Exit(EXIT_INVALID if failed else EXIT_OK)


# --- fleet get ---------------------------------------------------------------------------


def _normalise_kind(kind: str) -> str:
    for name in KIND_NAMES:
        if kind.lower() in (name.lower(), name.lower() + "s"):
            return name
    raise UsageError(f"unknown kind {kind!r}", hint=f"use one of {', '.join(KIND_NAMES)}")


def _where(document: models.Document) -> str:
    from reconciler.spec import models

    if isinstance(document, models.Machine):
        return f"{document.spec.site}/{document.spec.rack}"
    if isinstance(document, models.VirtualMachine):
        return f"host {document.spec.host}"
    if isinstance(document, models.SparkPool):
        return f"cluster {document.spec.cluster}"
    if isinstance(document, models.Cluster):
        return f"{len(document.spec.members)} members"
    if isinstance(document, models.Fleet):
        return f"{len(document.spec.sites)} sites"
    return ""


def _what(document: models.Document) -> str:
    from reconciler.spec import models

    if isinstance(document, models.Machine):
        return f"{document.spec.role}, power {document.spec.power}"
    if isinstance(document, models.VirtualMachine):
        return f"{document.spec.vcpus} vCPU, {document.spec.memory}, power {document.spec.power}"
    if isinstance(document, models.SparkPool):
        return f"namespace {document.spec.namespace}, queue {document.spec.queue.name}"
    if isinstance(document, models.Cluster):
        return f"{document.spec.apiServer} ({document.spec.scheduler})"
    return ""


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
    `fleet inventory -o json > inv.json; ansible-playbook -i inv.json site.yml`."""
    from providers.registry import ansible_inventory
    from reconciler.spec import models

    ref = RepoRef(path, repo, rev, cache_dir)

    def run() -> str:
        documents = [i.document for i in load_documents(ref.snapshot())]
        fleet = next((d for d in documents if isinstance(d, models.Fleet)), None)
        if fleet is None:
            raise UsageError("the repo has no valid fleet.yaml", hint="run `fleet validate` to see why")
        return ansible_inventory([d for d in documents if d is not fleet], fleet, output.value)

    typer.echo(_guard(run), nl=False)


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
    """List the resources a fleet repo declares (the inventory)."""
    ref = RepoRef(path, repo, rev, cache_dir)

    def run() -> list[Any]:
        return _selected(load_documents(ref.snapshot()), kind, selector, [], include_fleet=True)

    items = _guard(run)
    items.sort(key=lambda item: (KIND_NAMES.index(item.document.kind_name), item.document.metadata.name))
    if output is GetFormat.json:
        payload = [
            {
                "address": i.document.address,
                "path": i.path,
                **i.document.model_dump(mode="json", by_alias=True),
            }
            for i in items
        ]
        typer.echo(json.dumps(payload, indent=2))
        return
    if output is GetFormat.yaml:
        from ruamel.yaml import YAML

        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        yaml.dump_all([i.document.model_dump(mode="json", by_alias=True) for i in items], sys.stdout)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ["KIND", "NAME", "WHERE", "WHAT", "FILE"] + (["LABELS"] if show_labels else [])
    for column in columns:
        table.add_column(
            column, no_wrap=column != "LABELS", overflow="fold" if column == "LABELS" else "ellipsis"
        )
    for i in items:
        row = [i.document.kind_name, i.document.metadata.name, _where(i.document), _what(i.document), i.path]
        if show_labels:
            row.append(",".join(f"{k}={v}" for k, v in sorted(i.document.metadata.labels.items())))
        table.add_row(*row)
    console = _out()
    console.print(table)
    console.print(Text(f"{len(items)} resources", style="dim"))


# --- fleet observe ---------------------------------------------------------------------

LabOpt = Annotated[
    bool,
    typer.Option(
        "--lab", help="Talk to the simulators of the running `fleet lab` instead of real endpoints."
    ),
]


def _overrides_path(lab: bool) -> Path | None:
    from reconciler.settings import lab_overrides_path

    explicit = os.environ.get("FLEET_LAB_OVERRIDES")
    if explicit:
        return Path(explicit)
    if not lab:
        return None
    overrides = lab_overrides_path()
    if not overrides.is_file():
        raise UsageError("no lab is running", hint="start one with `fleet lab up`")
    return overrides


def _selected(
    loaded: list[Any],
    kind: str | None,
    selector: str | None,
    targets: list[str],
    *,
    include_fleet: bool = False,
) -> list[Any]:
    """The loaded documents a command's --kind, -l and --target select."""
    wanted = _normalise_kind(kind) if kind else None
    match = parse_selector(selector) if selector else None
    items = [
        item
        for item in loaded
        if (include_fleet or item.document.kind_name != "Fleet")
        and (wanted is None or item.document.kind_name == wanted)
        and (match is None or match(item.document.metadata.labels))
        and (not targets or item.document.address in targets)
    ]
    missing = sorted(set(targets) - {item.document.address for item in items})
    if missing:
        raise UsageError(f"no such resource: {', '.join(missing)}", hint="addresses look like machine/NAME")
    return items


def _provider_context(loaded: list[Any], lab: bool) -> Any:
    """How providers reach live state: the repo's Fleet, plus the lab's overrides when asked."""
    from reconciler.plan.observe import provider_context
    from reconciler.spec import models

    fleet = next((i.document for i in loaded if isinstance(i.document, models.Fleet)), None)
    if fleet is None:
        raise UsageError("the repo has no valid fleet.yaml", hint="run `fleet validate` to see why")
    overrides = _overrides_path(lab)
    if overrides is not None:
        _err().print(Text(f"using lab endpoints from {overrides}", style="yellow"))
    return provider_context(fleet, overrides, documents=[i.document for i in loaded])


@app.command()
def observe(
    path: PathArg = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    kind: Annotated[str, typer.Option("--kind", "-k", help="Kind to observe.")] = "Machine",
    selector: Annotated[str | None, typer.Option("--selector", "-l", help="Label selector.")] = None,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", "-t", help="Only this address (repeatable), e.g. machine/x."),
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--format", "-o", help="Output format.")
    ] = OutputFormat.text,
    lab: LabOpt = False,
    cache_dir: CacheOpt = None,
) -> None:
    """Show what the providers see right now (power, boot device, reachability). Changes nothing."""
    from reconciler.plan.observe import observe_documents

    ref = RepoRef(path, repo, rev, cache_dir)

    def run() -> list[Any]:
        loaded = load_documents(ref.snapshot())
        items = _selected(loaded, kind, selector, target or [])
        return observe_documents([i.document for i in items], _provider_context(loaded, lab))

    observations = _guard(run)
    if output is OutputFormat.json:
        typer.echo(
            json.dumps(
                [
                    {
                        "address": o.address,
                        "state": o.state.value,
                        "observedAt": o.observed_at.isoformat(),
                        "fields": dict(o.fields),
                        "reason": o.reason.value if o.reason else None,
                        "detail": o.detail or None,
                        "warnings": list(o.warnings),
                    }
                    for o in observations
                ],
                indent=2,
                default=str,
            )
        )
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ADDRESS", "STATE", "POWER", "DETAIL", "NOTES"):
        table.add_column(column, no_wrap=column != "NOTES")
    for o in observations:
        notes = f"{o.reason.value}: {o.detail}" if o.reason else "; ".join(o.warnings)
        style = {"observed": "green", "unknown": "yellow", "absent": "red"}[o.state.value]
        table.add_row(
            o.address,
            Text(o.state.value, style=style),
            str(o.fields.get("power", "")),
            _observed_detail(o.fields),
            notes,
        )
    console = _out()
    console.print(table)
    unknown = sum(1 for o in observations if o.state.value == "unknown")
    console.print(Text(f"{len(observations)} observed, {unknown} unknown", style="dim"))


def _observed_detail(fields: dict[str, Any]) -> str:
    """The few live fields worth a column: a Machine's boot device, a VM's host and size, how
    many of a Cluster's or SparkPool's objects are in sync."""
    if "bootDevice" in fields:
        return f"boot {fields['bootDevice']}{'' if fields.get('bootPersistent') else ' (once)'}"
    if "host" in fields:
        owner = "" if fields.get("owned", True) else ", not fleet's"
        return f"on {fields['host']}, {fields.get('vcpus')} vCPU, {fields.get('memory')}{owner}"
    if "objects" in fields:
        objects = list(fields["objects"])
        synced = sum(1 for o in objects if o.get("state") == "in-sync")
        nodes = [n for n in fields.get("nodes", ()) if not n.get("inSync", True)]
        return f"{synced}/{len(objects)} objects in sync" + (f", {len(nodes)} nodes not" if nodes else "")
    return ""


# --- fleet plan ------------------------------------------------------------------------


class PlanFormat(StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


ConfigOpt = Annotated[
    bool,
    typer.Option(
        "--config/--no-config",
        envvar="FLEET_CONFIG",
        help="Check (Ansible check mode) and apply the operating-system configuration of Machines "
        "and VirtualMachines.",
    ),
]
StateOpt = Annotated[
    str | None,
    typer.Option(
        "--state",
        envvar="FLEET_STATE",
        help="State store: a SQLite path or a PostgreSQL URL (default: $XDG_STATE_HOME/fleet/state.db).",
        show_default=False,
    ),
]


@app.command()
def plan(
    path: PathArg = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    selector: Annotated[str | None, typer.Option("--selector", "-l", help="Label selector.")] = None,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", "-t", help="Only this address (repeatable), e.g. machine/x."),
    ] = None,
    output: Annotated[PlanFormat, typer.Option("--format", "-o", help="Output format.")] = PlanFormat.text,
    out: Annotated[Path | None, typer.Option("--out", help="Also save the plan (JSON) to this file.")] = None,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 0 with no changes, 2 with changes, 1 on error.")
    ] = False,
    lab: LabOpt = False,
    config: ConfigOpt = True,
    state: StateOpt = None,
    cache_dir: CacheOpt = None,
) -> None:
    """Compare the specs with live state and what fleet last applied; show what would change.

    Reads live state and the state store; changes neither. Unknown resources (unreachable,
    refused) are reported, never planned.
    """
    from reconciler.report.markdown import render_markdown
    from reconciler.report.plan_json import render_json
    from reconciler.report.text import render_text
    from reconciler.state import open_store

    ref = RepoRef(path, repo, rev, cache_dir)

    def run() -> Any:
        with open_store(state) as store:
            return _make_plan(ref, selector, target or [], lab, store, config=config)[0]

    result = _guard(run)
    rendered_json = render_json(result)
    if out is not None:
        try:
            out.write_text(rendered_json)
        except OSError as exc:
            _fail(f"cannot write {out}: {exc.strerror}")
    if output is PlanFormat.json:
        typer.echo(rendered_json, nl=False)
    elif output is PlanFormat.markdown:
        typer.echo(render_markdown(result))
    else:
        render_text(result, _out())
    if detailed_exitcode:
        raise typer.Exit(2 if result.has_changes else EXIT_OK)


def _make_plan(
    ref: RepoRef, selector: str | None, targets: list[str], lab: bool, store: Any, *, config: bool = True
) -> tuple[Any, list[Any], Any]:
    """(plan, every document, provider context) for a selection of the repo."""
    from reconciler.plan.build import build_plan

    snapshot = ref.snapshot()
    loaded = load_documents(snapshot)
    everything = [i.document for i in loaded if i.document.kind_name != "Fleet"]
    items = _selected(loaded, None, selector, targets)
    context = _provider_context(loaded, lab)
    if config:
        context = _with_playbooks(snapshot, context, [i.document for i in items])
    revision = snapshot.commit or "working-tree"
    result = build_plan(
        everything,
        [i.document for i in items],
        context,
        store,
        revision,
        whole_fleet=not selector and not targets,
    )
    return result, everything, context


def _with_playbooks(snapshot: Snapshot, context: Any, selected: list[Any]) -> Any:
    """The context with the repo's playbooks and roles at the planned revision, exported into a
    private directory that lives as long as this command (a working tree may change meanwhile)."""
    import atexit
    import shutil
    import tempfile

    from reconciler.plan.config import config_directories, configured

    configs = [d.spec.config for d in configured(selected) if d.spec.config is not None]
    if not configs or snapshot.export is None:
        return context
    root = Path(tempfile.mkdtemp(prefix="fleet-playbooks-"))
    atexit.register(shutil.rmtree, root, True)
    snapshot.export(root, sorted({d for config in configs for d in config_directories(config)}))
    return dataclasses.replace(context, playbook_root=root)


def _print_outcome(outcome: Any, console: Console | None = None) -> None:
    style = {"succeeded": "green", "failed": "bold red", "skipped": "yellow", "interrupted": "yellow"}
    line = Text(f"  {outcome.address}  {outcome.action}: ")
    line.append(outcome.result, style=style.get(outcome.result, ""))
    line.append(
        f" ({outcome.message}, {outcome.seconds:.1f} s)" if outcome.seconds else f" ({outcome.message})"
    )
    _out().print(line)


def _run_and_report(
    ref: RepoRef,
    selector: str | None,
    targets: list[str],
    lab: bool,
    state: str | None,
    options: Any,
    *,
    planfile: Path | None,
    yes: bool,
    config: bool = True,
) -> None:
    from reconciler.report.plan_json import plan_from_dict
    from reconciler.report.text import render_text
    from reconciler.runs import apply_plan, check_saved_plan
    from reconciler.state import open_store

    def countdown(seconds_left: float, holders: Any) -> None:
        who = ", ".join(f"{h.owner} (run {h.run_id})" for h in holders)
        _err().print(Text(f"waiting for locks held by {who}: {seconds_left:.0f} s left", style="yellow"))

    def run() -> Any:
        with open_store(state) as store:
            saved = None
            if planfile is not None:
                try:
                    saved = plan_from_dict(json.loads(planfile.read_text()))
                except OSError as exc:
                    raise UsageError(f"cannot read plan {planfile}: {exc.strerror}") from None
                except ValueError as exc:
                    raise UsageError(f"{planfile} is not a fleet plan: {exc}") from None
            plan_targets = sorted({o.address for o in saved.observed}) if saved is not None else targets
            fresh, documents, context = _make_plan(
                ref, None if saved else selector, plan_targets, lab, store, config=config
            )
            if saved is not None:
                check_saved_plan(saved, fresh)
            chosen = saved or fresh
            render_text(chosen, _out())
            if chosen.has_changes and not yes:
                if not sys.stdin.isatty():
                    raise UsageError("refusing to apply without confirmation", hint="pass --yes")
                if not typer.confirm(f"Apply {len(chosen.changes())} changes?", default=False):
                    raise UsageError("not applied")
            console = _out()
            if not console.is_terminal or not chosen.has_changes:
                return apply_plan(
                    chosen, documents, context, store, options, on_outcome=_print_outcome, on_wait=countdown
                )
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("applying", total=len(chosen.changes()))

                def advance(outcome: Any) -> None:
                    _print_outcome(outcome, progress.console)
                    progress.advance(task)

                return apply_plan(
                    chosen, documents, context, store, options, on_outcome=advance, on_wait=countdown
                )

    result = _guard(run)
    report = result.report
    # The emergency path promises convergence: a target fleet could not even observe is not.
    unknown = sorted(e.address for e in result.plan.entries if e.finding.value == "unknown")
    if report is None:
        _out().print(f"Run {result.run_id}: nothing to apply.")
        if options.kind == "reconcile" and unknown:
            _fail(f"not converged: {', '.join(unknown)} could not be observed", EXIT_INVALID)
        return
    for holder in result.broken_locks:
        _err().print(
            Text(
                f"broke the lock of {holder.owner} (run {holder.run_id}) on {holder.address}", style="yellow"
            )
        )
    counts = {k: report.count(k) for k in ("succeeded", "failed", "skipped", "interrupted")}
    line = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "nothing done"
    _out().print(Text(f"Run {result.run_id}: {line}.", style="bold"))
    if report.interrupted:
        raise typer.Exit(130)
    if options.kind == "reconcile" and unknown:
        _fail(f"not converged: {', '.join(unknown)} could not be observed", EXIT_INVALID)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_INVALID)


@app.command()
def apply(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="A saved plan (from `fleet plan --out`), or the fleet repo working tree.", show_default=False
        ),
    ] = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    selector: Annotated[str | None, typer.Option("--selector", "-l", help="Label selector.")] = None,
    target: Annotated[
        list[str] | None, typer.Option("--target", "-t", help="Only this address (repeatable).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    parallel: Annotated[int, typer.Option("--parallel", min=1, help="Changes at once within a wave.")] = 16,
    allow_destructive: Annotated[
        bool, typer.Option("--allow-destructive", help="Apply even beyond the blast-radius policy.")
    ] = False,
    repo_path: Annotated[
        Path | None, typer.Option("--path", help="With a saved plan: the repo working tree (default: .).")
    ] = None,
    lab: LabOpt = False,
    config: ConfigOpt = True,
    state: StateOpt = None,
    cache_dir: CacheOpt = None,
) -> None:
    """Plan and apply the changes (or apply a saved plan while it still holds), recording every action."""
    from reconciler.runs import RunOptions

    planfile = path if path is not None and path.is_file() else None
    work_tree = repo_path if planfile is not None else path
    ref = RepoRef(work_tree, repo, rev, cache_dir)
    options = RunOptions(kind="apply", allow_destructive=allow_destructive, parallel=parallel)
    _run_and_report(
        ref, selector, target or [], lab, state, options, planfile=planfile, yes=yes, config=config
    )


@app.command()
def reconcile(
    now: Annotated[bool, typer.Option("--now", help="Required: reconcile the targets right now.")] = False,
    path: PathArg = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="Address (repeatable).")] = None,
    selector: Annotated[str | None, typer.Option("--selector", "-l", help="Label selector.")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded in the audit trail).")] = None,
    incident: Annotated[str | None, typer.Option("--incident", help="Incident id (recorded).")] = None,
    emergency: Annotated[
        bool, typer.Option("--emergency", help="Bypass blast radius and change windows (recorded).")
    ] = False,
    break_lock: Annotated[
        bool, typer.Option("--break-lock", help="Take the locks of others (recorded).")
    ] = False,
    wait: Annotated[
        float, typer.Option("--wait", min=0, help="Seconds to wait for locks held by others.")
    ] = 300,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    lab: LabOpt = False,
    config: ConfigOpt = True,
    state: StateOpt = None,
    cache_dir: CacheOpt = None,
) -> None:
    """The audited emergency path: observe, plan and apply only the targets, immediately."""
    from reconciler.runs import RunOptions

    if not now:
        _fail("`fleet reconcile` needs --now (it acts immediately)")
    if not target and not selector:
        _fail("name what to reconcile with --target ADDRESS or -l SELECTOR")
    if not reason or not reason.strip():
        _fail("--reason is required: it goes into the audit record")
    ref = RepoRef(path, repo, rev, cache_dir)
    options = RunOptions(
        kind="reconcile",
        reason=reason,
        incident=incident,
        emergency=emergency,
        allow_destructive=emergency,
        break_lock=break_lock,
        lock_wait_seconds=wait,
    )
    _run_and_report(ref, selector, target or [], lab, state, options, planfile=None, yes=yes, config=config)


@app.command()
def drift(
    path: PathArg = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    selector: Annotated[str | None, typer.Option("--selector", "-l", help="Label selector.")] = None,
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="Address (repeatable).")] = None,
    output: Annotated[
        OutputFormat, typer.Option("--format", "-o", help="Output format.")
    ] = OutputFormat.text,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 0 without drift, 2 with drift, 1 on error.")
    ] = False,
    lab: LabOpt = False,
    config: ConfigOpt = True,
    state: StateOpt = None,
    cache_dir: CacheOpt = None,
) -> None:
    """Live state that moved away from what fleet last applied (out-of-band changes), and unknowns."""
    from datetime import UTC, datetime

    from reconciler.plan.model import Finding
    from reconciler.runs import record_drift
    from reconciler.state import open_store

    ref = RepoRef(path, repo, rev, cache_dir)

    def run() -> Any:
        with open_store(state) as store:
            result = _make_plan(ref, selector, target or [], lab, store, config=config)[0]
            record_drift(result, store, datetime.now(UTC))
            return result, {(d.address, d.field): d for d in store.open_drift()}

    result, findings = _guard(run)
    entries = [
        e
        for e in result.entries
        if e.finding in (Finding.DRIFT, Finding.OBSERVE_ONLY, Finding.UNKNOWN, Finding.NOT_VERIFIABLE)
    ]
    # Check mode's coverage of every configured host: what "no drift" rests on.
    coverage = {o.address: dict(o.fields)["config"] for o in result.observed if "config" in dict(o.fields)}
    if output is OutputFormat.json:
        payload = []
        for e in entries:
            item: dict[str, Any] = {
                "address": e.address,
                "finding": e.finding.value,
                "reason": e.reason or None,
            }
            if e.finding is Finding.OBSERVE_ONLY:
                item["fields"] = [{"field": f.field, "live": f.before, "spec": f.after} for f in e.fields]
            if e.finding is Finding.NOT_VERIFIABLE:
                item["fields"] = [{"field": f.field, "why": f.after} for f in e.fields]
                item["coverage"] = coverage.get(e.address, {}).get("coverage")
            if e.finding is Finding.DRIFT:
                item["fields"] = [
                    {
                        "field": f.field,
                        "applied": f.before,
                        "live": f.after,
                        "firstSeen": findings[(e.address, f.field)].first_seen.isoformat()
                        if (e.address, f.field) in findings
                        else None,
                    }
                    for f in e.fields
                ]
            payload.append(item)
        payload.extend(
            {"address": address, "finding": "config-coverage", "reason": None, "config": summary}
            for address, summary in sorted(coverage.items())
        )
        typer.echo(json.dumps(payload, indent=2))
    else:
        console = _out()
        for e in entries:
            if e.finding is Finding.DRIFT:
                for f in e.fields:
                    seen = findings.get((e.address, f.field))
                    since = f" (first seen {seen.first_seen:%Y-%m-%d %H:%M:%S} UTC)" if seen else ""
                    console.print(
                        Text(
                            f"drift    {e.address}  {f.field}: applied {f.before!r}, live {f.after!r}{since}",
                            style="red",
                        )
                    )
            elif e.finding is Finding.OBSERVE_ONLY:
                for f in e.fields:
                    console.print(
                        f"observed {e.address}  {f.field}: live {f.before!r}, spec {f.after!r} (observe-only)"
                    )
            elif e.finding is Finding.NOT_VERIFIABLE:
                for f in e.fields:
                    console.print(
                        Text(f"unverif. {e.address}  {f.field}: not verifiable in check mode ({f.after})")
                    )
            else:
                console.print(Text(f"unknown  {e.address}  {e.reason}: {e.detail}", style="yellow"))
        for address, summary in sorted(coverage.items()):
            cover = summary.get("coverage", {})
            state = "in sync" if summary.get("inSync") else f"{summary.get('changes', 0)} tasks would change"
            console.print(
                Text(
                    f"config   {address}  check mode verified {cover.get('verified', 0)} of "
                    f"{cover.get('total', 0)} tasks, {summary.get('notVerifiable', 0)} not verifiable; "
                    f"{state}",
                    style="dim",
                )
            )
        drifted = len({e.address for e in entries if e.finding is Finding.DRIFT})
        unknown = len({e.address for e in entries if e.finding is Finding.UNKNOWN})
        observed_only = len({e.address for e in entries if e.finding is Finding.OBSERVE_ONLY})
        console.print(
            Text(
                f"Drift: {drifted} drifted, {observed_only} observe-only, {unknown} unknown.",
                style="bold",
            )
        )
    if detailed_exitcode:
        raise typer.Exit(2 if any(e.finding is Finding.DRIFT for e in entries) else EXIT_OK)


@app.command()
def history(
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="Only runs that touched this address.")
    ] = None,
    since: Annotated[
        datetime | None, typer.Option("--since", help="Only runs started at or after (ISO 8601, UTC).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many runs.")] = 50,
    output: Annotated[
        OutputFormat, typer.Option("--format", "-o", help="Output format.")
    ] = OutputFormat.text,
    state: StateOpt = None,
) -> None:
    """The audit trail: who ran what, why, on which revision, and how every action ended."""
    from datetime import UTC

    from reconciler.state import open_store

    def run() -> Any:
        with open_store(state) as store:
            when = since.replace(tzinfo=UTC) if since is not None and since.tzinfo is None else since
            return store.history(target, when, limit)

    runs = _guard(run)
    if output is OutputFormat.json:
        typer.echo(
            json.dumps(
                [
                    {
                        **{k: v for k, v in dataclasses.asdict(r).items() if k != "actions"},
                        "actions": [dataclasses.asdict(a) for a in r.actions],
                    }
                    for r in runs
                ],
                indent=2,
                default=str,
            )
        )
        return
    console = _out()
    for r in runs:
        flags = " EMERGENCY" if r.emergency else ""
        flags += " broke-lock" if r.broke_lock else ""
        header = (
            f"run {r.id}  {r.kind}  {r.status}{flags}  {r.started_at:%Y-%m-%d %H:%M:%S} UTC  by {r.operator}"
        )
        console.print(Text(header, style="bold"))
        details = [f"revision {r.revision}"]
        if r.reason:
            details.append(f"reason: {r.reason}")
        if r.incident:
            details.append(f"incident: {r.incident}")
        console.print("    " + "; ".join(details))
        for a in r.actions:
            console.print(
                f"    {a.address}  {a.action}: {a.result}" + (f" ({a.message})" if a.message else "")
            )
    if not runs:
        console.print("no runs recorded")


# --- fleet schema ------------------------------------------------------------------------


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
    from reconciler.spec.schema import all_schemas, kind_schema, render, write_schemas

    if write is not None:
        from reconciler.report.plan_json import schema_text

        try:
            for target in write_schemas(write):
                typer.echo(str(target))
            plan_schema = write / "plan.schema.json"
            if not plan_schema.exists() or plan_schema.read_text() != schema_text():
                plan_schema.write_text(schema_text())
            typer.echo(str(plan_schema))
        except OSError as exc:
            _fail(f"cannot write schemas to {write}: {exc.strerror}")
        return
    if kind is not None:
        name = _guard(lambda: _normalise_kind(kind))
        typer.echo(render(kind_schema(name)), nl=False)
        return
    typer.echo(json.dumps({name: json.loads(content) for name, content in all_schemas().items()}, indent=2))


# --- commands of other packages --------------------------------------------------------

COMMANDS_GROUP = "fleet.commands"


def add_registered_commands(group: str = COMMANDS_GROUP) -> None:
    """Add every typer app registered in the entry point group `group` as the sub-command of its
    entry point's name (`fleet lab` is one). One that cannot be loaded is one line on stderr."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=group):
        try:
            commands = entry.load()
        except Exception as exc:  # a broken plugin, whatever it raises, must not stop fleet
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            _commands_error(f"cannot load `fleet {entry.name}` from {entry.value}: {reason}")
            continue
        if not isinstance(commands, typer.Typer):
            _commands_error(f"cannot load `fleet {entry.name}`: {entry.value} is not a typer app")
            continue
        app.add_typer(commands, name=entry.name)


def _commands_error(message: str) -> None:
    _err().print(Text(f"error: {message}", style="bold red"))


def main() -> None:
    try:
        add_registered_commands()
        app()
    except KeyboardInterrupt:
        _err().print("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_INVALID)
