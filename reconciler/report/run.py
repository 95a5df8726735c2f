"""How an apply went, as `fleet apply` and `fleet reconcile` print it: a line per action as it
ends, and the run's result; long messages shortened (see `reconciler.bounded`)."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from reconciler.apply.executor import ApplyReport, Outcome
from reconciler.bounded import shorten

_STYLES = {"succeeded": "green", "failed": "bold red", "skipped": "yellow", "interrupted": "yellow"}


def render_outcome(outcome: Outcome, console: Console) -> None:
    line = Text(f"  {shorten(outcome.address)}  {shorten(outcome.action)}: ")
    line.append(outcome.result, style=_STYLES.get(outcome.result, ""))
    message = shorten(outcome.message)
    line.append(f" ({message}, {outcome.seconds:.1f} s)" if outcome.seconds else f" ({message})")
    console.print(line)


def run_summary(run_id: int, report: ApplyReport) -> Text:
    counts = {k: report.count(k) for k in ("succeeded", "failed", "skipped", "interrupted")}
    line = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "nothing done"
    why = f" ({shorten(report.reason)})" if report.interrupted and report.reason else ""
    return Text(f"Run {run_id}: {line}{why}.", style="bold")
