"""`fleet pr comment`: plan a pull request's head against live state and keep one sticky comment on
it, with the commit status `fleet/plan`.

In GitHub Actions (`GITHUB_EVENT_PATH`) and in GitLab merge-request pipelines (`CI_MERGE_REQUEST_*`)
it needs no flags. The token comes from FLEET_VCS_TOKEN (else GITHUB_TOKEN or GITLAB_TOKEN); a
GitHub App from FLEET_GITHUB_APP_ID, FLEET_GITHUB_APP_KEY_FILE and FLEET_GITHUB_INSTALLATION_ID.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.common import (
    CacheOpt,
    DirOpt,
    LabOpt,
    QuietOpt,
    StateOpt,
    VerboseOpt,
    app,
    engine_for,
    err,
    guard,
    note,
    settings_of,
)
from reconciler.settings import process_environment
from reconciler.vcs.comment import STATUS_CONTEXT, comment_on_pull_request
from reconciler.vcs.context import Vcs, forge_for, project_of, pull_request, token_of

pr_app = typer.Typer(
    help="Pull requests: plan one and keep its sticky comment and status.", no_args_is_help=True
)
app.add_typer(pr_app, name="pr")


VcsOpt = Annotated[
    str | None,
    typer.Option("--vcs", metavar="github|gitlab", help="The forge (default: from the CI environment)."),
]
ProjectOpt = Annotated[
    str | None, typer.Option("--project", metavar="OWNER/NAME", help="The project (default: from CI).")
]


@pr_app.command("comment")
def comment(
    vcs: VcsOpt = None,
    project: ProjectOpt = None,
    number: Annotated[
        int | None, typer.Option("--pr", metavar="N", min=1, help="The pull request (default: from CI).")
    ] = None,
    base: Annotated[
        str | None, typer.Option("--base", metavar="REV", help="Its base commit (default: from CI).")
    ] = None,
    head: Annotated[
        str | None, typer.Option("--head", metavar="REV", help="Its head commit (default: from CI).")
    ] = None,
    repo: Annotated[
        str,
        typer.Option(
            "--repo",
            metavar="PATH_OR_URL",
            help="The fleet repo's Git repository, holding both commits (default: the current"
            " directory; a CI checkout needs the whole history: fetch-depth 0).",
        ),
    ] = ".",
    directory: DirOpt = None,
    artifact: Annotated[
        Path,
        typer.Option(
            "--artifact",
            metavar="FILE",
            help="Where the whole plan is written when the comment can only summarise it.",
        ),
    ] = Path("fleet-plan.txt"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write the comment to stdout and call no forge API.")
    ] = False,
    lab: LabOpt = False,
    state: StateOpt = None,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Plan the pull request's head against live state (the resources it changes and what depends
    on them, with their drift and unknowns) and keep one comment on it, edited in place on every
    later push, plus the commit status `fleet/plan` (a failure for invalid specs, a plan over the
    blast radius, or a changed resource that could not be observed). Exits 0 whatever the
    verdict: the status is what blocks a merge."""
    if vcs not in (None, "github", "gitlab"):
        raise typer.BadParameter("github or gitlab", param_hint="--vcs")

    def work() -> None:
        environment = process_environment()
        request = pull_request(
            environment, vcs=_vcs(vcs), project=project, number=number, base=base, head=head
        )
        settings = settings_of(cache_dir=cache_dir, state=state, lab=lab)
        forge = None if dry_run else forge_for(request, settings, environment)
        try:
            with engine_for(settings, store=True) as engine:
                done = comment_on_pull_request(
                    engine, request, repo, directory=directory, forge=forge, artifact=artifact
                )
        finally:
            if forge is not None:
                forge.close()
        if not done.complete:
            note(f"the comment summarises the plan; the whole plan is in {artifact}")
        if dry_run:
            typer.echo(done.body, nl=False)
        else:
            note(f"comment {done.comment_action}: {done.comment_url}; {done.api_calls} API calls")
        note(f"status {STATUS_CONTEXT}: {done.state}: {done.description}")

    guard(work)
    if not quiet:
        err().print("done")


def _vcs(value: str | None) -> Vcs | None:
    if value == "github":
        return "github"
    if value == "gitlab":
        return "gitlab"
    return None


@app.command("drift-report")
def drift_report(
    repo: Annotated[
        str, typer.Option("--repo", metavar="PATH_OR_URL", help="The fleet repo's Git repository.")
    ] = ".",
    branch: Annotated[
        str, typer.Option("--branch", metavar="BRANCH", help="The branch fleet applies (the PRs' base).")
    ] = "main",
    directory: DirOpt = None,
    vcs: VcsOpt = None,
    project: ProjectOpt = None,
    grace: Annotated[
        float,
        typer.Option(
            "--grace", metavar="MINUTES", min=0, help="Report drift only once it has lasted this long."
        ),
    ] = 60.0,
    as_issue: Annotated[
        bool, typer.Option("--as-issue", help="A tracking issue per site instead of a pull request.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be reported; push and call nothing.")
    ] = False,
    push_only: Annotated[
        bool,
        typer.Option(
            "--push-only",
            help="Push the branches but call no forge API: print the pull request to open from each"
            " (its title and body), for a forge fleet has no client for or a local repository. A"
            " branch whose drift is gone is left as it is.",
        ),
    ] = False,
    lab: LabOpt = False,
    state: StateOpt = None,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Keep one drift pull request per site for drift older than --grace: a branch
    `fleet/drift/SITE` whose commit edits the specs to the live values (only those lines; the
    result validates), updated as drift changes, closed when it is gone. Merging adopts the
    drift; closing lets enforcement revert enforced fields. Pushes with FLEET_VCS_TOKEN."""
    if vcs not in (None, "github", "gitlab"):
        raise typer.BadParameter("github or gitlab", param_hint="--vcs")
    if push_only and (dry_run or as_issue):
        raise typer.BadParameter("not with --dry-run or --as-issue", param_hint="--push-only")

    def work() -> None:
        from datetime import timedelta

        from reconciler.source.git import GitCredentials
        from reconciler.vcs.drift import report_drift

        environment = process_environment()
        settings = settings_of(cache_dir=cache_dir, state=state, lab=lab)
        forge = None
        credentials = None
        if push_only and settings.vcs_token is not None:
            credentials = GitCredentials.token(settings.vcs_token.get_secret_value(), vcs or "github")
        elif not dry_run and not push_only:
            where = project_of(environment, vcs=_vcs(vcs), project=project)
            forge = forge_for(where, settings, environment)
            token = token_of(where, settings, environment)
            if token:
                credentials = GitCredentials.token(token, where.vcs)
        try:
            with engine_for(settings, store=True) as engine:
                reports = report_drift(
                    engine,
                    repo,
                    branch,
                    directory=directory,
                    forge=forge,
                    credentials=credentials,
                    grace=timedelta(minutes=grace),
                    as_issue=as_issue,
                    push=push_only,
                )
        finally:
            if forge is not None:
                forge.close()
        for report in reports:
            where_to = f" {report.url}" if report.url else ""
            if report.branch is not None and report.commit is not None:
                where_to = f" {report.branch} at {report.commit[:12]}"
            typer.echo(
                f"{report.scope}: {report.action}{where_to} ({report.fields} drifted fields,"
                f" {report.adopted} adopted in the specs)"
            )
        for report in reports:
            if report.branch is not None:
                typer.echo(f"\npull request to open: {report.branch} -> {branch}\ntitle: {report.title}\n")
                typer.echo(report.body, nl=False)

    guard(work)
    if not quiet:
        err().print("done")
