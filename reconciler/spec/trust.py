"""Whether fleet trusts a pull request: plans it with its own playbooks, roles, plugins and
templates, or with the base revision's (see `Engine.plan(untrusted=...)`).

The answer is read from the Fleet of the base revision, the one the pull request would change,
never from the pull request's own fleet.yaml: a pull request that adds its author to
`spec.pullRequests.trust` is not trusted by it. Pure: no forge, no Git, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.spec import models


def is_trusted(
    base_fleet: models.Fleet, author: str, teams: Iterable[str] = (), labels: Iterable[str] = ()
) -> bool:
    """Whether the base revision's Fleet trusts a pull request by `author` (the forge user who
    opened it), who belongs to `teams` (GitHub `org/team-slug`, GitLab group paths), and that
    carries `labels`. Names are compared without regard to case, as the forges do.

    `base_fleet` must be the Fleet of the pull request's base revision (the target branch),
    never of its head: otherwise a pull request could trust itself. The caller gives only labels
    that were set after the head commit it plans (a forge keeps labels when new commits are
    pushed, so a label set on reviewed commits would trust unreviewed ones), and the author of
    the pull request, not of its commits. Nobody is trusted by default.
    """
    trust = base_fleet.spec.pullRequests.trust
    if _folded(author) in {_folded(a) for a in trust.authors}:
        return True
    if {_folded(t) for t in teams} & {_folded(t) for t in trust.teams}:
        return True
    return trust.label is not None and _folded(trust.label) in {_folded(label) for label in labels}


def _folded(name: str) -> str:
    return name.strip().casefold()
