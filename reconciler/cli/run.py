"""The commands that look at live state and change it: observe, plan, apply, reconcile, drift, history.

Each parses its options, builds the settings, calls the engine and renders what it returns.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.text import Text

from providers.base import Observation
from reconciler.apply.executor import Outcome
from reconciler.bounded import shorten
from reconciler.cli.common import (
    EXIT_CHANGES,
    EXIT_FAILED,
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    OUTPUT_NAMES,
    CacheOpt,
    ConfigCheckOpt,
    ConfigOpt,
    DirOpt,
    KindOpt,
    LabOpt,
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
    StateOpt,
    TargetOpt,
    VerboseOpt,
    YesOpt,
    announce_store,
    app,
    ctrl_c_cancels,
    echo_data,
    engine_for,
    err,
    fail,
    guard,
    note,
    out,
    parse_since,
    settings_of,
    yaml_text,
)
from reconciler.engine import (
    CancelToken,
    DriftResult,
    Engine,
    PlannedRun,
    RunOptions,
    RunResult,
    Selection,
    SourceRef,
)
from reconciler.errors import UsageError
from reconciler.plan.model import Plan
from reconciler.report.diagnostics import counted, render_diagnostics
from reconciler.report.drift import drift_json, render_drift
from reconciler.report.history import history_data, history_table
from reconciler.report.markdown import render_markdown
from reconciler.report.observations import observations_data, observations_summary, observations_table
from reconciler.report.plan_json import plan_from_dict, render_json
from reconciler.report.run import render_outcome, run_summary
from reconciler.report.text import render_text
from reconciler.state import LockHolder, RunRecord, open_store, store_exists


@app.command()
def observe(
    path: PathArg = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    directory: DirOpt = None,
    kind: KindOpt = None,
    selector: SelectorOpt = None,
    target: TargetOpt = None,
    output: ListOutputOpt = ListFormat.text,
    no_headers: NoHeadersOpt = False,
    lab: LabOpt = False,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Show what the providers see right now (power, boot device, reachability). Changes nothing."""

    def run() -> list[Observation]:
        with engine_for(settings_of(cache_dir=cache_dir, lab=lab)) as engine:
            observed = engine.live(
                SourceRef(path, repo, rev, directory), Selection(kind, selector, tuple(target or ()))
            )
            return sorted(observed.all_observations(), key=lambda o: o.address)

    observations = guard(run)
    if output in (ListFormat.json, ListFormat.yaml):
        echo_data(observations_data(observations), output)
    elif output is ListFormat.name:
        for o in observations:
            typer.echo(o.address)
    else:
        observations_table(observations, out(), wide=output is ListFormat.wide, headers=not no_headers)
        note(observations_summary(observations))


