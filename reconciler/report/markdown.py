"""A Plan as a pull-request comment: the summary first, each kind of finding in a `<details>` block.

The comment never exceeds the size it is given (GitHub refuses comments over 65,536
characters): when the details do not fit, the last entries are left out and a note
says how many. The summary, the counts and the fingerprint are always shown. Values that
come from users are shortened when long (see `reconciler.bounded`), so one long value
does not push every other entry out.
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.bounded import shorten, shorten_lines
from reconciler.plan.model import (
    SUMMARY_KEYS,
    Finding,
    Plan,
    PlanEntry,
    action_name,
    format_time,
    format_value,
)
from reconciler.report.text import DETAILED_FINDINGS, FINDING_MARKS

# Below GitHub's 65,536 and GitLab's 1,000,000, with room for what a tool adds around it.
DEFAULT_MAX_CHARS = 60_000

SECTION_TITLES: dict[Finding, str] = {
    Finding.CHANGE: "Changes",
    Finding.OBSERVE_ONLY: "Observe-only: differs from the spec, policy only observes",
    Finding.DRIFT: "Drift: changed outside fleet",
    Finding.ORPHANED: "Orphaned: specs removed",
    Finding.UNKNOWN: "Unknown: not observed, nothing planned",
    Finding.UNMANAGED: "Unmanaged: not made by fleet, never touched",
    Finding.NOT_VERIFIABLE: "Not verifiable: configuration check mode cannot evaluate",
}
_COUNT_LABELS: dict[str, str] = {
    "create": "create",
    "update": "update",
    "replace": "replace",
    "delete": "delete",
    "power-on": "power on",
    "power-off": "power off",
    "power-cycle": "power cycle",
    "boot-device": "set boot device",
    "configure": "configure",
    "observe-only": "observe-only",
    "drift": "drifted",
    "orphaned": "orphaned",
    "unknown": "unknown",
    "unmanaged": "unmanaged",
    "not-verifiable": "not verifiable",
}
_OPEN_CODE = "```diff\n"
_CLOSE = "```\n\n</details>\n\n"


def render_markdown(plan: Plan, *, max_chars: int = DEFAULT_MAX_CHARS, title: str = "fleet plan") -> str:
    """The comment body, at most `max_chars` characters long."""
    head = _head(plan, title)
    foot = f"<sub>{_code(plan.fingerprint())} · created {format_time(plan.created_at)}</sub>\n"
    total = len(plan.entries)
    note_room = len(_note(total, total, max_chars))
    room = max_chars - len(head) - len(foot) - note_room
    if room < 0:
        raise ValueError(f"{max_chars} characters cannot hold even the plan's summary")
    body: list[str] = []
    omitted = 0
    for finding in Finding:
        entries = plan.with_finding(finding)
        if not entries:
            continue
        opening = f"<details><summary>{_section_title(plan, finding, len(entries))}</summary>\n\n{_OPEN_CODE}"
        items = ["".join(_entry_lines(e)) for e in entries]
        kept = _fit(items, room, opening) if not omitted else []
        omitted += len(items) - len(kept)
        if not kept:
            continue
        more = [_more(len(items) - len(kept))] if len(kept) < len(items) else []
        section = opening + "".join(kept + more) + _CLOSE
        room -= len(section)
        body.append(section)
    note = _note(omitted, total, max_chars) if omitted else ""
    text = head + "".join(body) + note + foot
    assert len(text) <= max_chars, "the size budget above is wrong"
    return text


def _head(plan: Plan, title: str) -> str:
    counts = plan.summary()
    lines = [
        f"### {title} for {_code(shorten(plan.revision))}\n\n",
        f"**{plan.summary_line()}**\n\n",
    ]
    shown = [key for key in SUMMARY_KEYS if counts[key]]
    if shown:
        lines.append("| | count |\n|---|---:|\n")
        lines.extend(f"| {_COUNT_LABELS[key]} | {counts[key]} |\n" for key in shown)
        lines.append("\n")
    return "".join(lines)


def _section_title(plan: Plan, finding: Finding, count: int) -> str:
    title = f"{SECTION_TITLES[finding]} ({count})"
    if finding is Finding.CHANGE and plan.waves:
        title += f", in {len(plan.waves)} wave{'s' if len(plan.waves) != 1 else ''}"
    return title


def _entry_lines(entry: PlanEntry) -> Iterator[str]:
    # Inside a ```diff block GitHub colours lines that start with + or -, as the symbols mean.
    mark = entry.symbol if entry.action is not None else FINDING_MARKS[entry.finding][0]
    head = f"{mark} {shorten(entry.address)}"
    if entry.action is not None:
        head += f"  {action_name(entry.action)}"
    if entry.finding is Finding.UNKNOWN:
        head += f"  {shorten(entry.reason)}" + (f": {shorten(entry.detail)}" if entry.detail else "")
    if entry.first_seen is not None:
        head += f"  first seen {format_time(entry.first_seen)}"
    yield _safe(head) + "\n"
    for diff in entry.fields:
        shown = f"    {shorten(diff.field)}: {format_value(diff.before)} -> {format_value(diff.after)}"
        yield _safe(shown) + "\n"
    if entry.finding in DETAILED_FINDINGS and entry.detail:
        for line in shorten_lines(entry.detail).splitlines():
            yield _safe(f"    {line}") + "\n"
    if entry.depends_on:
        yield _safe(f"    after {', '.join(map(shorten, entry.depends_on))}") + "\n"


def _fit(items: list[str], room: int, opening: str) -> list[str]:
    """As many items as fit in `room` with the block around them (and a 'more' line if cut)."""
    frame = len(opening) + len(_CLOSE)
    if frame + sum(len(i) for i in items) <= room:
        return items
    used = frame + len(_more(len(items)))
    kept: list[str] = []
    for item in items:
        if used + len(item) > room:
            break
        kept.append(item)
        used += len(item)
    return kept


def _more(count: int) -> str:
    return f"... {count} more not shown\n"


def _note(omitted: int, total: int, max_chars: int) -> str:
    return (
        f"> {omitted} of {total} entries are not shown: this comment is limited to {max_chars} "
        "characters. Run `fleet plan` for the whole plan.\n\n"
    )


def _safe(line: str) -> str:
    # A backtick fence in a provider's message would end the code block early.
    return line.replace("```", "'''")


def _code(text: str) -> str:
    return f"`{text.replace('`', '')}`"
