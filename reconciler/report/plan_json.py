"""A Plan as JSON, its JSON Schema (2020-12), and the way back from a saved plan to a Plan.

`schemas/plan.schema.json` is `schema_text()`; a test keeps the two equal and checks
rendered plans against it. Loading a saved plan validates it and refuses one whose
fingerprint no longer matches its content.

A plan is shown (`fleet plan --format json`) with long user values shortened (see
`reconciler.bounded`) and saved (`fleet plan --out`) exact. A shown plan that had anything
cut says so (`"shortened": true`) and is refused by `fleet apply` with that reason: its
values are no longer the ones its fingerprint covers. One with nothing cut is the saved form.
"""

# Named plan_json, not json, so that importing it never hides the stdlib's json module.

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jsonschema import Draft202012Validator

from providers.base import Action, ObservationState
from reconciler.bounded import shorten_all
from reconciler.errors import PermanentError
from reconciler.plan.model import (
    SUMMARY_KEYS,
    FieldDiff,
    Finding,
    ObservedState,
    Plan,
    PlanEntry,
    Suspended,
    action_from_name,
    action_name,
    format_time,
)
from reconciler.spec.models import API_VERSION, DNS_LABEL_PATTERN
from reconciler.spec.schema import SCHEMA_DIALECT

SCHEMA_FILE = "plan.schema.json"
_ACTION_NAMES = [action_name(a) for a in Action]
_DATE_TIME = {
    "type": "string",
    "format": "date-time",
    "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$",
}


