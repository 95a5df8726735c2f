"""Which pull request a job is about: from GitHub Actions or a GitLab merge-request pipeline, with
flags over what the CI environment says.

- GitHub Actions: `GITHUB_EVENT_PATH` holds the `pull_request` event (its number, base and head
  commits, base branch, author and labels); `GITHUB_REPOSITORY`, `GITHUB_API_URL` and
  `GITHUB_SERVER_URL` name the project and where the API and the web pages are.
- GitLab: `CI_MERGE_REQUEST_IID`, `CI_MERGE_REQUEST_DIFF_BASE_SHA`, `CI_COMMIT_SHA`,
  `CI_MERGE_REQUEST_TARGET_BRANCH_NAME`, `CI_MERGE_REQUEST_LABELS`, `CI_PROJECT_PATH`,
  `CI_API_V4_URL` and `CI_PROJECT_URL`.

The environment is given, never read here: `reconciler.settings` is the one place that reads it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from reconciler.errors import UsageError
from reconciler.settings import Settings
from reconciler.vcs.base import Forge

Vcs = Literal["github", "gitlab"]
MAX_EVENT_BYTES = 25 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class PullRequestRef:
    """A pull (GitHub) or merge (GitLab) request, as a plan job needs it."""

    vcs: Vcs
    project: str  # OWNER/NAME (GitHub) or GROUP/.../NAME (GitLab)
    number: int
    base: str  # the base commit
    head: str  # the head commit
    base_branch: str | None = None
    author: str | None = None
    labels: tuple[str, ...] = ()
    api_url: str | None = None
    web_url: str | None = None  # the project's pages, for links to files

    def link(self, path: str, line: int) -> str:
        """The URL of `path` (at line `line`) at the head commit."""
        web = self.web_url or (
            f"https://github.com/{self.project}"
            if self.vcs == "github"
            else f"https://gitlab.com/{self.project}"
        )
        blob = "blob" if self.vcs == "github" else "-/blob"
        return f"{web}/{blob}/{self.head}/{path}" + (f"#L{line}" if line else "")


def pull_request(
    environment: Mapping[str, str],
    *,
    vcs: Vcs | None = None,
    project: str | None = None,
    number: int | None = None,
    base: str | None = None,
    head: str | None = None,
) -> PullRequestRef:
    """The pull request of this CI job, with the flags given over what the environment says.
    Raises UsageError naming what is missing."""
    found: dict[str, Any] = {}
    if vcs in (None, "github") and environment.get("GITHUB_EVENT_PATH"):
        found = _github(environment)
    elif vcs in (None, "gitlab") and environment.get("CI_MERGE_REQUEST_IID"):
        found = _gitlab(environment)
    given = {"vcs": vcs, "project": project, "number": number, "base": base, "head": head}
    values = {**found, **{k: v for k, v in given.items() if v is not None}}
    missing = [
        flag
        for flag, key in (
            ("--vcs", "vcs"),
            ("--project", "project"),
            ("--pr", "number"),
            ("--base", "base"),
            ("--head", "head"),
        )
        if not values.get(key)
    ]
    if missing:
        raise UsageError(
            f"which pull request? {', '.join(missing)} not given and not found in the CI environment",
            hint="run it in GitHub Actions on a pull_request event or in a GitLab merge-request pipeline,"
            " or give the flags",
        )
    return PullRequestRef(**values)


def _github(environment: Mapping[str, str]) -> dict[str, Any]:
    path = Path(environment["GITHUB_EVENT_PATH"])
    try:
        if path.stat().st_size > MAX_EVENT_BYTES:
            raise UsageError(f"{path}: the event is over {MAX_EVENT_BYTES // (1024 * 1024)} MB")
        event = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"{path} (GITHUB_EVENT_PATH) cannot be read as the event: {type(exc).__name__}",
            hint="run on a pull_request event, or give --pr, --base and --head",
        ) from None
    pull = event.get("pull_request") if isinstance(event, dict) else None
    if not isinstance(pull, dict):
        return {"vcs": "github", "project": environment.get("GITHUB_REPOSITORY")}
    base, head = pull.get("base") or {}, pull.get("head") or {}
    server = environment.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    project = environment.get("GITHUB_REPOSITORY") or (base.get("repo") or {}).get("full_name")
    return {
        "vcs": "github",
        "project": project,
        "number": pull.get("number"),
        "base": base.get("sha"),
        "head": head.get("sha"),
        "base_branch": base.get("ref"),
        "author": (pull.get("user") or {}).get("login"),
        # A trust label vouches for the commits it was set on; a later push keeps the label on the
        # forge, so labels count only on the `labeled` event itself.
        "labels": tuple(
            str(label.get("name")) for label in pull.get("labels") or [] if isinstance(label, dict)
        )
        if event.get("action") == "labeled"
        else (),
        "api_url": environment.get("GITHUB_API_URL"),
        "web_url": f"{server}/{project}" if project else None,
    }


def _gitlab(environment: Mapping[str, str]) -> dict[str, Any]:
    number = environment.get("CI_MERGE_REQUEST_IID", "")
    return {
        "vcs": "gitlab",
        "project": environment.get("CI_MERGE_REQUEST_PROJECT_PATH") or environment.get("CI_PROJECT_PATH"),
        "number": int(number) if number.isdigit() else None,
        "base": environment.get("CI_MERGE_REQUEST_DIFF_BASE_SHA"),
        "head": environment.get("CI_COMMIT_SHA"),
        "base_branch": environment.get("CI_MERGE_REQUEST_TARGET_BRANCH_NAME"),
        "author": environment.get("GITLAB_USER_LOGIN"),
        # GitLab pipelines do not say whether labels changed after the last push: none count.
        "labels": (),
        "api_url": environment.get("CI_API_V4_URL"),
        "web_url": environment.get("CI_MERGE_REQUEST_PROJECT_URL") or environment.get("CI_PROJECT_URL"),
    }


def project_of(
    environment: Mapping[str, str], *, vcs: Vcs | None = None, project: str | None = None
) -> PullRequestRef:
    """The forge and project of this CI job (no pull request needed): for drift reports."""
    found: dict[str, Any] = {}
    if vcs in (None, "github") and environment.get("GITHUB_REPOSITORY"):
        server = environment.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        name = environment["GITHUB_REPOSITORY"]
        found = {
            "vcs": "github",
            "project": name,
            "api_url": environment.get("GITHUB_API_URL"),
            "web_url": f"{server}/{name}",
        }
    elif vcs in (None, "gitlab") and environment.get("CI_PROJECT_PATH"):
        found = {
            "vcs": "gitlab",
            "project": environment["CI_PROJECT_PATH"],
            "api_url": environment.get("CI_API_V4_URL"),
            "web_url": environment.get("CI_PROJECT_URL"),
        }
    values = {**found, **{k: v for k, v in {"vcs": vcs, "project": project}.items() if v}}
    if not values.get("vcs") or not values.get("project"):
        raise UsageError(
            "which project? --vcs and --project not given and not found in the CI environment",
            hint="e.g. --vcs github --project acme/fleet",
        )
    return PullRequestRef(number=0, base="", head="", **values)


def token_of(pull: PullRequestRef, settings: Settings, environment: Mapping[str, str]) -> str | None:
    """The token fleet uses on `pull`'s forge (for Git pushes too), None when there is none."""
    if settings.vcs_token is not None:
        return settings.vcs_token.get_secret_value()
    return environment.get("GITHUB_TOKEN" if pull.vcs == "github" else "GITLAB_TOKEN") or None


