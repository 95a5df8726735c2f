"""A pull request's plan as a value: what merging its head would do, and why its status fails.

Made by `reconciler.engine.pull`, shown by `reconciler.report.pr`.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from reconciler.plan.model import Finding, Plan, PlanEntry
from reconciler.spec.diagnostics import Diagnostic


@dataclasses.dataclass(frozen=True)
class PullRequestPlan:
    """What a pull request's head would do; `plan` is None when the head revision is invalid or
    changes no resource."""

    base: str
    head: str
    changed_paths: tuple[str, ...]
    errors: tuple[Diagnostic, ...] = ()
    touched: tuple[str, ...] = ()
    whole_fleet: bool = False
    plan: Plan | None = None
    blast_radius: str | None = None  # why the plan is over the blast radius; None: within it
    observed_at: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))
    drift_known: bool = True  # the state store holds what fleet applied: drift can be told
    problem: str | None = None  # the plan could not be made (the message says why)
    sites: dict[str, str] = dataclasses.field(default_factory=dict)  # the site of each touched address
    notes: tuple[str, ...] = ()  # what an untrusted pull request's plan left out, for the comment
    deferred: dict[str, str] = dataclasses.field(default_factory=dict)  # not observed until trusted, why

    @property
    def valid(self) -> bool:
        return not self.errors

    def touched_entries(self, finding: Finding) -> tuple[PlanEntry, ...]:
        if self.plan is None:
            return ()
        touched = set(self.touched)
        return tuple(e for e in self.plan.with_finding(finding) if e.address in touched)

    def failures(self) -> list[str]:
        """Why the pull request's status is a failure; empty when it passes."""
        reasons = []
        if self.errors:
            reasons.append(f"{len(self.errors)} validation error{'s' if len(self.errors) != 1 else ''}")
        if self.problem is not None:
            reasons.append("the plan could not be made")
        if self.blast_radius is not None:
            reasons.append("over the blast radius")
        unknown = {e.address for e in self.touched_entries(Finding.UNKNOWN)} | set(self.deferred)
        if unknown:
            reasons.append(f"{len(unknown)} changed resource{'s' if len(unknown) != 1 else ''} not observed")
        return reasons
