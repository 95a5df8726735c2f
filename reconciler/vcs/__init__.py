"""Forges: where fleet comments on pull requests, sets commit statuses and opens drift PRs.

Build a `Forge` from settings with `github(...)` or `gitlab(...)`; credentials are resolved by the
caller (from a `credentialsRef`) and passed in as values, ideally as `Secret`. Then:

    forge = github("acme/fleet", token=Secret(token))
    comment = forge.upsert_comment(pr, markdown, marker="<!-- fleet:plan -->")
    status = forge.set_status(head_sha, "success", "3 to change, 0 to destroy")
    calls = comment.api_calls + status.api_calls        # "API calls made"

    pull = forge.find_pull("fleet/drift") or forge.open_pull("fleet/drift", "main", title, body)

Every call returns a frozen value (`CommentResult`, `StatusResult`, `PullRequest`, `Issue`) or
raises `TemporaryError` (retry after `delay`) or `PermanentError` (the message names the project
and what to do). Nothing from githubkit or python-gitlab crosses this package's edge. Importing
a forge's module imports its SDK (about half a second), so the factories import them only when
called: importing this package (or `context`, `comment`) costs every other command nothing.
"""

from __future__ import annotations

from reconciler.vcs.base import (
    PROCESS_PACER,
    CommentResult,
    Forge,
    Issue,
    Limits,
    PullRequest,
    Revealable,
    Secret,
    StatusResult,
    StatusState,
    WritePacer,
)

__all__ = [
    "PROCESS_PACER",
    "CommentResult",
    "Forge",
    "Issue",
    "Limits",
    "PullRequest",
    "Revealable",
    "Secret",
    "StatusResult",
    "StatusState",
    "WritePacer",
    "github",
    "gitlab",
]


def github(
    project: str,
    *,
    token: str | Revealable | None = None,
    app_id: int | str | None = None,
    private_key: str | Revealable | None = None,
    installation_id: int | None = None,
    base_url: str = "https://api.github.com",
    limits: Limits | None = None,
    pacer: WritePacer | None = None,
) -> Forge:
    """A GitHub repository `owner/name`, as a token or as a GitHub App installation (`app_id`,
    PEM `private_key` and `installation_id`: the installation token is fetched and renewed as
    needed). `base_url` is `https://HOST/api/v3` on GitHub Enterprise Server. `limits` bound
    retries and waits; `pacer` spaces writes (default: the one of this process)."""
    from reconciler.vcs.github_api import GitHubForge

    return GitHubForge(
        project,
        token=token,
        app_id=app_id,
        private_key=private_key,
        installation_id=installation_id,
        base_url=base_url,
        limits=limits,
        pacer=pacer,
    )


def gitlab(
    project: str | int,
    *,
    token: str | Revealable,
    base_url: str = "https://gitlab.com",
    limits: Limits | None = None,
    pacer: WritePacer | None = None,
) -> Forge:
    """A GitLab project, `group/name` (subgroups too) or its numeric id, with a personal, project
    or group access token (api scope). `base_url` is the instance, e.g. `https://gitlab.example.com`."""
    from reconciler.vcs.gitlab_api import GitLabForge

    return GitLabForge(project, token=token, base_url=base_url, limits=limits, pacer=pacer)
