"""Drift as `fleet drift` shows it: each out-of-band change with when it was first seen, the
observe-only and not-verifiable findings, the unknowns, and how much of each configured host
Ansible's check mode could verify (what "no drift" rests on). Long values are shown shortened
(see `reconciler.bounded`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.text import Text

from reconciler.bounded import shorten, shorten_all
from reconciler.plan.model import Finding, Plan, PlanEntry
from reconciler.state import DriftFinding

DRIFT_FINDINGS = (Finding.DRIFT, Finding.OBSERVE_ONLY, Finding.UNKNOWN, Finding.NOT_VERIFIABLE)


def drift_entries(plan: Plan) -> list[PlanEntry]:
    return [e for e in plan.entries if e.finding in DRIFT_FINDINGS]


def config_coverage(plan: Plan) -> dict[str, dict[str, Any]]:
    """Check mode's summary of every configured host, by address."""
    return {o.address: dict(o.fields)["config"] for o in plan.observed if "config" in dict(o.fields)}


def drift_json(plan: Plan, findings: Mapping[tuple[str, str], DriftFinding]) -> str:
    coverage = config_coverage(plan)
    payload: list[dict[str, Any]] = []
    for e in drift_entries(plan):
        item: dict[str, Any] = {"address": e.address, "finding": e.finding.value, "reason": e.reason or None}
        if e.finding is Finding.OBSERVE_ONLY:
            item["fields"] = [{"field": f.field, "live": f.before, "spec": f.after} for f in e.fields]
        if e.finding is Finding.NOT_VERIFIABLE:
            item["fields"] = [{"field": f.field, "why": f.after} for f in e.fields]
            item["coverage"] = coverage.get(e.address, {}).get("coverage")
        if e.finding is Finding.DRIFT:
            item["fields"] = [
                {
                    "field": f.field,
                    "applied": f.before,
                    "live": f.after,
                    "firstSeen": findings[(e.address, f.field)].first_seen.isoformat()
                    if (e.address, f.field) in findings
                    else None,
                }
                for f in e.fields
            ]
        payload.append(item)
    payload.extend(
        {"address": address, "finding": "config-coverage", "reason": None, "config": summary}
        for address, summary in sorted(coverage.items())
    )
    return json.dumps(shorten_all(payload), indent=2)


def render_drift(plan: Plan, findings: Mapping[tuple[str, str], DriftFinding], console: Console) -> None:
    entries = drift_entries(plan)
    for e in entries:
        address = shorten(e.address)
        if e.finding is Finding.DRIFT:
            for f in e.fields:
                seen = findings.get((e.address, f.field))
                since = f" (first seen {seen.first_seen:%Y-%m-%d %H:%M:%S} UTC)" if seen else ""
                console.print(
                    Text(
                        f"drift    {address}  {shorten(f.field)}: applied {_shown(f.before)}, "
                        f"live {_shown(f.after)}{since}",
                        style="red",
                    )
                )
        elif e.finding is Finding.OBSERVE_ONLY:
            for f in e.fields:
                console.print(
                    Text(
                        f"observed {address}  {shorten(f.field)}: live {_shown(f.before)}, "
                        f"spec {_shown(f.after)} (observe-only)"
                    )
                )
        elif e.finding is Finding.NOT_VERIFIABLE:
            for f in e.fields:
                console.print(
                    Text(
                        f"unverif. {address}  {shorten(f.field)}: not verifiable in check mode "
                        f"({shorten(str(f.after))})"
                    )
                )
        else:
            console.print(
                Text(f"unknown  {address}  {shorten(e.reason)}: {shorten(e.detail)}", style="yellow")
            )
    for address, summary in sorted(config_coverage(plan).items()):
        cover = summary.get("coverage", {})
        state = "in sync" if summary.get("inSync") else f"{summary.get('changes', 0)} tasks would change"
        console.print(
            Text(
                f"config   {shorten(address)}  check mode verified {cover.get('verified', 0)} of "
                f"{cover.get('total', 0)} tasks, {summary.get('notVerifiable', 0)} not verifiable; {state}",
                style="dim",
            )
        )
    drifted = len({e.address for e in entries if e.finding is Finding.DRIFT})
    observed_only = len({e.address for e in entries if e.finding is Finding.OBSERVE_ONLY})
    console.print(
        Text(f"Drift: {drifted} drifted, {observed_only} observe-only, {plan.completeness()}.", style="bold")
    )


def _shown(value: Any) -> str:
    return shorten(repr(value))