def plan_schema() -> dict[str, Any]:
    """The JSON Schema of `plan_to_dict`'s output."""
    address = {"type": "string", "pattern": "^[a-z]+/" + DNS_LABEL_PATTERN.removeprefix("^")}
    addresses = {"type": "array", "items": {"$ref": "#/$defs/address"}, "uniqueItems": True}
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"https://fleet.dev/schemas/{API_VERSION}/{SCHEMA_FILE}",
        "title": "fleet Plan",
        "description": "What one reconcile pass found and would do, as `fleet plan --format json` writes it.",
        "type": "object",
        "additionalProperties": False,
        "required": [
            "apiVersion",
            "kind",
            "revision",
            "createdAt",
            "fingerprint",
            "hasChanges",
            "complete",
            "unknown",
            "summary",
            "waves",
            "entries",
            "observed",
        ],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": "Plan"},
            "revision": {"type": "string", "minLength": 1, "description": "The fleet repo revision planned."},
            "createdAt": {**_DATE_TIME, "description": "When the plan was made (UTC)."},
            "fingerprint": {
                "type": "string",
                "pattern": "^sha256:[0-9a-f]{64}$",
                "description": "sha256 of the revision, entries and observed state; a saved plan "
                "is refused when re-planning gives another.",
            },
            "hasChanges": {"type": "boolean", "description": "Whether any entry has an action."},
            "complete": {
                "type": "boolean",
                "description": "Whether every resource was observed: only then does no change mean "
                "nothing differs.",
            },
            "unknown": {
                "type": "object",
                "additionalProperties": False,
                "required": ["count", "reasons"],
                "description": "The resources that could not be observed, and how many for each reason.",
                "properties": {
                    "count": {"type": "integer", "minimum": 0},
                    "reasons": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
                },
            },
            "summary": {
                "type": "object",
                "additionalProperties": False,
                "required": ["line", "counts"],
                "properties": {
                    "line": {"type": "string", "pattern": "^Plan: .+\\.$"},
                    "counts": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": list(SUMMARY_KEYS),
                        "properties": {key: {"type": "integer", "minimum": 0} for key in SUMMARY_KEYS},
                    },
                },
            },
            "waves": {
                "type": "array",
                "description": "Planned addresses in apply order; a wave runs after the waves before it.",
                "items": {**addresses, "minItems": 1},
            },
            "entries": {"type": "array", "items": {"$ref": "#/$defs/entry"}},
            "observed": {"type": "array", "items": {"$ref": "#/$defs/observed"}},
            "suspended": {
                "type": "array",
                "description": "Resources fleet must not act on (`fleet suspend`, or the annotation "
                "fleet.dev/reconcile: disabled): observed and reported, none of their changes applied.",
                "items": {"$ref": "#/$defs/suspended"},
            },
            "skipped": {
                "type": "array",
                "description": "The planned addresses whose changes will not be applied, and why: "
                "suspended, or waiting for a suspended resource.",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["address", "because"],
                    "properties": {"address": {"$ref": "#/$defs/address"}, "because": {"type": "string"}},
                },
            },
            "shortened": {
                "const": True,
                "description": "Present when the plan was shown with long values shortened (`fleet "
                "plan --format json`): it cannot be applied; `fleet plan --out FILE` saves it whole.",
            },
        },
        "$defs": {
            "address": address,
            "fieldDiff": {
                "type": "object",
                "additionalProperties": False,
                "required": ["field", "before", "after"],
                "description": "A change: live (before) and desired (after). Drift: last applied and live.",
                "properties": {"field": {"type": "string", "minLength": 1}, "before": {}, "after": {}},
            },
            "entry": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "address",
                    "kind",
                    "finding",
                    "action",
                    "symbol",
                    "fields",
                    "reason",
                    "detail",
                    "dependsOn",
                    "firstSeen",
                ],
                "properties": {
                    "address": {"$ref": "#/$defs/address"},
                    "kind": {"type": "string", "minLength": 1},
                    "finding": {"enum": [f.value for f in Finding]},
                    "action": {"enum": [*_ACTION_NAMES, None]},
                    "symbol": {"enum": ["", "+", "~", "-", "-/+"]},
                    "fields": {"type": "array", "items": {"$ref": "#/$defs/fieldDiff"}},
                    "reason": {"type": "string"},
                    "detail": {"type": "string"},
                    "dependsOn": addresses,
                    "firstSeen": {"anyOf": [_DATE_TIME, {"type": "null"}]},
                },
                "allOf": [
                    {
                        "if": {
                            "properties": {
                                "finding": {
                                    "enum": [
                                        "observe-only",
                                        "drift",
                                        "unknown",
                                        "unmanaged",
                                        "not-verifiable",
                                    ]
                                }
                            }
                        },
                        "then": {"properties": {"action": {"const": None}, "symbol": {"const": ""}}},
                    },
                    {
                        "if": {"properties": {"finding": {"const": "change"}}},
                        "then": {"properties": {"action": {"enum": _ACTION_NAMES}}},
                    },
                    {
                        "if": {"properties": {"finding": {"const": "drift"}}},
                        "then": {"properties": {"firstSeen": _DATE_TIME}},
                        "else": {"properties": {"firstSeen": {"type": "null"}}},
                    },
                ],
            },
            "suspended": {
                "type": "object",
                "additionalProperties": False,
                "required": ["address", "reason", "operator", "since"],
                "properties": {
                    "address": {"$ref": "#/$defs/address"},
                    "reason": {"type": "string"},
                    "operator": {
                        "type": ["string", "null"],
                        "description": "Who suspended it; null when its spec's annotation does.",
                    },
                    "since": {"anyOf": [_DATE_TIME, {"type": "null"}]},
                },
            },
            "observed": {
                "type": "object",
                "additionalProperties": False,
                "required": ["address", "state", "fields"],
                "properties": {
                    "address": {"$ref": "#/$defs/address"},
                    "state": {"enum": [s.value for s in ObservationState]},
                    "fields": {"type": "object"},
                },
            },
        },
    }


def schema_text() -> str:
    """What `schemas/plan.schema.json` holds."""
    return json.dumps(plan_schema(), indent=2, sort_keys=True) + "\n"


# The parts of a plan that hold values from users (names, field values, reasons, details); the
# rest (counts, times, the fingerprint, the summary line) fleet writes itself.
_USER_VALUES = ("revision", "unknown", "waves", "entries", "observed", "suspended", "skipped")


def plan_to_dict(plan: Plan, *, bounded: bool = False) -> dict[str, Any]:
    """The plan as JSON values; with `bounded`, as shown to people: long user values shortened,
    and `"shortened": true` if any was."""
    data = _plan_to_dict(plan)
    if bounded:
        shown = {key: shorten_all(data[key]) for key in _USER_VALUES}
        if any(shown[key] is not data[key] for key in _USER_VALUES):
            data.update(shown)
            data["shortened"] = True
    return data