class PlanFormat(StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"
    yaml = "yaml"


DetailedOpt = Annotated[
    bool,
    typer.Option(
        "--detailed-exitcode",
        help="Exit 0 when everything was observed and nothing differs, 2 with changes (drift), "
        "3 when nothing differs but some resources are unknown, 1 on any error.",
    ),
]


def _verdict(plan: Plan, differs: bool) -> int:
    if differs:
        return EXIT_CHANGES
    return EXIT_OK if plan.complete else EXIT_INCOMPLETE


@app.command()
def plan(
    path: PathArg = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    directory: DirOpt = None,
    kind: KindOpt = None,
    selector: SelectorOpt = None,
    target: TargetOpt = None,
    output: Annotated[
        PlanFormat, typer.Option(*OUTPUT_NAMES, help="text, markdown (for a pull request), json or yaml.")
    ] = PlanFormat.text,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE",
            help="Also save the whole plan (JSON, no value shortened) to this file, for `fleet apply`.",
        ),
    ] = None,
    detailed_exitcode: DetailedOpt = False,
    lab: LabOpt = False,
    config: ConfigCheckOpt = None,
    state: StateOpt = None,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Compare the specs with live state and what fleet last applied; show what would change.

    Reads live state and the state store's records; changes nothing live, and records in the
    store only the observations it made. Unknown resources (unreachable, refused) are reported,
    never planned, and make the plan incomplete.
    """

    def run() -> Plan:
        settings = settings_of(cache_dir=cache_dir, state=state, lab=lab, config=config)
        with (
            engine_for(settings, store=True) as engine,
            engine.plan(
                SourceRef(path, repo, rev, directory), Selection(kind, selector, tuple(target or ()))
            ) as planned,
        ):
            return planned.plan

    result = guard(run, detailed=detailed_exitcode)
    if out_file is not None:
        try:
            out_file.write_text(render_json(result))
        except OSError as exc:
            fail(f"cannot write {out_file}: {exc.strerror}", EXIT_FAILED if detailed_exitcode else 2)
    if output is PlanFormat.json:
        typer.echo(render_json(result, bounded=True), nl=False)
    elif output is PlanFormat.yaml:
        typer.echo(yaml_text(json.loads(render_json(result, bounded=True))), nl=False)
    elif output is PlanFormat.markdown:
        typer.echo(render_markdown(result))
    else:
        render_text(result, out())
    if detailed_exitcode:
        raise typer.Exit(_verdict(result, result.has_changes))


def _saved_plan(planfile: Path) -> Plan:
    try:
        return plan_from_dict(json.loads(planfile.read_text()))
    except OSError as exc:
        raise UsageError(f"cannot read plan {planfile}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{planfile} is not a fleet plan: {exc}") from None


def _confirm(plan: Plan, yes: bool) -> None:
    if not plan.has_changes or yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("refusing to apply without confirmation", hint="pass --yes")
    if not typer.confirm(f"Apply {len(plan.changes())} changes?", default=False):
        raise UsageError("not applied")


def _countdown(seconds_left: float, holders: Sequence[LockHolder]) -> None:
    who = ", ".join(f"{shorten(h.owner)} (run {h.run_id})" for h in holders)
    err().print(Text(f"waiting for locks held by {who}: {seconds_left:.0f} s left", style="yellow"))


def _apply_with_progress(
    engine: Engine, planned: PlannedRun, options: RunOptions, cancel: CancelToken, console: Console
) -> RunResult:
    """Apply, a line per action as it ends (and a progress bar on a terminal)."""
    if not console.is_terminal or not planned.plan.has_changes:
        return engine.apply(
            planned, options, cancel, on_outcome=lambda o: render_outcome(o, console), on_wait=_countdown
        )
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("applying", total=len(planned.plan.changes()))

        def advance(outcome: Outcome) -> None:
            render_outcome(outcome, progress.console)
            progress.advance(task)

        return engine.apply(planned, options, cancel, on_outcome=advance, on_wait=_countdown)


def _run_and_report(
    source: SourceRef,
    selection: Selection,
    options: RunOptions,
    *,
    lab: bool,
    config: bool | None,
    state: str | None,
    cache_dir: Path | None,
    planfile: Path | None,
    yes: bool,
) -> None:
    console = out()

    def run() -> RunResult:
        settings = settings_of(cache_dir=cache_dir, state=state, lab=lab, config=config)
        saved = _saved_plan(planfile) if planfile is not None else None
        with (
            engine_for(settings, store=True) as engine,
            engine.plan(source, selection, saved=saved, partial=options.kind == "reconcile") as planned,
        ):
            if planned.tolerated:
                render_diagnostics(planned.tolerated, err())
                err().print(
                    Text(
                        f"warning: the revision has {counted(len(planned.tolerated), 'error')}, none of "
                        "them in the targets or what they reference: reconciling "
                        f"{', '.join(map(shorten, selection.targets))} anyway, without orphan handling; "
                        "the errors go into the run's audit record",
                        style="yellow",
                    )
                )
            if options.refuse_suspended:
                engine.refuse_suspended(planned)  # before anything is shown or asked
            render_text(planned.plan, console)
            _confirm(planned.plan, yes)
            cancel = CancelToken()
            with ctrl_c_cancels(cancel):
                return _apply_with_progress(engine, planned, options, cancel, console)

    result = guard(run)
    report = result.report
    # The emergency path promises convergence: a target fleet could not even observe is not.
    unknown = sorted({e.address for e in result.plan.entries if e.finding.value == "unknown"})
    if report is None:
        console.print(f"Run {result.run_id}: nothing to apply.")
        if options.kind == "reconcile" and unknown:
            fail(f"not converged: {', '.join(unknown)} could not be observed", EXIT_FAILED)
        return
    for holder in result.broken_locks:
        err().print(
            Text(
                f"broke the lock of {shorten(holder.owner)} (run {holder.run_id}) "
                f"on {shorten(holder.address)}",
                style="yellow",
            )
        )
    console.print(run_summary(result.run_id, report))
    if report.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED if "Ctrl-C" in report.reason else EXIT_FAILED)
    if options.kind == "reconcile" and unknown:
        fail(f"not converged: {', '.join(unknown)} could not be observed", EXIT_FAILED)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)


@app.command()
def apply(
    path: Annotated[
        Path | None,
        typer.Argument(
            metavar="PLANFILE|PATH",
            help="A saved plan (from `fleet plan --out FILE`), or the fleet repo working tree"
            " (default: the current directory).",
            show_default=False,
        ),
    ] = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    kind: KindOpt = None,
    selector: SelectorOpt = None,
    target: TargetOpt = None,
    yes: YesOpt = False,
    parallel: Annotated[
        int, typer.Option("--parallel", metavar="N", min=1, help="Changes at once within a wave.")
    ] = 16,
    allow_destructive: Annotated[
        bool, typer.Option("--allow-destructive", help="Apply even beyond the blast-radius policy.")
    ] = False,
    repo_path: Annotated[
        Path | None,
        typer.Option(
            "--path",
            metavar="DIR",
            help="With --repo: the fleet repo's directory inside the repository; with a saved plan and"
            " no --repo: the repo's working tree (default: .).",
            show_default=False,
        ),
    ] = None,
    lab: LabOpt = False,
    config: ConfigOpt = None,
    state: StateOpt = None,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Plan and apply the changes (or apply a saved plan while it still holds), recording every action."""
    if path is not None and not path.exists():
        fail(f"no such plan file or fleet repo: {path}")
    planfile = path if path is not None and path.is_file() else None
    if repo is not None:
        source = SourceRef(None if planfile else path, repo, rev, str(repo_path) if repo_path else None)
    else:
        source = SourceRef(repo_path if planfile is not None else path)
        if repo_path is not None and planfile is None:
            fail("--path needs --repo or a saved plan (for a working tree, give it as PATH)")
    _run_and_report(
        source,
        Selection(kind, selector, tuple(target or ())),
        RunOptions(kind="apply", allow_destructive=allow_destructive, parallel=parallel),
        lab=lab,
        config=config,
        state=state,
        cache_dir=cache_dir,
        planfile=planfile,
        yes=yes,
    )


