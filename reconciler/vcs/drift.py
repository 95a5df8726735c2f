"""Drift reports as pull requests (or issues): one per scope, a site by default.

For drift that has lasted longer than the grace period (so a flapping BMC opens nothing), the
report of a scope is a branch `fleet/drift/<scope>` whose commit edits the specs so that the
drifted fields take their live values (`reconciler.kinds.adopt`: only those lines change, and
the result validates), and a pull request into the followed branch whose body lists the drift.
Merging it adopts the drift; closing it lets enforcement revert enforced fields. As drift changes
the branch is force-updated and the body edited in place; when a scope's drift is gone, its pull
request is closed with a comment saying so. With `as_issue`, a tracking issue per scope instead.
Without a forge it changes nothing (a dry run), or with `push` pushes the branches and leaves the
pull requests to whoever opens them: a forge fleet has no client for, or a local repository.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from reconciler.engine import Engine, Selection
from reconciler.errors import UsageError
from reconciler.kinds import kind_of
from reconciler.kinds.adopt import DriftedField, SpecEdits, adopt_drift, drifted_fields
from reconciler.plan.model import Finding
from reconciler.report.drift_pr import DriftScope, drift_body, drift_marker, drift_title
from reconciler.source import SourceRef
from reconciler.source.git import GitCredentials, branch_head, commit_files, push_branch
from reconciler.spec import models
from reconciler.vcs.base import Forge

BRANCH_PREFIX = "fleet/drift/"
AUTHOR = ("fleet", "fleet@localhost")


@dataclasses.dataclass(frozen=True)
class ScopeReport:
    scope: str
    fields: int  # drifted fields reported
    adopted: int  # of them written into the specs
    action: str  # opened, updated, closed, unchanged, pushed, none (a dry run: would-*)
    url: str | None = None
    commit: str | None = None
    branch: str | None = None  # pushed without a forge: the pull request to open, from it
    title: str = ""
    body: str = ""


def report_drift(
    engine: Engine,
    repo: str,
    branch: str,
    *,
    directory: str | None = None,
    forge: Forge | None = None,
    credentials: GitCredentials | None = None,
    grace: timedelta = timedelta(hours=1),
    as_issue: bool = False,
    push: bool = False,
    now: datetime | None = None,
) -> list[ScopeReport]:
    """Observe the whole fleet at the head of `branch`, and keep one drift pull request (or issue)
    per site for the drift older than `grace`. Without a `forge` change nothing (a dry run), or
    with `push` push each drifted site's branch and open nothing: the reports carry the title and
    body of the pull request to open, and a branch whose drift is gone is left as it is."""
    if push and (forge is not None or as_issue):
        raise UsageError("pushing without a forge is for pull requests: not with a forge, nor for issues")
    cache = engine.settings.cache_dir
    head = branch_head(repo, branch, cache)
    ref = SourceRef(None, repo, head, directory)
    result = engine.drift(ref, Selection())
    snapshot = engine.open_source(ref)
    revision = engine.load(snapshot)
    documents = {
        d.document.address: d.document for d in revision.documents if d.document.kind_name != "Fleet"
    }
    machines = {d.metadata.name: d for d in documents.values() if isinstance(d, models.Machine)}
    cutoff = (now or datetime.now(UTC)) - grace
    by_scope: dict[str, list[DriftedField]] = {}
    first_seen: dict[tuple[str, str], datetime] = {}
    observed_since = engine.store.differences_since()
    for drifted in drifted_fields(result.plan, (Finding.DRIFT, Finding.OBSERVE_ONLY)):
        key = (drifted.address, drifted.field)
        finding = result.findings.get(key)
        seen = finding.first_seen if finding is not None else observed_since.get(key)
        if seen is None or seen > cutoff:
            continue  # not yet past the grace period (or not a recorded finding)
        first_seen[(drifted.address, drifted.field)] = seen
        document = documents.get(drifted.address)
        scope = (kind_of(document).site(document, machines) if document is not None else None) or "global"
        by_scope.setdefault(scope, []).append(drifted)
    reports = []
    # Every site may hold an open report from before (its drift may be gone now).
    declared = (
        [site.name for site in revision.fleet.spec.sites] if revision.fleet is not None and forge else []
    )
    sites = sorted({*by_scope, *declared})
    for scope in sites:
        fields = by_scope.get(scope, [])
        edits = adopt_drift(snapshot, revision, fields) if fields else SpecEdits({}, (), ())
        view = DriftScope(scope, head, tuple(fields), edits, first_seen)
        reports.append(
            _keep(
                engine, repo, branch, head, directory, forge, credentials, view, as_issue=as_issue, push=push
            )
        )
    return reports


def _keep(
    engine: Engine,
    repo: str,
    base_branch: str,
    head: str,
    directory: str | None,
    forge: Forge | None,
    credentials: GitCredentials | None,
    view: DriftScope,
    *,
    as_issue: bool,
    push: bool,
) -> ScopeReport:
    branch = BRANCH_PREFIX + view.scope
    count, adopted = len(view.drifted), len(view.edits.adopted)
    title, body = drift_title(view), drift_body(view, as_issue=as_issue)
    if forge is None and not (push and count):
        return ScopeReport(view.scope, count, adopted, "would report" if count else "none")
    if forge is None:
        commit = _push(engine, repo, head, directory, credentials, view, branch)
        return ScopeReport(view.scope, count, adopted, "pushed", None, commit, branch, title, body)
    if as_issue:
        marker = drift_marker(view.scope)
        found = forge.find_issue(marker)
        if not count:
            if found is None:
                return ScopeReport(view.scope, 0, 0, "none")
            closed = forge.close_issue(found.number, f"The drift in {view.scope} is gone (at `{head[:12]}`).")
            return ScopeReport(view.scope, 0, 0, "closed", closed.url)
        if found is None:
            issue = forge.open_issue(title, body)
            return ScopeReport(view.scope, count, adopted, "opened", issue.url)
        if found.body.strip() == body.strip():
            return ScopeReport(view.scope, count, adopted, "unchanged", found.url)
        issue = forge.update_issue(found.number, title, body)
        return ScopeReport(view.scope, count, adopted, "updated", issue.url)
    found_pull = forge.find_pull(branch)
    if not count:
        if found_pull is None:
            return ScopeReport(view.scope, 0, 0, "none")
        closed_pull = forge.close_pull(
            found_pull.number,
            f"The drift in {view.scope} is gone (at `{head[:12]}`): nothing left to adopt.",
        )
        return ScopeReport(view.scope, 0, 0, "closed", closed_pull.url)
    commit = _push(engine, repo, head, directory, credentials, view, branch)
    if found_pull is None:
        opened = forge.open_pull(branch, base_branch, title, body)
        return ScopeReport(view.scope, count, adopted, "opened", opened.url, commit)
    updated = forge.update_pull(found_pull.number, title, body)
    return ScopeReport(view.scope, count, adopted, "updated", updated.url, commit)


def _push(
    engine: Engine,
    repo: str,
    head: str,
    directory: str | None,
    credentials: GitCredentials | None,
    view: DriftScope,
    branch: str,
) -> str:
    """Commit the spec edits that adopt the drift on `head`, force-push them as `branch`; the commit."""
    cache = engine.settings.cache_dir
    files: Mapping[str, str | None] = view.edits.files
    message = (
        f"fleet: adopt drift in {view.scope}\n\n"
        f"{len(view.edits.adopted)} drifted fields take their live values."
    )
    commit = commit_files(
        repo, head, files, message, *AUTHOR, cache, directory=directory or "", credentials=credentials
    )
    push_branch(repo, branch, commit, force=True, credentials=credentials, cache_dir=cache)
    return commit
