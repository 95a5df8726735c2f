"""`fleet lab up|status|down`: start, show and stop the simulated lab of a fleet repo.

`fleet` adds this typer app as its sub-command `lab` through the entry point group
`fleet.commands` (see pyproject.toml); production code never imports the lab. The commands
report and fail as every other `fleet` command does (`reconciler.cli.common`); a repo that
does not validate is refused, as everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from reconciler.cli.common import EXIT_FAILED, EXIT_OK, OutputFormat, QuietOpt, VerboseOpt, guard, out
from reconciler.errors import UsageError
from reconciler.settings import lab_directory
from reconciler.source.worktree import read_worktree
from reconciler.spec.loader import load_revision, require_valid

app = typer.Typer(
    help="A simulated lab for a fleet repo: IPMI BMCs, libvirt hypervisors, Kubernetes API servers and"
    " SSH hosts on loopback addresses, mapped to the repo's endpoints for commands run with --lab.",
    no_args_is_help=True,
)


@app.command("up")
def lab_up_command(
    path: Annotated[
        Path | None,
        typer.Argument(
            metavar="PATH",
            help="The fleet repo to simulate (default: the current directory when it holds a fleet.yaml,"
            " else fleet-repo-example).",
            show_default=False,
        ),
    ] = None,
    transition: Annotated[
        float,
        typer.Option(
            "--transition-seconds", metavar="SECONDS", help="How long a simulated power transition takes."
        ),
    ] = 0.3,
    as_specified: Annotated[
        bool, typer.Option("--as-specified", help="Start machines as the specs say instead of powered off.")
    ] = False,
    subnet: Annotated[
        int,
        typer.Option(
            "--subnet", metavar="N", min=1, max=250, help="BMCs listen on 127.SUBNET.x.y (default 60)."
        ),
    ] = 60,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Start BMC simulators for every Machine of a fleet repo, a libvirt test-driver daemon for
    every hypervisor Machine, a Kubernetes API test server for every Cluster and an SSH host for
    every configured Machine and VirtualMachine; print where."""
    from lab.control import lab_up
    from reconciler.spec import models

    if path is None:
        path = Path(".") if Path("fleet.yaml").is_file() else Path("fleet-repo-example")

    def run() -> Any:
        documents = [d.document for d in require_valid(load_revision(read_worktree(path))).documents]
        machines = [d for d in documents if isinstance(d, models.Machine)]
        if not machines:
            raise UsageError(f"{path} declares no valid Machine", hint="run `fleet validate` on it")
        return lab_up(
            str(path),
            machines,
            lab_directory(),
            transition_seconds=transition,
            cold=not as_specified,
            subnet=subnet,
            vms=[d for d in documents if isinstance(d, models.VirtualMachine)],
            clusters=[d for d in documents if isinstance(d, models.Cluster)],
            fleet=next((d for d in documents if isinstance(d, models.Fleet)), None),
        )

    info = guard(run)
    console = out()
    console.print(f"lab up: {info.machines} simulated BMCs (pid {info.pid}), state in {info.directory}")
    if info.hypervisors:
        console.print(
            f"lab up: {info.hypervisors} simulated hypervisors"
            f" (libvirtd test driver, pid {info.hypervisor_pid})"
        )
    if info.apiserver_pids:
        console.print(
            f"lab up: {len(info.apiserver_pids)} Kubernetes API test servers"
            f" (pids {', '.join(map(str, info.apiserver_pids))}), one per Cluster, with a Node per member"
        )
    if info.ssh_hosts:
        console.print(
            f"lab up: {info.ssh_hosts} SSH hosts for Ansible (sshd, pid {info.ssh_pid}),"
            " one per Machine and VirtualMachine with spec.config"
        )
    console.print(f"endpoint and credential overrides: {info.overrides}")
    console.print(
        "use them with `--lab`, e.g. `fleet observe --lab " + str(path) + "`; stop with `fleet lab down`"
    )


@app.command("status")
def lab_status_command(
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", "--format", help="Output format.")
    ] = OutputFormat.text,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Say whether a lab is running, and where its simulators listen."""
    from lab.control import lab_endpoints, lab_hypervisors, lab_status

    status = lab_status(lab_directory())
    endpoints = lab_endpoints(lab_directory()) if status["running"] else {}
    hypervisors = lab_hypervisors(lab_directory()) if status["running"] else {}
    if output is OutputFormat.json:
        typer.echo(json.dumps({**status, "endpoints": endpoints, "hypervisorUris": hypervisors}, indent=2))
    else:
        console = out()
        if not status["running"]:
            console.print("no lab is running")
        else:
            console.print(f"lab running: pid {status['pid']}, {status['machines']} BMCs for {status['repo']}")
            for written, actual in sorted(endpoints.items()):
                console.print(f"  {written} -> {actual}")
            for name, uri in sorted(hypervisors.items()):
                console.print(f"  machine/{name} libvirt -> {uri}")
    raise typer.Exit(EXIT_OK if status["running"] else EXIT_FAILED)


@app.command("down")
def lab_down_command(
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Stop the lab's simulators and remove its state; leaves nothing behind."""
    from lab.control import lab_down

    stopped = lab_down(lab_directory())
    out().print("lab down" if stopped else "no lab was running; nothing left behind")
