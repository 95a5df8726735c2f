"""A pull request's plan, posted: one job function for `fleet pr comment` and for the controller's
pull-request webhooks.

It plans the head on its merge base with the base branch (`reconciler.engine.pull`), renders the
sticky comment (`reconciler.report.pr`), writes the whole plan to `artifact` when the comment can
only summarise it, and keeps the comment and the commit status `fleet/plan` on the forge: a
comment-listing page or a few, one edit (or creation), one status.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

from reconciler.engine import Engine
from reconciler.engine.pull import plan_pull_request
from reconciler.errors import FleetError
from reconciler.plan.pull import PullRequestPlan
from reconciler.report.pr import MARKER, render_full, render_pr_comment
from reconciler.source import SourceRef
from reconciler.source.git import branch_head, merge_base
from reconciler.vcs.base import Forge, StatusState
from reconciler.vcs.context import PullRequestRef

STATUS_CONTEXT = "fleet/plan"
MAX_STATUS_DESCRIPTION = 140  # GitHub's limit


@dataclasses.dataclass(frozen=True)
class Commented:
    """What a pull request got: the comment (posted or, on a dry run, only rendered) and status."""

    plan: PullRequestPlan
    body: str
    complete: bool  # False: the comment summarises; the whole plan is in the artifact
    state: StatusState  # success or failure
    description: str
    comment_url: str | None = None
    comment_action: str | None = None  # created, updated, unchanged
    api_calls: int = 0


def comment_on_pull_request(
    engine: Engine,
    pull: PullRequestRef,
    repo: str,
    *,
    directory: str | None = None,
    forge: Forge | None = None,
    artifact: Path | None = None,
    notes: Iterable[str] = (),
    on_plan: Callable[[PullRequestPlan], None] | None = None,
) -> Commented:
    """Plan `pull` (both commits in the Git repository `repo`) and, with a `forge`, keep its
    comment and status; without one (a dry run) only render them."""
    cache = engine.settings.cache_dir
    since = merge_base(repo, pull.base, pull.head, cache)
    # Trust is the base revision's to give (a pull request cannot trust itself).
    trusted = pull.author is not None and engine.trusts(
        SourceRef(None, repo, since, directory), pull.author, labels=pull.labels
    )
    result = plan_pull_request(engine, repo, since, pull.head, directory=directory, trusted=trusted)
    if on_plan is not None:
        on_plan(result)
    shown = render_pr_comment(
        result,
        link=pull.link,
        base_moved_to=_base_moved(pull, repo, since, cache),
        artifact=str(artifact) if artifact is not None else None,
        notes=notes,
    )
    if not shown.complete and artifact is not None:
        artifact.write_text(render_full(result))
    failures = result.failures()
    state: StatusState = "failure" if failures else "success"
    description = ("; ".join(failures) or "the plan is ready")[:MAX_STATUS_DESCRIPTION]
    commented = Commented(result, shown.body, shown.complete, state, description)
    if forge is None:
        return commented
    posted = forge.upsert_comment(pull.number, shown.body, MARKER)
    status = forge.set_status(pull.head, state, description, STATUS_CONTEXT, posted.url)
    return dataclasses.replace(
        commented,
        comment_url=posted.url,
        comment_action=str(posted.action),
        api_calls=posted.api_calls + status.api_calls,
    )


def _base_moved(pull: PullRequestRef, repo: str, since: str, cache: Path) -> str | None:
    """The base branch's head when it moved past the merge base (as far as the repository knows:
    a CI checkout sees the remote branch it fetched)."""
    if pull.base_branch is None:
        return None
    try:
        now = branch_head(repo, pull.base_branch, cache)
    except FleetError:
        return None
    return now if now not in (since, pull.base) else None