@app.command()
def reconcile(
    now: Annotated[bool, typer.Option("--now", help="Reconcile the targets right now (required).")] = False,
    path: PathArg = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    directory: DirOpt = None,
    target: Annotated[
        list[str] | None, typer.Option("--target", "-t", metavar="ADDRESS", help="Address (repeatable).")
    ] = None,
    selector: SelectorOpt = None,
    reason: Annotated[
        str | None,
        typer.Option("--reason", metavar="TEXT", help="Why (recorded in the audit trail; required)."),
    ] = None,
    incident: Annotated[
        str | None, typer.Option("--incident", metavar="ID", help="Incident id (recorded).")
    ] = None,
    emergency: Annotated[
        bool, typer.Option("--emergency", help="Bypass blast radius and change windows (recorded).")
    ] = False,
    break_lock: Annotated[
        bool, typer.Option("--break-lock", help="Take the locks of others (recorded).")
    ] = False,
    wait: Annotated[
        float,
        typer.Option("--wait", metavar="SECONDS", min=0, help="Seconds to wait for locks held by others."),
    ] = 300,
    yes: YesOpt = False,
    lab: LabOpt = False,
    config: ConfigOpt = None,
    state: StateOpt = None,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """The audited emergency path: observe, plan and apply only the targets, immediately.

    When the revision has errors outside the targets' own specs and what they reference, it goes
    on for the targets (without orphan handling) and records the errors with the run."""
    if not now:
        fail("`fleet reconcile` needs --now (it acts immediately)")
    if not target and not selector:
        fail("name what to reconcile with --target ADDRESS or -l SELECTOR")
    if not reason or not reason.strip():
        fail("--reason is required: it goes into the audit record")
    _run_and_report(
        SourceRef(path, repo, rev, directory),
        Selection(None, selector, tuple(target or ())),
        RunOptions(
            kind="reconcile",
            reason=reason,
            incident=incident,
            emergency=emergency,
            allow_destructive=emergency,
            break_lock=break_lock,
            lock_wait_seconds=wait,
            refuse_suspended=True,
        ),
        lab=lab,
        config=config,
        state=state,
        cache_dir=cache_dir,
        planfile=None,
        yes=yes,
    )


@app.command()
def drift(
    path: PathArg = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    directory: DirOpt = None,
    kind: KindOpt = None,
    selector: SelectorOpt = None,
    target: TargetOpt = None,
    output: OutputOpt = OutputFormat.text,
    detailed_exitcode: DetailedOpt = False,
    lab: LabOpt = False,
    config: ConfigCheckOpt = None,
    state: StateOpt = None,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Live state that moved away from what fleet last applied (out-of-band changes), and unknowns.

    Changes nothing live; records in the store the observations and the drift findings (when
    each was first seen, which are resolved)."""

    def run() -> DriftResult:
        settings = settings_of(cache_dir=cache_dir, state=state, lab=lab, config=config)
        with engine_for(settings, store=True) as engine:
            return engine.drift(
                SourceRef(path, repo, rev, directory), Selection(kind, selector, tuple(target or ()))
            )

    result = guard(run, detailed=detailed_exitcode)
    if output is OutputFormat.text:
        render_drift(result.plan, result.findings, out())
    else:
        echo_data(json.loads(drift_json(result.plan, result.findings)), output)
    if detailed_exitcode:
        drifted = any(e.finding.value == "drift" for e in result.plan.entries)
        raise typer.Exit(_verdict(result.plan, drifted))


@app.command()
def history(
    target: Annotated[
        str | None,
        typer.Option("--target", "-t", metavar="ADDRESS", help="Only runs that touched this address."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="WHEN",
            help="Only runs started at or after WHEN: a duration back from now (30m, 1h, 7d, 2w) "
            "or an ISO 8601 time (UTC unless it says otherwise).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", metavar="N", min=1, help="At most this many runs.")] = 50,
    output: ListOutputOpt = ListFormat.text,
    no_headers: NoHeadersOpt = False,
    state: StateOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """The audit trail: who ran what, why, on which revision, and how every action ended
    (`-o wide` lists the changes of each run)."""
    when = parse_since(since, datetime.now(UTC)) if since is not None else None

    def run() -> list[RunRecord]:
        url = settings_of(state=state).state_url()
        if not store_exists(url):  # a mistyped --state must not look like an empty history
            raise UsageError(
                f"no state store at {url}: nothing has been planned or applied with it",
                hint="check --state or FLEET_STATE",
            )
        with open_store(url) as store:
            announce_store(store)
            return store.history(target, when, limit)

    runs = guard(run)
    if output in (ListFormat.json, ListFormat.yaml):
        echo_data(history_data(runs), output)
    elif output is ListFormat.name:
        for r in runs:
            typer.echo(f"run/{r.id}")
    else:
        history_table(runs, out(), wide=output is ListFormat.wide, headers=not no_headers)
        if not runs:
            note("no runs recorded")
