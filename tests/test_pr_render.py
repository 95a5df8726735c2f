"""A pull request's comment: summary first, details after, always within the forge's limit, and a
plan too big for it summarised by kind, site and field with the whole plan left to a file."""

from __future__ import annotations

from datetime import UTC, datetime

from providers.base import Action
from reconciler.plan.model import FieldDiff, Finding, Plan, PlanEntry
from reconciler.plan.pull import PullRequestPlan
from reconciler.report.pr import MARKER, render_full, render_pr_comment
from reconciler.spec.diagnostics import Diagnostic, Severity

AT = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
BASE, HEAD = "a" * 40, "b" * 40
GITHUB_LIMIT = 65_536


def _link(path: str, line: int) -> str:
    return f"https://github.com/acme/fleet/blob/{HEAD}/{path}#L{line}"


def _power_off(address: str) -> PlanEntry:
    return PlanEntry(address, "Machine", Finding.CHANGE, Action.POWER_OFF, (FieldDiff("power", "on", "off"),))


def _result(entries: list[PlanEntry], **values: object) -> PullRequestPlan:
    plan = Plan(HEAD, AT, tuple(entries))
    touched = tuple(sorted({e.address for e in entries}))
    defaults: dict[str, object] = {
        "touched": touched,
        "plan": plan,
        "observed_at": AT,
        "sites": {a: "nyc1" for a in touched},
    }
    return PullRequestPlan(BASE, HEAD, ("machines/nyc1/r02.yaml",), **{**defaults, **values})  # type: ignore[arg-type]


def test_a_small_plan_is_shown_whole_with_the_summary_first() -> None:
    drifted = PlanEntry(
        "machine/nyc1-r02-06",
        "Machine",
        Finding.DRIFT,
        None,
        (FieldDiff("bootDevice", "disk", "pxe"),),
        first_seen=datetime(2026, 12, 5, tzinfo=UTC),
    )
    result = _result([_power_off("machine/nyc1-r02-05"), drifted])
    comment = render_pr_comment(result, link=_link, base_moved_to="c" * 40)
    body = comment.body
    assert comment.complete and body.startswith(MARKER)
    summary = body.index("| check | result |")
    assert summary < body.index("Changes (1)") < body.index("Drift and unknown") < body.index("Full plan")
    assert "| blast radius | ✅ within the policy |" in body
    assert "| changes | 1 power-off (Machine 1) |" in body
    assert "1 changed resources drifted" in body and "bootDevice: disk -> pxe" in body
    assert f"base `{BASE[:12]}` → head `{HEAD[:12]}`" in body
    assert "The base branch has moved" in body and "c" * 12 in body
    assert result.failures() == []


def test_invalid_specs_fail_with_each_error_linked_to_its_line_at_the_head() -> None:
    errors = (
        Diagnostic(
            Severity.ERROR,
            "bad-power",
            "power must be on or off",
            "machines/nyc1/r02.yaml",
            14,
            3,
            "machine/nyc1-r02-05",
            "write on or off",
        ),
        Diagnostic(Severity.ERROR, "yaml", "a tab | <b>not</b> allowed", "fleet.yaml", 3),
    )
    result = PullRequestPlan(BASE, HEAD, ("fleet.yaml",), errors)
    body = render_pr_comment(result, link=_link).body
    assert result.failures() == ["2 validation errors"]
    assert (
        f"[`machines/nyc1/r02.yaml:14`]({_link('machines/nyc1/r02.yaml', 14)}) `machine/nyc1-r02-05`" in body
    )
    assert "(write on or off)" in body
    assert "a tab \\| &lt;b&gt;not&lt;/b&gt; allowed" in body  # a message cannot break the table or add HTML


def test_unknown_changed_resources_and_a_blast_radius_fail_the_status_but_unknowns_elsewhere_do_not() -> None:
    unknown = PlanEntry(
        "machine/nyc1-r02-05", "Machine", Finding.UNKNOWN, reason="unreachable", detail="BMC timed out"
    )
    elsewhere = PlanEntry("machine/ldn1-r01-01", "Machine", Finding.UNKNOWN, reason="unreachable")
    result = _result(
        [unknown], plan=Plan(HEAD, AT, (unknown, elsewhere)), blast_radius="powers off 9 of 10 in rack"
    )
    assert result.failures() == ["over the blast radius", "1 changed resource not observed"]
    body = render_pr_comment(result, link=_link).body
    assert "❌ 1 of 1 could not be observed" in body and "not observed: unreachable: BMC timed out" in body
    quiet = _result(
        [_power_off("machine/nyc1-r02-05")],
        plan=Plan(HEAD, AT, (_power_off("machine/nyc1-r02-05"), elsewhere)),
    )
    assert quiet.failures() == []
    assert (
        "1 resources not observed (not changed by this pull request)"
        in render_pr_comment(quiet, link=_link).body
    )


def test_a_plan_of_20000_resources_is_summarised_under_the_limit_and_names_its_artifact() -> None:
    entries = [_power_off(f"machine/nyc1-r{i // 40:03d}-{i % 40:02d}") for i in range(20_000)]
    result = _result(entries, sites={e.address: ("nyc1" if i % 2 else "ldn1") for i, e in enumerate(entries)})
    comment = render_pr_comment(result, link=_link, artifact="fleet-plan.txt")
    assert not comment.complete
    assert len(comment.body) <= GITHUB_LIMIT
    assert "The whole plan is in `fleet-plan.txt`" in comment.body
    assert "| Machine | ldn1 | power-off | power | 10000 |" in comment.body
    assert "| Machine | nyc1 | power-off | power | 10000 |" in comment.body
    full = render_full(result)
    assert full.count("power-off") >= 20_000 or full.count("machine/nyc1-r") >= 20_000


def test_whatever_the_input_the_comment_stays_within_its_size() -> None:
    long = "x" * 5_000
    errors = tuple(Diagnostic(Severity.ERROR, "e", long, f"machines/{i}.yaml", i + 1) for i in range(500))
    result = PullRequestPlan(BASE, HEAD, (), errors)
    body = render_pr_comment(result, link=_link, notes=[long], max_chars=10_000).body
    assert len(body) <= 10_000
    assert body.rstrip().endswith("</sub>") and "more: run `fleet validate`" in body
