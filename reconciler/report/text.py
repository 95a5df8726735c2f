"""A Plan for a terminal: Terraform's `+ ~ - -/+` symbols, `old -> new` per field, a summary line.

Colour comes only from rich styles, so a Console created with no colour (or under
NO_COLOR) prints the same words without it. Lines never re-wrap, so the output is the
same on every terminal width; the renderer never changes or re-sorts the Plan. Values that
come from users (addresses, fields and their values, reasons, details) are shortened when
long (see `reconciler.bounded`).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from rich.console import Console
from rich.text import Text

from providers.base import Action
from reconciler.bounded import shorten, shorten_lines
from reconciler.plan.model import Finding, Plan, PlanEntry, action_name, format_time, format_value

ACTION_STYLES: dict[str, str] = {"+": "green", "~": "yellow", "-": "red", "-/+": "magenta"}
# Entries that do nothing get a marker of their own, so they never read as a change.
FINDING_MARKS: dict[Finding, tuple[str, str]] = {
    Finding.OBSERVE_ONLY: ("*", "cyan"),
    Finding.DRIFT: ("!", "bright_red"),
    Finding.ORPHANED: ("o", "dim"),
    Finding.UNKNOWN: ("?", "yellow"),
    Finding.UNMANAGED: ("=", "dim"),
    Finding.NOT_VERIFIABLE: ("^", "magenta"),
}
SECTIONS: dict[Finding, tuple[str, str]] = {
    Finding.CHANGE: ("Changes", "the spec differs from live state; fleet applies them"),
    Finding.OBSERVE_ONLY: ("Observe-only", "differs from the spec; the policy only observes these fields"),
    Finding.DRIFT: ("Drift", "changed outside fleet since fleet last applied it"),
    Finding.ORPHANED: ("Orphaned", "fleet applied these before; their specs were removed"),
    Finding.UNKNOWN: ("Unknown", "could not be observed; nothing is planned for them"),
    Finding.UNMANAGED: ("Unmanaged", "live, but fleet did not make them; fleet never touches them"),
    Finding.NOT_VERIFIABLE: (
        "Not verifiable",
        "configuration tasks check mode cannot evaluate: neither in sync nor drifted",
    ),
}
SUSPENDED_MARK = "||"
# Entries whose detail says something the fields do not (why, what a policy decided).
DETAILED_FINDINGS = frozenset(
    {Finding.CHANGE, Finding.OBSERVE_ONLY, Finding.ORPHANED, Finding.UNMANAGED, Finding.NOT_VERIFIABLE}
)


def render_text(plan: Plan, console: Console) -> None:
    """Print the plan on `console`; colour only if the console has it."""
    for line in plan_lines(plan):
        console.print(line, soft_wrap=True)


def plan_text(plan: Plan) -> str:
    """The plan as plain text, without colour (for files, logs and tests)."""
    buffer = io.StringIO()
    console = Console(file=buffer, no_color=True, color_system=None, width=100, highlight=False)
    render_text(plan, console)
    return buffer.getvalue()


def plan_lines(plan: Plan) -> Iterator[Text]:
    yield Text.assemble(
        ("fleet plan", "bold"),
        f" of revision {shorten(plan.revision)}",
        (f" ({format_time(plan.created_at)}, {plan.fingerprint()[:19]})", "dim"),
    )
    held = plan.held()
    for finding in Finding:
        entries = plan.with_finding(finding)
        if not entries:
            continue
        yield Text()
        name, meaning = SECTIONS[finding]
        if finding is Finding.CHANGE and plan.waves:
            name += f" in {len(plan.waves)} wave{'s' if len(plan.waves) != 1 else ''}"
        yield Text.assemble((name, "bold"), (f" ({meaning}):", "dim"))
        for entry in entries:
            yield from entry_lines(entry, held.get(entry.address) if entry.action is not None else None)
    if plan.suspended:
        yield Text()
        yield Text.assemble(
            ("Suspended", "bold"), (" (observed and reported; fleet applies nothing to them):", "dim")
        )
        for suspended in plan.suspended:
            yield Text.assemble(
                "  ", (f"{SUSPENDED_MARK:>3}", "yellow"), " ", (shorten(suspended.address), "bold")
            )
            yield Text(f"        {suspended.describe()}", style="yellow")
    yield Text()
    yield Text(plan.summary_line(), style="bold")


def entry_lines(entry: PlanEntry, held: str | None = None) -> Iterator[Text]:
    """An entry's lines; `held` says why its change will not be applied (a suspension)."""
    mark, style = _mark(entry)
    head = Text.assemble("  ", (f"{mark:>3}", style), " ", (shorten(entry.address), "bold"))
    if entry.action is not None:
        head.append(f"  {action_name(entry.action)}", style=style)
    if entry.finding is Finding.UNKNOWN:
        head.append(f"  {shorten(entry.reason)}", style=style)
        if entry.detail:
            head.append(f": {shorten(entry.detail)}", style="dim")
    if entry.first_seen is not None:
        head.append(f"  first seen {format_time(entry.first_seen)}", style="dim")
    yield head
    for diff in entry.fields:
        yield Text.assemble(
            "        ",
            f"{shorten(diff.field)}: ",
            (format_value(diff.before), "red" if entry.action is not None else ""),
            " -> ",
            (format_value(diff.after), "green" if entry.action is not None else ""),
        )
    if entry.finding in DETAILED_FINDINGS and entry.detail:
        # A detail may span lines (the diffs of configuration tasks): each keeps the indent.
        for line in shorten_lines(entry.detail).splitlines():
            yield Text(f"        {line}", style="dim")
    if entry.depends_on:
        yield Text(f"        after {', '.join(map(shorten, entry.depends_on))}", style="dim")
    if held is not None:
        yield Text(f"        {held}", style="yellow")


def _mark(entry: PlanEntry) -> tuple[str, str]:
    if entry.action is not None:
        symbol = entry.symbol
        # A power action flips the machine's state; red for off keeps it from looking routine.
        style = "red" if entry.action is Action.POWER_OFF else ACTION_STYLES[symbol]
        return symbol, style
    return FINDING_MARKS[entry.finding]
