"""Benchmark: a pull request's comment for a plan touching 10,000 resources, posted to a local
GitHub API server (the test suite's, which follows GitHub's REST shapes), and the sticky update of
a second push.

Prints, beside their targets: the comment's size (<= 65,536 characters), the seconds from a made
plan to the comment and status posted, and the API calls made (at most the listing pages, one
write and one status; the first creation re-lists once to settle a race). Planning itself is
`bench_plan.py`'s figure. Figures are printed, never asserted.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from forge_servers import github_server  # noqa: E402

from providers.base import Action  # noqa: E402
from reconciler.plan.model import FieldDiff, Finding, Plan, PlanEntry  # noqa: E402
from reconciler.plan.pull import PullRequestPlan  # noqa: E402
from reconciler.report.pr import MARKER, render_full, render_pr_comment  # noqa: E402
from reconciler.vcs import Limits, Secret, WritePacer, github  # noqa: E402

RESOURCES = 10_000
GITHUB_LIMIT = 65_536
TOKEN = "ghp_bench000000000000000000000000000000000"


def _plan(head: str) -> PullRequestPlan:
    entries = [
        PlanEntry(
            f"machine/site{i % 4}-r{i // 40:04d}-{i % 40:02d}",
            "Machine",
            Finding.CHANGE,
            Action.POWER_OFF if i % 3 else Action.BOOT_DEVICE,
            (FieldDiff("power", "on", "off"),) if i % 3 else (FieldDiff("bootDevice", "disk", "pxe"),),
        )
        for i in range(RESOURCES)
    ]
    touched = tuple(sorted(e.address for e in entries))
    return PullRequestPlan(
        "a" * 40,
        head,
        ("machines/site0/r0000.yaml",),
        touched=touched,
        plan=Plan(head, datetime.now(UTC), tuple(entries)),
        sites={a: a.split("/")[1].split("-")[0] for a in touched},
    )


def _link(head: str) -> Callable[[str, int], str]:
    return lambda path, line: f"https://github.com/acme/fleet/blob/{head}/{path}#L{line}"


def main() -> int:
    with github_server("acme", "fleet", token=TOKEN) as server:
        number = server.add_pull("change", "main")
        for body_number in range(120):  # a busy pull request: the sticky comment is on page 2
            server.add_comment(number, f"a review comment {body_number}")
        forge = github(
            "acme/fleet",
            token=Secret(TOKEN),
            base_url=server.url,
            limits=Limits(write_interval=0),
            pacer=WritePacer(),
        )
        for push, head in enumerate(("b" * 40, "c" * 40), 1):
            result = _plan(head)
            server.forget()
            started = time.perf_counter()
            comment = render_pr_comment(result, link=_link(head), artifact="fleet-plan.txt")
            full = render_full(result) if not comment.complete else ""
            rendered = time.perf_counter() - started
            posted = forge.upsert_comment(number, comment.body, MARKER)
            forge.set_status(head, "success", "the plan is ready")
            seconds = time.perf_counter() - started
            calls = server.calls()
            pages = sum(1 for c in calls if c.method == "GET")
            size = len(comment.body)
            form = "summarised" if not comment.complete else "whole"
            print(
                f"push {push}: a plan touching {RESOURCES:,} resources ({form}; the whole plan in a"
                f" {len(full):,}-character artifact)"
            )
            verdict = "within target" if size <= GITHUB_LIMIT else "OVER TARGET"
            print(f"   comment size      {size:>9,} characters   (target <= {GITHUB_LIMIT:,}: {verdict})")
            print(f"   rendered in       {rendered:>9.2f} s; posted with its status in {seconds:.2f} s")
            created = posted.action == "created"
            allowed = pages + 2 + (1 if created else 0)
            verdict = "within target" if len(calls) <= allowed else "OVER TARGET"
            extra = " + 1 re-list on creation" if created else ""
            print(
                f"   API calls         {len(calls):>9}     ({pages} listing pages, comment {posted.action},"
                f" 1 status; target <= pages + 1 write + 1 status{extra}: {verdict})"
            )
        forge.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
