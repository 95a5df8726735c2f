"""Output stays bounded whatever the input: long user values are shortened wherever fleet shows them.

An 8 MiB Machine name, a long config variable, a long path, a long run reason: each goes through
`fleet validate` (text and JSON), the plan renderers (text, markdown, JSON), `fleet history` and the
other reports, and the output stays a few kilobytes, says what was cut, and never holds the whole
value. Short values are shown unchanged. A plan saved with `--out` keeps every value; a plan shown
with values cut is refused by `fleet apply` for that reason.
"""

from __future__ import annotations

import io
import json
import random
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fleet_testing import EXAMPLE, FLEET, copy_example, run_cli
from jsonschema import Draft202012Validator
from rich.console import Console
from ruamel.yaml import YAML

from providers.base import Action, Observation, ObservationState, UnknownReason
from reconciler.apply.executor import ApplyReport, Outcome
from reconciler.bounded import LIMIT, MESSAGE_LIMIT, redact, shorten, shorten_all, shorten_lines
from reconciler.errors import PermanentError
from reconciler.plan.model import FieldDiff, Finding, ObservedState, Plan, PlanEntry
from reconciler.report import plan_from_dict, plan_text, render_json, render_markdown
from reconciler.report.drift import drift_json, render_drift
from reconciler.report.observations import observations_json, observations_table
from reconciler.report.plan_json import plan_schema
from reconciler.report.run import render_outcome, run_summary
from reconciler.spec.diagnostics import closest, error
from reconciler.state import open_store

MIB = 1024 * 1024
T0 = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
# JSON written with ensure_ascii spells the ellipsis \u2026.
CUT = re.compile(r"(?:…|\\u2026)\[([0-9,]+) characters cut\](?:…|\\u2026)")
BOUND = 32 * 1024  # what any of these outputs may take, whatever the input