def forge_for(pull: PullRequestRef, settings: Settings, environment: Mapping[str, str]) -> Forge:
    """The forge client of `pull`'s project, with fleet's credentials: FLEET_VCS_TOKEN, else the
    CI's own token (GITHUB_TOKEN, GITLAB_TOKEN); on GitHub, a GitHub App installation when
    FLEET_GITHUB_APP_ID, FLEET_GITHUB_APP_KEY_FILE and FLEET_GITHUB_INSTALLATION_ID are set."""
    from reconciler.vcs import Secret, github, gitlab

    if pull.vcs == "github":
        api = pull.api_url or settings.vcs_api_url or "https://api.github.com"
        if settings.github_app_id is not None:
            if settings.github_app_key_file is None or settings.github_installation_id is None:
                raise UsageError(
                    "FLEET_GITHUB_APP_ID needs FLEET_GITHUB_APP_KEY_FILE and FLEET_GITHUB_INSTALLATION_ID"
                )
            try:
                key = settings.github_app_key_file.read_text()
            except OSError as exc:
                raise UsageError(
                    f"cannot read the GitHub App's key {settings.github_app_key_file}: {exc.strerror}"
                ) from None
            return github(
                pull.project,
                app_id=settings.github_app_id,
                private_key=Secret(key),
                installation_id=settings.github_installation_id,
                base_url=api,
            )
        token = token_of(pull, settings, environment)
        if not token:
            raise UsageError(
                "no GitHub token: set FLEET_VCS_TOKEN (or GITHUB_TOKEN), or a GitHub App",
                hint="in GitHub Actions: env: FLEET_VCS_TOKEN: ${{ secrets.GITHUB_TOKEN }}",
            )
        return github(pull.project, token=Secret(token), base_url=api)
    token = token_of(pull, settings, environment)
    if not token:
        raise UsageError(
            "no GitLab token: set FLEET_VCS_TOKEN (or GITLAB_TOKEN) to an access token with the api scope",
            hint="CI_JOB_TOKEN cannot write merge request notes: use a project access token",
        )
    server = (pull.api_url or settings.vcs_api_url or "https://gitlab.com").removesuffix("/api/v4")
    return gitlab(pull.project, token=Secret(token), base_url=server)
