"""A pull request's plan as its sticky comment: the summary first, then the details.

The summary is a table: the validation verdict, the changes by action and kind, the blast-radius
verdict, and completeness (the changed resources that could not be observed), with drift on the
changed resources. The details follow: each validation error as a link to its file and line at
the head commit; the changes; drift and unknowns on the changed resources; the full plan in a
collapsed block; and a footer with the base and head commits and when live state was observed.

The comment always fits `max_chars` (GitHub refuses comments over 65,536 characters). When the
details do not fit, the changes are summarised by kind, site and field with a few sampled
resources, and `PullRequestComment.complete` is False: the caller writes the whole plan to a file
(`render_full`) and says where it is.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable

from reconciler.bounded import shorten
from reconciler.plan.model import Finding, PlanEntry, action_name, format_time, format_value
from reconciler.plan.pull import PullRequestPlan
from reconciler.report.markdown import render_markdown
from reconciler.report.text import plan_text

MARKER = "<!-- fleet:plan -->"
MAX_CHARS = 60_000  # under GitHub's 65,536, with room for what a forge adds
SAMPLES = 3  # resources named per group of a summarised plan
MAX_ERRORS = 50

Link = Callable[[str, int], str]  # (path, line) -> URL of that line at the head commit


@dataclasses.dataclass(frozen=True)
class PullRequestComment:
    body: str
    complete: bool  # False: the plan was summarised; the whole of it belongs in a file


def render_pr_comment(
    result: PullRequestPlan,
    *,
    link: Link,
    base_moved_to: str | None = None,
    artifact: str | None = None,
    notes: Iterable[str] = (),
    max_chars: int = MAX_CHARS,
) -> PullRequestComment:
    """The comment for `result`. `base_moved_to`: the base branch's head when it moved since the
    pull request's base; `artifact`: where the whole plan is written when the comment cannot hold
    it; `notes`: lines shown under the summary (e.g. what an untrusted pull request's plan left
    out)."""
    waiting = [
        f"`{_tick(shorten(address))}` is {why}" for address, why in sorted(result.deferred.items())[:10]
    ] + ([f"... and {len(result.deferred) - 10} more"] if len(result.deferred) > 10 else [])
    lines = (*result.notes, *waiting, *notes)
    head = _summary(result) + "".join(f"> {_escape(shorten(n, 500))}\n\n" for n in lines)
    foot = _footer(result, base_moved_to)
    room = max_chars - len(MARKER) - 1 - len(head) - len(foot)
    details = _details(result, link, room)
    complete = details is not None
    if details is None:
        details = _summarised(result, link, artifact, room)
    body = f"{MARKER}\n{head}{details}{foot}"
    if len(body) > max_chars:  # pathological sizes: the summary alone, cut to fit
        body = body[: max_chars - 40] + "\n\n... (cut to fit the comment)\n"
        complete = False
    return PullRequestComment(body, complete)


def render_full(result: PullRequestPlan) -> str:
    """The whole plan as text, for the file a summarised comment points to."""
    if result.plan is None:
        return "no plan: " + ("; ".join(d.render() for d in result.errors) or "no resource changes") + "\n"
    return plan_text(result.plan)


def _verdict(ok: bool) -> str:
    return "✅" if ok else "❌"


def _summary(result: PullRequestPlan) -> str:
    failures = result.failures()
    title = "fleet plan: " + ("ready to merge" if not failures else "; ".join(failures))
    rows = [
        (
            "validation",
            _verdict(result.valid) + (" valid" if result.valid else f" {len(result.errors)} errors"),
        )
    ]
    plan = result.plan
    if result.problem is not None:
        rows.append(("plan", f"❌ not made: {_escape(shorten(result.problem, 300))}"))
    elif result.valid:
        scope = (
            "the whole fleet (fleet.yaml changed or a document was removed)" if result.whole_fleet else None
        )
        touched = f"{len(result.touched)} resource{'s' if len(result.touched) != 1 else ''}"
        rows.append(("resources changed", scope or touched))
        rows.append(("changes", _changes(plan.changes() if plan is not None else ())))
        rows.append(
            (
                "blast radius",
                "✅ within the policy"
                if result.blast_radius is None
                else f"❌ {_escape(shorten(result.blast_radius, 300))}",
            )
        )
        unknown = {e.address for e in result.touched_entries(Finding.UNKNOWN)} | set(result.deferred)
        rows.append(
            (
                "completeness",
                f"✅ all {len(result.touched)} observed"
                if not unknown
                else f"❌ {len(unknown)} of {len(result.touched)} could not be observed",
            )
        )
        drifted = {
            e.address for f in (Finding.DRIFT, Finding.OBSERVE_ONLY) for e in result.touched_entries(f)
        }
        if not result.drift_known:
            rows.append(("drift", "⚠️ not known: the state store holds no record of what fleet applied"))
        else:
            rows.append(
                (
                    "drift",
                    "none on the changed resources"
                    if not drifted
                    else f"⚠️ {len(drifted)} changed resources drifted",
                )
            )
        if plan is not None and plan.unknown_reasons() and not unknown:
            others = sum(plan.unknown_reasons().values())
            rows.append(("elsewhere", f"{others} resources not observed (not changed by this pull request)"))
    table = "| check | result |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    return f"### {_verdict(not failures)} {_escape(title)}\n\n{table}\n"


def _changes(changes: Iterable[PlanEntry]) -> str:
    by_action = Counter(action_name(e.action) for e in changes if e.action is not None)
    kinds = Counter(e.kind for e in changes)
    if not by_action:
        return "none"
    actions = ", ".join(f"{n} {a}" for a, n in sorted(by_action.items()))
    return f"{actions} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})"


def _details(result: PullRequestPlan, link: Link, room: int) -> str | None:
    """Errors, changes, drift and the full plan; None when they do not fit in `room`."""
    parts = [_errors(result, link, room)]
    plan = result.plan
    if plan is not None:
        changes = plan.changes()
        if changes:
            parts.append(_block(f"Changes ({len(changes)})", changes))
        touched = [
            *result.touched_entries(Finding.DRIFT),
            *result.touched_entries(Finding.OBSERVE_ONLY),
            *result.touched_entries(Finding.UNKNOWN),
        ]
        if touched:
            parts.append(_block(f"Drift and unknown on the changed resources ({len(touched)})", touched))
        opening = f"<details><summary>Full plan ({len(plan.entries)} entries)</summary>\n\n"
        closing = "\n</details>\n\n"
        full_room = room - sum(len(p) for p in parts) - len(opening) - len(closing)
        if full_room < 2_000:
            return None
        parts.append(opening + render_markdown(plan, max_chars=full_room, title="full plan") + closing)
    text = "".join(parts)
    return text if len(text) <= room else None


def _errors(result: PullRequestPlan, link: Link, room: int) -> str:
    """Each validation error linked to its line, as many as fit in `room` (and MAX_ERRORS)."""
    if not result.errors:
        return ""
    text = f"#### Validation errors ({len(result.errors)})\n\n"
    shown = 0
    for diagnostic in result.errors[:MAX_ERRORS]:
        where = f"{diagnostic.path}:{diagnostic.line}" if diagnostic.line else diagnostic.path
        address = f" `{_tick(diagnostic.address)}`" if diagnostic.address else ""
        hint = f" ({_escape(diagnostic.hint)})" if diagnostic.hint else ""
        target = link(diagnostic.path, diagnostic.line)
        line = f"- [`{_tick(shorten(where))}`]({target}){address}: {_escape(diagnostic.message)}{hint}\n"
        if len(text) + len(line) + 80 > room:
            break
        text += line
        shown += 1
    if shown < len(result.errors):
        text += f"- ... {len(result.errors) - shown} more: run `fleet validate`\n"
    return text + "\n"


def _block(title: str, entries: Iterable[PlanEntry]) -> str:
    lines = []
    for entry in entries:
        head = f"{'~' if entry.action is not None else '!'} {shorten(entry.address)}"
        if entry.action is not None:
            head += f"  {action_name(entry.action)}"
        elif entry.finding is Finding.UNKNOWN:
            head += f"  not observed: {shorten(entry.reason)}" + (
                f": {shorten(entry.detail)}" if entry.detail else ""
            )
        else:
            head += f"  {entry.finding.value}"
        if entry.first_seen is not None:
            head += f", first seen {format_time(entry.first_seen)}"
        lines.append(head)
        lines.extend(
            f"    {shorten(d.field)}: {format_value(d.before)} -> {format_value(d.after)}"
            for d in entry.fields
        )
    text = "\n".join(line.replace("```", "'''") for line in lines)
    return f"<details open><summary>{title}</summary>\n\n```diff\n{text}\n```\n\n</details>\n\n"


def _summarised(result: PullRequestPlan, link: Link, artifact: str | None, room: int) -> str:
    """Changes and findings grouped by kind, site and field, with a few resources each."""
    errors = _errors(result, link, room // 2 if result.plan is not None else room)
    plan = result.plan
    if plan is None:
        return errors
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for entry in plan.entries:
        if entry.action is None and entry.address not in set(result.touched):
            continue
        what = action_name(entry.action) if entry.action is not None else entry.finding.value
        fields = ", ".join(sorted({d.field for d in entry.fields})) or "-"
        site = result.sites.get(entry.address, "-")
        groups.setdefault((entry.kind, site, what, shorten(fields, 80)), []).append(entry.address)
    rows = [
        f"| {kind} | {site} | {what} | {_escape(fields)} | {len(addresses)} | "
        + ", ".join(f"`{_tick(shorten(a))}`" for a in sorted(addresses)[:SAMPLES])
        + (" ..." if len(addresses) > SAMPLES else "")
        + " |\n"
        for (kind, site, what, fields), addresses in sorted(groups.items())
    ]
    where = f" The whole plan is in `{_tick(artifact)}` (the job's artifact)." if artifact else ""
    intro = (
        f"#### The plan, summarised ({len(plan.entries)} entries)\n\n"
        f"Too big for one comment: grouped by kind, site, action and field.{where}\n\n"
        "| kind | site | action | fields | resources | for example |\n|---|---|---|---|---:|---|\n"
    )
    text = errors + intro
    shown = 0
    for row in rows:
        if len(text) + len(row) + 120 > room:
            break
        text += row
        shown += 1
    if shown < len(rows):
        text += f"\n... {len(rows) - shown} more groups: see the whole plan\n"
    return text + "\n"


def _footer(result: PullRequestPlan, base_moved_to: str | None) -> str:
    observed = f" · live state observed {format_time(result.observed_at)}" if result.plan is not None else ""
    fingerprint = f" · plan `{result.plan.fingerprint()}`" if result.plan is not None else ""
    moved = (
        f"\n> ⚠️ The base branch has moved since this pull request's base (now `{base_moved_to[:12]}`):"
        " merge or rebase it to plan against what it holds now.\n"
        if base_moved_to
        else ""
    )
    return f"<sub>base `{result.base[:12]}` → head `{result.head[:12]}`{observed}{fingerprint}</sub>\n{moved}"


def _tick(text: str) -> str:
    return text.replace("`", "'")


def _escape(text: str) -> str:
    """Markdown table cells and HTML: a pipe or an angle bracket from a message stays text."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")