def _long(size: int, seed: int) -> str:
    """A value no shortened output can hold by accident: random hex digits, its ends marked."""
    middle = random.Random(seed).randbytes((size - 8 + 1) // 2).hex()[: size - 8]
    return f"head{middle}tail"


def _assert_bounded(output: str, *values: str, bound: int = BOUND) -> None:
    assert len(output) < bound, f"{len(output):,} characters of output"
    assert CUT.search(output), "no marker says what was cut"
    for value in values:
        assert value not in output
        # Not even a long piece of it from the middle (each end is shown, the rest is cut).
        middle = value[len(value) // 2 : len(value) // 2 + 64]
        assert middle not in output


# --- the mechanism ---------------------------------------------------------------------


def test_shorten_keeps_start_and_end_and_says_how_much_was_cut() -> None:
    value = _long(8 * MIB, 1)
    shown = shorten(value)
    assert len(shown) == LIMIT
    marker = CUT.search(shown)
    assert marker is not None
    head, tail = shown[: marker.start()], shown[marker.end() :]
    assert value.startswith(head) and value.endswith(tail) and head and tail
    assert marker.group(1) == f"{len(value) - len(head) - len(tail):,}"


@pytest.mark.parametrize("limit", [40, 100, LIMIT, MESSAGE_LIMIT])
def test_shorten_fits_its_limit_at_every_length(limit: int) -> None:
    for size in [limit + 1, limit + 2, limit + 9, limit + 99, limit + 999, 10 * limit, 123_456]:
        value = _long(size, size)
        shown = shorten(value, limit)
        marker = CUT.search(shown)
        assert len(shown) == limit and marker is not None
        assert len(shown) - len(marker.group()) + int(marker.group(1).replace(",", "")) == size


def test_short_values_come_back_unchanged() -> None:
    for value in ["", "nyc1-r01-01", "x" * LIMIT, "line one\nline two"]:
        assert shorten(value) is value
        assert shorten_lines(value) is value
    plain = {"name": "nyc1-r01-01", "vars": ["a", ("b", 3)], "n": None, 4: 5.0}
    assert shorten_all(plain) is plain


def test_multi_line_values_keep_their_lines_each_shortened_and_their_count_bounded() -> None:
    diff = "\n".join(f"+line {i} " + "x" * (LIMIT if i == 3 else 10) for i in range(1000))
    shown = shorten_lines(diff).split("\n")
    assert len(shown) == 250 and shown[-1] == "…[751 more lines cut]…"
    assert shown[0] == "+line 0 xxxxxxxxxx" and CUT.search(shown[3]) and len(shown[3]) == LIMIT


def test_a_shortened_message_shows_no_piece_of_a_secret() -> None:
    secret = _long(5000, 2)
    message = shorten(f"apiVersion is {secret!r}, expected 'fleet/v1alpha1'", 200)
    redacted = redact(message, [secret])
    assert "***" in redacted and CUT.search(redacted)
    assert not any(secret[i : i + 6] in redacted for i in range(len(secret) - 6))
    assert redact("short message", [secret]) == "short message"


def test_did_you_mean_never_compares_huge_names() -> None:
    huge = "nyc1-r01-01" + "x" * (8 * MIB)
    assert closest(huge, ["nyc1-r01-01", "nyc1-r01-02"]) is None
    assert closest("nyc1-r01-1", [huge, "nyc1-r01-01"]) == "nyc1-r01-01"


def test_a_diagnostic_is_bounded_when_it_is_made() -> None:
    name = _long(8 * MIB, 3)
    path = f"machines/{_long(5000, 16)}.yaml"
    made = error("duplicate-name", f"Machine {name!r} is already defined", path, address=f"machine/{name}")
    assert len(made.message) == MESSAGE_LIMIT and made.address is not None and len(made.address) == LIMIT
    assert made.path == path, "the path stays exact: the engine matches files by it"
    _assert_bounded(made.render() + json.dumps(made.as_json()), name, path)


# --- fleet validate --------------------------------------------------------------------


def _machine(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fleet/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": name, "labels": {"team": "platform-infra"}},
        "spec": {
            "site": "nyc1",
            "rack": "r01",
            "role": "hypervisor",
            "bmc": {"address": "10.128.9.11", "credentialsRef": "bmc-nyc1"},
            **extra,
        },
    }


def _yaml(value: Any, indent: str = "") -> str:
    """Block-style YAML, as people write it (and as fleet's fast YAML path reads it), with every
    scalar in JSON's spelling (a JSON string is a YAML double-quoted scalar)."""
    if isinstance(value, dict):
        return "".join(
            f"{indent}{json.dumps(k)}:" + (f"\n{_yaml(v, indent + '  ')}" if v else f" {json.dumps(v)}\n")
            if isinstance(v, dict | list)
            else f"{indent}{json.dumps(k)}: {json.dumps(v)}\n"
            for k, v in value.items()
        )
    if isinstance(value, list):
        return "".join(f"{indent}- {json.dumps(v)}\n" for v in value)
    return f"{indent}{json.dumps(value)}\n"


def _write(path: Path, *documents: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("---\n" + _yaml(d) for d in documents))


def test_validate_bounds_an_8_mib_machine_name(tmp_path: Path) -> None:
    """The issue's case: a Machine whose name is 8 MiB long, which every diagnostic of the document
    quotes in its address; with a long label value and a long unknown key (YAML keys stop at 1024
    characters) beside it. A few KB of output in text and JSON."""
    repo = copy_example(tmp_path / "repo")
    name, label, key = _long(8 * MIB, 4), _long(64 * 1024, 5), _long(1000, 17)
    huge = _machine(name, **{key: "on"})
    huge["metadata"]["labels"]["owner"] = label
    _write(repo / "machines" / "huge.yaml", huge)
    cache = str(tmp_path / "cache")
    code, text = run_cli("validate", str(repo), "--cache-dir", cache, env={"COLUMNS": "200"})
    assert code == 1, text[:2000]
    _assert_bounded(text, name, label, key)
    assert re.search(
        r"^machines/huge\.yaml:\d+:\d+: error\[unknown-field\]: unknown field 'spec\.head", text, re.M
    )
    assert f"[machine/{name[:20]}" in text, "the address shows the start of the name"
    assert "invalid (3 errors" in text.splitlines()[-1]
    code, shown = run_cli("validate", str(repo), "--cache-dir", cache, "--format", "json")
    assert code == 1
    _assert_bounded(shown, name, label, key)
    diagnostics = json.loads(shown)
    assert len(diagnostics) == 3 and {d["path"] for d in diagnostics} == {"machines/huge.yaml"}
    assert all(len(d["message"]) <= MESSAGE_LIMIT and len(d["address"]) == LIMIT for d in diagnostics)
    assert all(d["field"] is None or len(d["field"]) <= LIMIT for d in diagnostics)


def test_validate_shows_short_values_unchanged(tmp_path: Path) -> None:
    repo = copy_example(tmp_path / "repo")
    vm = {
        "apiVersion": "fleet/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": "nyc1-lost-guest", "labels": {"team": "platform-infra"}},
        "spec": {"host": "nyc1-r01-0x", "vcpus": 2, "memory": "4Gi"},
    }
    _write(repo / "virtual-machines" / "lost.yaml", vm)
    code, text = run_cli("validate", str(repo), "--no-cache")
    assert code == 1 and not CUT.search(text)
    assert re.search(
        r"^virtual-machines/lost\.yaml:\d+:\d+: error\[unresolved-reference\]: host 'nyc1-r01-0x' is not a "
        r"Machine of this repo \[virtualmachine/nyc1-lost-guest\]$",
        text,
        re.M,
    )


def test_validate_bounds_a_long_path(tmp_path: Path) -> None:
    repo = copy_example(tmp_path / "repo")
    deep = repo / "machines" / Path(*[f"{i}-{_long(180, 20 + i)}" for i in range(8)])
    _write(deep / "broken.yaml", _machine("nyc1-deep-01", powr="on"))
    relative = str((deep / "broken.yaml").relative_to(repo))
    assert len(relative) > 1400
    code, text = run_cli("validate", str(repo), "--no-cache")
    assert code == 1
    _assert_bounded(text, relative)
    assert re.search(
        r"^machines/0-head[0-9a-f]+…\[[0-9,]+ characters cut\]…[0-9a-f]+tail/broken\.yaml:\d+:\d+: "
        r"error\[unknown-field\]",
        text,
        re.M,
    )
    code, shown = run_cli("validate", str(repo), "--no-cache", "--format", "json")
    (found,) = [d for d in json.loads(shown) if d["code"] == "unknown-field"]
    assert found["path"] == shorten(relative) and found["line"] > 1


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "{example}", "--format", "{long}"],  # a bad value
        ["plan", "{example}", "--{long}"],  # an unknown option
        ["{long}"],  # an unknown command
        ["get", "{example}", "--kind", "{long}"],
        ["plan", "/no/such/{long}"],  # a path too long for the system to look up
        ["validate", "/no/such/{long}"],
        ["plan", "--repo", "/no/such/{long}"],
    ],
    ids=["bad-value", "unknown-option", "unknown-command", "unknown-kind", "path", "validate-path", "repo"],
)
def test_usage_errors_are_one_bounded_message_whatever_was_typed(args: list[str]) -> None:
    """Arguments of 100,000 characters (the system takes 128 KiB in one): the error quotes them
    shortened, and no traceback is shown."""
    long = _long(100_000, 7)
    done = subprocess.run(
        [str(FLEET), *(a.format(example=EXAMPLE, long=long) for a in args)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not done.stdout
    _assert_bounded(done.stderr, long, bound=4096)


def test_validate_never_shows_a_piece_of_a_long_secret(tmp_path: Path) -> None:
    """A message may quote a value that is a secret; shortened, it must not show its ends either."""
    repo = copy_example(tmp_path / "repo")
    secret = _long(50_000, 6)
    machine = _machine("nyc1-leaky-01", config={"vars": {"db_password": secret}})
    machine["apiVersion"] = secret
    _write(repo / "machines" / "leaky.yaml", machine)
    code, text = run_cli("validate", str(repo), "--no-cache")
    assert code == 1 and "bad-api-version" in text and "secret-literal" in text
    _assert_bounded(text)
    assert not any(secret[i : i + 8] in text for i in range(len(secret) - 8))


# --- plans -----------------------------------------------------------------------------


def _long_plan(value: str, detail: str, reason: str, lines: int = 5000) -> Plan:
    """A plan whose user values are long: a config variable's value, a task name, a detail with
    one long line and one with thousands of lines, an unknown reason, the revision."""
    many_lines = "\n".join(f"  +line {i}" for i in range(lines))
    return Plan(
        "working tree " + value[:5000],
        T0,
        (
            PlanEntry(
                "machine/nyc1-r01-01",
                "Machine",
                Finding.CHANGE,
                Action.CONFIGURE,
                (
                    FieldDiff("config/" + value[:2000], "differs", "as specified"),
                    FieldDiff("motd", "hello", value),
                    FieldDiff("power", "off", "on"),
                ),
                detail=detail + "\n" + many_lines,
            ),
            PlanEntry(
                "machine/nyc1-r01-02",
                "Machine",
                Finding.OBSERVE_ONLY,
                fields=(FieldDiff("vars", {"banner": value}, {"banner": "short"}),),
                reason="policy=observe",
                detail=detail,
            ),
            PlanEntry(
                "machine/nyc1-r01-03",
                "Machine",
                Finding.DRIFT,
                fields=(FieldDiff("motd", value, "edited by hand"),),
                reason="out-of-band",
                first_seen=T0,
            ),
            PlanEntry("machine/nyc1-r02-02", "Machine", Finding.UNKNOWN, reason=reason, detail=detail),
        ),
        (ObservedState("machine/nyc1-r01-01", ObservationState.OBSERVED, (("motd", value),)),),
    )


@pytest.fixture(scope="module")
def long_values() -> tuple[str, str, str]:
    return _long(8 * MIB, 7), _long(8 * MIB, 8), _long(MIB, 9)


def test_plan_text_is_bounded(long_values: tuple[str, str, str]) -> None:
    value, detail, reason = long_values
    text = plan_text(_long_plan(value, detail, reason))
    _assert_bounded(text, value, detail, reason, bound=128 * 1024)
    assert "        power: off -> on\n" in text, "a short value is shown unchanged"
    assert "…[4,752 more lines cut]…" in text


def test_plan_markdown_is_bounded_and_keeps_every_entry(long_values: tuple[str, str, str]) -> None:
    value, detail, reason = long_values
    markdown = render_markdown(_long_plan(value, detail, reason))
    _assert_bounded(markdown, value, detail, reason, bound=128 * 1024)
    assert "entries are not shown" not in markdown, "one long value no longer pushes out the others"
    assert "    power: off -> on\n" in markdown
    for address in ("nyc1-r01-01", "nyc1-r01-02", "nyc1-r01-03", "nyc1-r02-02"):
        assert f"machine/{address}" in markdown


def test_plan_json_on_display_is_bounded_marked_and_valid(long_values: tuple[str, str, str]) -> None:
    value, detail, reason = long_values
    shown = render_json(_long_plan(value, detail, reason), bounded=True)
    _assert_bounded(shown, value, detail, reason, bound=128 * 1024)
    document = json.loads(shown)
    assert document["shortened"] is True
    assert list(Draft202012Validator(plan_schema()).iter_errors(document)) == []
    (configure, *_) = document["entries"]
    assert configure["fields"][2] == {"field": "power", "before": "off", "after": "on"}


def test_a_plan_with_nothing_to_cut_is_shown_as_it_is_saved() -> None:
    plan = _long_plan("short value", "a detail", "timeout", lines=10)
    assert render_json(plan, bounded=True) == render_json(plan)
    assert "shortened" not in json.loads(render_json(plan, bounded=True))
    assert plan_from_dict(json.loads(render_json(plan, bounded=True))) == plan
    assert not CUT.search(plan_text(plan) + render_markdown(plan))


def test_a_saved_plan_keeps_long_values_exactly(long_values: tuple[str, str, str]) -> None:
    value, detail, reason = long_values
    plan = _long_plan(value, detail, reason)
    saved = render_json(plan)
    assert value in saved and detail in saved and "shortened" not in json.loads(saved)
    loaded = plan_from_dict(json.loads(saved))
    assert loaded == plan and loaded.fingerprint() == plan.fingerprint()


def test_a_shown_plan_with_values_cut_is_refused_by_apply(
    tmp_path: Path, long_values: tuple[str, str, str]
) -> None:
    value, detail, reason = long_values
    shown = render_json(_long_plan(value, detail, reason), bounded=True)
    with pytest.raises(PermanentError, match="shortened") as caught:
        plan_from_dict(json.loads(shown))
    assert "edited" not in str(caught.value) and "fleet plan --out" in str(caught.value)
    planfile = tmp_path / "shown.json"
    planfile.write_text(shown)
    code, output = run_cli(
        "apply", str(planfile), "--path", str(EXAMPLE), "--yes", "--state", str(tmp_path / "state.db")
    )
    assert code != 0
    assert "error: this plan was shown with long values shortened" in output
    assert "fleet plan --out FILE" in output and "edited" not in output


# --- fleet history ---------------------------------------------------------------------


def test_history_bounds_long_reasons_and_messages(tmp_path: Path) -> None:
    reason, incident, message = _long(8 * MIB, 10), _long(MIB, 11), _long(2 * MIB, 12)
    revision = "working tree " + _long(3000, 18)
    state = tmp_path / "state.db"
    with open_store(str(state)) as store:
        long_run = store.start_run("reconcile", "alice", reason=reason, incident=incident, revision=revision)
        action = store.start_action(long_run, "machine/nyc1-r01-01", "power-on", {"power": "off"})
        store.finish_action(action, "failed", {"power": "off"}, message=message)
        store.finish_run(long_run, "failed")
        short_run = store.start_run(
            "reconcile", "bob", reason="PSU swap", incident="INC-42", revision="def456"
        )
        action = store.start_action(short_run, "machine/nyc1-r01-02", "power-on", {"power": "off"})
        store.finish_action(action, "succeeded", {"power": "on"}, message="powered on")
        store.finish_run(short_run, "succeeded")
    code, text = run_cli("history", "--state", str(state), "-o", "wide", env={"COLUMNS": "200"})
    assert code == 0, text[:2000]
    _assert_bounded(text, reason, incident, message, revision)
    (short,) = [line for line in text.splitlines() if line.startswith(f"{short_run} ")]
    assert short.split()[-6:] == [
        "PSU",
        "swap",
        "INC-42",
        "machine/nyc1-r01-02",
        "power-on:",
        "succeeded",
    ] or (
        "def456" in short
        and "PSU swap" in short
        and "INC-42" in short
        and "machine/nyc1-r01-02 power-on: succeeded (powered on)" in short
    )
    assert reason[:40] in text
    code, shown = run_cli("history", "--state", str(state), "--format", "json")
    assert code == 0 and shown.startswith("state: ")  # on stderr, which run_cli shows first
    shown = shown.split("\n", 1)[1]
    _assert_bounded(shown, reason, incident, message, revision)
    runs = {r["id"]: r for r in json.loads(shown)}
    assert runs[short_run]["reason"] == "PSU swap" and runs[long_run]["reason"] == shorten(reason)
    assert runs[long_run]["actions"][0]["message"] == shorten(message)
    assert runs[long_run]["revision"] == shorten(revision) and runs[short_run]["revision"] == "def456"


# --- the other reports -----------------------------------------------------------------


def _printed(render: Any, *args: Any) -> str:
    buffer = io.StringIO()
    render(*args, Console(file=buffer, width=200, no_color=True, highlight=False, soft_wrap=True))
    return buffer.getvalue()


def test_drift_observations_and_apply_outcomes_are_bounded(long_values: tuple[str, str, str]) -> None:
    value, detail, reason = long_values
    plan = _long_plan(value, detail, reason)
    _assert_bounded(_printed(render_drift, plan, {}), value, detail, reason)
    _assert_bounded(drift_json(plan, {}), value, detail, reason)
    observations = [
        Observation.unknown("machine/nyc1-r02-02", UnknownReason.PROTOCOL_ERROR, detail, at=T0),
        Observation.observed("machine/nyc1-r01-01", {"power": value}, warnings=[reason], at=T0),
    ]
    _assert_bounded(_printed(observations_table, observations), value, detail, reason)
    _assert_bounded(observations_json(observations), value, detail, reason)
    outcome = Outcome("machine/nyc1-r01-01", "configure", "failed", detail, seconds=1.5)
    _assert_bounded(_printed(render_outcome, outcome), detail)
    summary = run_summary(7, ApplyReport(7, (outcome,), interrupted=True, reason=reason))
    assert len(summary.plain) < 1000 and reason not in summary.plain


def test_get_bounds_long_config_vars_and_annotations_and_inventory_keeps_them(tmp_path: Path) -> None:
    repo = copy_example(tmp_path / "repo")
    banner, note = _long(8 * MIB, 13), _long(MIB, 14)
    machine = _machine(
        "nyc1-r01-99", config={"playbooks": ["playbooks/site.yml"], "vars": {"motd_banner": banner}}
    )
    machine["metadata"]["annotations"] = {"fleet.acme.io/note": note}
    machine["spec"]["address"] = "10.20.1.99"
    _write(repo / "machines" / "long-values.yaml", machine)
    cache = str(tmp_path / "cache")
    code, shown = run_cli("get", str(repo), "--cache-dir", cache, "-k", "Machine", "-o", "json")
    assert code == 0, shown[:2000]
    _assert_bounded(shown, banner, note, bound=256 * 1024)
    (listed,) = [d for d in json.loads(shown) if d["metadata"]["name"] == "nyc1-r01-99"]
    assert listed["spec"]["config"]["vars"]["motd_banner"] == shorten(banner)
    assert listed["metadata"]["annotations"]["fleet.acme.io/note"] == shorten(note)
    assert listed["metadata"]["labels"] == {"team": "platform-infra"}, "short values unchanged"
    code, shown = run_cli("get", str(repo), "--cache-dir", cache, "-k", "Machine", "-o", "yaml")
    assert code == 0 and len(shown) < 256 * 1024
    (loaded,) = [d for d in YAML(typ="safe").load(shown) if d["metadata"]["name"] == "nyc1-r01-99"]
    assert loaded == listed  # the same fields as the JSON
    assert loaded["spec"]["config"]["vars"]["motd_banner"] == shorten(banner)
    assert loaded["metadata"]["annotations"]["fleet.acme.io/note"] == shorten(note)
    code, table = run_cli("get", str(repo), "--cache-dir", cache, "--show-labels", env={"COLUMNS": "250"})
    assert code == 0 and len(table) < BOUND * 4 and banner not in table
    # The Ansible inventory is what configures the host: it keeps the whole value.
    code, inventory = run_cli("inventory", str(repo), "--cache-dir", cache, "-o", "json")
    assert code == 0 and banner in inventory


def test_an_error_line_is_bounded(tmp_path: Path) -> None:
    kind = _long(MIB, 15)
    code, output = run_cli("get", str(EXAMPLE), "--cache-dir", str(tmp_path), "-k", kind)
    assert code == 2
    assert output.startswith("error: ")
    _assert_bounded(output, kind)