def _plan_to_dict(plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Plan",
        "revision": plan.revision,
        "createdAt": format_time(plan.created_at),
        "fingerprint": plan.fingerprint(),
        "hasChanges": plan.has_changes,
        "complete": plan.complete,
        "unknown": {
            "count": len({e.address for e in plan.with_finding(Finding.UNKNOWN)}),
            "reasons": plan.unknown_reasons(),
        },
        "summary": {"line": plan.summary_line(), "counts": plan.summary()},
        "waves": [list(wave) for wave in plan.waves],
        "entries": [_entry_to_dict(e) for e in plan.entries],
        "observed": [
            {"address": o.address, "state": o.state.value, "fields": dict(o.fields)} for o in plan.observed
        ],
        "suspended": [
            {
                "address": s.address,
                "reason": s.reason,
                "operator": s.operator,
                "since": format_time(s.since) if s.since is not None else None,
            }
            for s in plan.suspended
        ],
        "skipped": [{"address": address, "because": why} for address, why in plan.held().items()],
    }


def render_json(plan: Plan, *, bounded: bool = False) -> str:
    """The plan as JSON text: exact (to save it), or `bounded` (to show it; see `plan_to_dict`)."""
    data = plan_to_dict(plan, bounded=bounded)
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def plan_from_dict(data: Any) -> Plan:
    """A saved plan back as a Plan; refused when it was shortened for display, or breaks the
    schema or its fingerprint."""
    if isinstance(data, Mapping) and data.get("shortened") is True:
        raise PermanentError(
            'this plan was shown with long values shortened (it says "shortened": true), so it is '
            "not the plan that was made and cannot be applied",
            hint="save the whole plan with `fleet plan --out FILE` and apply that file",
        )
    errors = sorted(
        Draft202012Validator(plan_schema()).iter_errors(data), key=lambda e: list(e.absolute_path)
    )
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise PermanentError(
            f"not a valid saved plan: at {where}: {first.message}"
            + (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""),
            hint="write it again with `fleet plan --format json`",
        )
    plan = Plan(
        revision=data["revision"],
        created_at=_time(data["createdAt"]),
        entries=tuple(_entry_from_dict(e) for e in data["entries"]),
        observed=tuple(
            ObservedState(o["address"], ObservationState(o["state"]), tuple(sorted(o["fields"].items())))
            for o in data["observed"]
        ),
        waves=tuple(tuple(wave) for wave in data["waves"]),
        suspended=tuple(
            Suspended(
                s["address"],
                s["reason"],
                s["operator"],
                _time(s["since"]) if s["since"] is not None else None,
            )
            for s in data.get("suspended", ())
        ),
    )
    if plan.fingerprint() != data["fingerprint"]:
        raise PermanentError(
            "the saved plan's fingerprint does not match its content: it was edited after it was made",
            hint="make a new plan with `fleet plan`",
        )
    return plan


def _entry_to_dict(entry: PlanEntry) -> dict[str, Any]:
    return {
        "address": entry.address,
        "kind": entry.kind,
        "finding": entry.finding.value,
        "action": action_name(entry.action) if entry.action is not None else None,
        "symbol": entry.symbol,
        "fields": [{"field": f.field, "before": f.before, "after": f.after} for f in entry.fields],
        "reason": entry.reason,
        "detail": entry.detail,
        "dependsOn": list(entry.depends_on),
        "firstSeen": format_time(entry.first_seen) if entry.first_seen is not None else None,
    }


def _entry_from_dict(data: Mapping[str, Any]) -> PlanEntry:
    return PlanEntry(
        address=data["address"],
        kind=data["kind"],
        finding=Finding(data["finding"]),
        action=action_from_name(data["action"]) if data["action"] is not None else None,
        fields=tuple(FieldDiff(f["field"], f["before"], f["after"]) for f in data["fields"]),
        reason=data["reason"],
        detail=data["detail"],
        depends_on=tuple(data["dependsOn"]),
        first_seen=_time(data["firstSeen"]) if data["firstSeen"] is not None else None,
    )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)
