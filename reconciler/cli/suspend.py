"""`fleet suspend` and `fleet resume`: stop fleet from acting on resources, and let it again.

A suspended resource is still observed, planned and checked for drift; `apply`, `reconcile` and
the controller skip its changes (and those waiting for it), and an emergency reconcile of it is
refused. Both commands call the engine (as the controller's API does) and record who and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from reconciler.bounded import shorten
from reconciler.cli.common import (
    CacheOpt,
    DirOpt,
    KindOpt,
    OutputFormat,
    OutputOpt,
    QuietOpt,
    RepoOpt,
    RevOpt,
    SelectorOpt,
    StateOpt,
    VerboseOpt,
    app,
    echo_data,
    engine_for,
    err,
    fail,
    guard,
    note,
    out,
    settings_of,
)
from reconciler.cli.repo import split_path_and_addresses
from reconciler.engine import Selection, SourceRef
from reconciler.engine.suspensions import SuspensionResult
from reconciler.spec.models import RECONCILE_ANNOTATION
from reconciler.state import Suspension

ArgumentsArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[PATH] ADDRESS...",
        help="The repo's working tree (default: the current directory), then the addresses"
        " (e.g. machine/nyc1-r01-02); or name them with -l SELECTOR.",
        show_default=False,
    ),
]


def _suspension_data(suspension: Suspension) -> dict[str, Any]:
    return {
        "address": suspension.address,
        "operator": suspension.operator,
        "reason": suspension.reason,
        "since": suspension.since.isoformat().replace("+00:00", "Z"),
        "run": suspension.run_id,
    }


def result_data(result: SuspensionResult, operator: str, reason: str | None) -> dict[str, Any]:
    change = result.change
    return {
        "run": change.run_id,
        "action": change.kind,
        "operator": operator,
        "reason": reason,
        "changed": [_suspension_data(s) for s in change.changed],
        "unchanged": [
            {"address": address, "suspension": _suspension_data(s) if s is not None else None}
            for address, s in change.unchanged
        ],
        "annotated": dict(result.annotated),
    }


def _run(
    arguments: list[str] | None,
    repo: str | None,
    rev: str | None,
    directory: str | None,
    kind: str | None,
    selector: str | None,
    state: str | None,
    cache_dir: Path | None,
    act: str,
    reason: str | None,
) -> tuple[SuspensionResult, str]:
    path, addresses = split_path_and_addresses(list(arguments or ()))
    if not addresses and not selector and not kind:
        fail(f"name what to {act}: ADDRESS... or -l SELECTOR")

    def run() -> tuple[SuspensionResult, str]:
        settings = settings_of(cache_dir=cache_dir, state=state)
        with engine_for(settings, store=True) as engine:
            if engine.store.read_only:
                fail(f"state store {shorten(engine.store.url)} is read-only: cannot record the {act}")
            ref = SourceRef(path, repo, rev, directory)
            selection = Selection(kind, selector, tuple(addresses))
            if act == "suspend":
                assert reason is not None
                return engine.suspend(ref, selection, reason), settings.operator
            return engine.resume(ref, selection, reason), settings.operator

    return guard(run)


@app.command()
def suspend(
    arguments: ArgumentsArg = None,
    reason: Annotated[
        str | None,
        typer.Option("--reason", metavar="TEXT", help="Why (recorded in the audit trail; required)."),
    ] = None,
    selector: SelectorOpt = None,
    kind: KindOpt = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    directory: DirOpt = None,
    output: OutputOpt = OutputFormat.text,
    state: StateOpt = None,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Stop fleet from acting on resources: they are still observed and their drift reported, but
    apply, reconcile and the controller change nothing on them until `fleet resume`. Recorded
    with who and why (`fleet history`). The annotation fleet.dev/reconcile: disabled in a spec
    does the same."""
    if not reason or not reason.strip():
        fail("--reason is required: it goes into the audit record")
    result, operator = _run(
        arguments, repo, rev, directory, kind, selector, state, cache_dir, "suspend", reason
    )
    if output is not OutputFormat.text:
        echo_data(result_data(result, operator, reason), output)
        return
    console = out()
    for suspension in result.change.changed:
        console.print(f"{shorten(suspension.address)} suspended")
    for address, held in result.change.unchanged:
        assert held is not None
        console.print(Text(f"{shorten(address)} already {shorten(held.describe())}", style="yellow"))
    note(
        f"run {result.change.run_id}: {len(result.change.changed)} suspended, "
        f"{len(result.change.unchanged)} already suspended"
    )


@app.command()
def resume(
    arguments: ArgumentsArg = None,
    reason: Annotated[
        str | None, typer.Option("--reason", metavar="TEXT", help="Why (recorded in the audit trail).")
    ] = None,
    selector: SelectorOpt = None,
    kind: KindOpt = None,
    repo: RepoOpt = None,
    rev: RevOpt = None,
    directory: DirOpt = None,
    output: OutputOpt = OutputFormat.text,
    state: StateOpt = None,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Let fleet act on suspended resources again (the next apply or reconcile does). Recorded with
    who and why. A spec's own annotation fleet.dev/reconcile: disabled still suspends its resource."""
    result, operator = _run(
        arguments, repo, rev, directory, kind, selector, state, cache_dir, "resume", reason
    )
    if output is not OutputFormat.text:
        echo_data(result_data(result, operator, reason), output)
        return
    console = out()
    for suspension in result.change.changed:
        console.print(f"{shorten(suspension.address)} resumed (was {shorten(suspension.describe())})")
    for address, _ in result.change.unchanged:
        console.print(Text(f"{shorten(address)} was not suspended", style="yellow"))
    for address, path in result.annotated.items():
        err().print(
            Text(
                f"warning: {shorten(address)} stays suspended by its spec: annotation "
                f"{RECONCILE_ANNOTATION}: disabled in {shorten(path)}; remove it to reconcile the resource",
                style="yellow",
            )
        )
    note(
        f"run {result.change.run_id}: {len(result.change.changed)} resumed, "
        f"{len(result.change.unchanged)} were not suspended"
    )
