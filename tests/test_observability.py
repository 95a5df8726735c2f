"""The dashboard and the alerts of `fleet serve` (deploy/grafana, deploy/prometheus) against the
metrics the controller really exports: the committed dashboard JSON is what its generator makes,
every metric a panel or a rule queries exists in a real `Metrics()` registry, the rules pass
promtool's check and its unit tests (each alert fires and stays quiet), and the gauges the alerts
need carry the controller's values."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fleet_testing import ROOT
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML
from state_testing import create_pg_database, drop_pg_database

from providers.access import Access
from providers.registry import ProviderPool
from reconciler.controller.controller import Controller
from reconciler.controller.follow import Followed
from reconciler.controller.metrics import Metrics
from reconciler.engine import Engine
from reconciler.settings import Settings
from reconciler.state import ObservationRecord, ResourceState, RevisionState, open_store

GRAFANA = ROOT / "deploy" / "grafana"
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "fleet-alerts.yaml"
RULE_TESTS = PROMETHEUS / "fleet-alerts.test.yaml"

# --- which metric names a PromQL expression reads ------------------------------------------------

# Sample names prometheus-client writes for a family of each type (a counter `x` is `x_total`).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}
TOKEN = re.compile(
    r"""(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
      | (?P<variable>\$(?:\{[^}]*\}|\w+))
      | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z0-9_]*)
      | (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
      | (?P<open>[({\[])
      | (?P<close>[)}\]])
      | (?P<space>\s+)
      | (?P<other>.)""",
    re.VERBOSE,
)
# Words that take a parenthesised list of label names.
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = GROUPING | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside label matchers ({...}), ranges
    ([...]) and grouping lists (`by (...)`), that are neither a function (followed by `(`) nor a
    keyword. Strings, numbers, durations and Grafana's $variables are skipped."""
    tokens = [(m.lastgroup, m.group()) for m in TOKEN.finditer(expr) if m.lastgroup != "space"]
    names: set[str] = set()
    stack: list[str] = []  # what each open bracket holds: "series", "labels", "range"
    labels_next = False
    for index, (kind, text) in enumerate(tokens):
        if kind == "open":
            if text == "(":
                stack.append("labels" if labels_next else "series")
            else:
                stack.append("labels" if text == "{" else "range")
            labels_next = False
        elif kind == "close":
            assert stack, f"unbalanced {text!r} in {expr!r}"
            stack.pop()
        elif kind == "name":
            following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
            if text.lower() in GROUPING and following == "(":
                labels_next = True
            elif stack and stack[-1] != "series":
                continue  # a label name, or a duration's unit
            elif following == "(" or following.lower() in ("by", "without") or text.lower() in KEYWORDS:
                continue  # a function, an aggregation (`sum by (...) (...)`) or a keyword
            else:
                names.add(text)
    assert not stack, f"unbalanced brackets in {expr!r}"
    return names


def exported_names() -> set[str]:
    """Every sample name a controller's registry can expose, children or not yet."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        pytest.param(
            'sum by (kind, le) (rate(a_bucket{job=~"$job", le!="+Inf"}[$__rate_interval]))',
            {"a_bucket"},
            id="grouping labels, matchers, variables and functions are not metrics",
        ),
        pytest.param(
            "max(b) by (job) < max by (job) (quantile_over_time(0.5, c[1h] offset 5m))",
            {"b", "c"},
            id="trailing grouping, numbers, durations and offset",
        ),
        pytest.param(
            'd == 0 and on (job, instance) e{which="attempted"} unless ignoring(x) group_left(y) f',
            {"d", "e", "f"},
            id="set operators and vector matching",
        ),
        pytest.param(
            'label_replace(g, "dst", "$1", "src", "(.*)") / sum(h) without (instance) > 4 * 3600',
            {"g", "h"},
            id="strings that look like labels and regexes",
        ),
        pytest.param("time() - min(i:rule:ratio) > bool 0", {"i:rule:ratio"}, id="a recording-rule name"),
    ],
)
def test_metric_names_are_parsed_out_of_promql(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def test_exported_names_follow_prometheus_client_s_suffixes() -> None:
    names = exported_names()
    assert {"fleet_actions_total", "fleet_reconcile_duration_seconds_bucket", "fleet_resources"} <= names
    assert "fleet_actions" not in names and "fleet_resources_total" not in names


# --- the dashboard -----------------------------------------------------------------------------


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fleet_dashboard", GRAFANA / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    import json

    rendered: str = _generator().render()
    committed = (GRAFANA / "fleet-controller.json").read_text()
    assert rendered == committed, "deploy/grafana/fleet-controller.json is stale: run `make dashboards`"
    loaded: dict[str, Any] = json.loads(committed)
    return loaded


def test_the_committed_dashboard_is_what_its_generator_makes(dashboard: dict[str, Any]) -> None:
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert dashboard["uid"] == "fleet-controller" and len(panels) >= 15
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids), "Grafana needs unique panel ids"


def test_every_metric_the_dashboard_queries_is_exported(dashboard: dict[str, Any]) -> None:
    exported = exported_names()
    queried: dict[str, set[str]] = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queried[f"{panel['title']}: {target['expr']}"] = metric_names(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # Grafana's label_values(METRIC, LABEL): only its first argument is PromQL.
            found = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["query"])
            assert found, variable["query"]
            queried[f"${variable['name']}"] = metric_names(found.group(1))
    assert all(queried.values()), [q for q, names in queried.items() if not names]
    unknown = {q: sorted(names - exported) for q, names in queried.items() if names - exported}
    assert not unknown
    # What the dashboard is for: each of these is on it.
    used = set().union(*queried.values())
    for metric in (
        "fleet_reconcile_duration_seconds_count",
        "fleet_reconcile_duration_seconds_bucket",
        "fleet_actions_total",
        "fleet_resources",
        "fleet_drift_oldest_timestamp_seconds",
        "fleet_unknown_resources",
        "fleet_queue_depth",
        "fleet_webhook_deliveries_total",
        "fleet_git_fetch_errors_total",
        "fleet_git_fetch_last_success_timestamp_seconds",
        "fleet_replicas",
        "fleet_lease_losses_total",
    ):
        assert metric in used, metric


# --- the alerts --------------------------------------------------------------------------------


def _yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `make bootstrap` installs Debian's prometheus package"
    return found


def test_the_alert_rules_pass_promtool_s_check() -> None:
    done = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_each_alert_fires_and_stays_quiet_in_promtool_s_unit_tests() -> None:
    alerts = {rule["alert"] for group in _yaml(RULES)["groups"] for rule in group["rules"] if "alert" in rule}
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in _yaml(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts == fires == quiet, (alerts, fires, quiet)
    done = subprocess.run(
        [_promtool(), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROMETHEUS,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_metric_the_alerts_query_is_exported() -> None:
    exported = exported_names()
    rules = [rule for group in _yaml(RULES)["groups"] for rule in group["rules"]]
    assert len(rules) >= 6
    unknown = {
        rule["alert"]: sorted(metric_names(rule["expr"]) - exported)
        for rule in rules
        if metric_names(rule["expr"]) - exported
    }
    assert not unknown
    assert all(metric_names(rule["expr"]) for rule in rules)


# --- the values behind them --------------------------------------------------------------------


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    url = create_pg_database()
    yield url
    drop_pg_database(url)


def test_the_controller_exports_what_the_alerts_need(tmp_path: Path, state_url: str) -> None:
    """Driven through the controller's own calls over a real store, no lab: a poll of an invalid
    working tree (nothing is reconciled), then states as a pass would save them."""
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    repo = tmp_path / "repo"
    repo.mkdir()
    invalid = "apiVersion: fleet/v1alpha1\nkind: Fleet\nmetadata: {name: 'Not Valid'}\n"
    (repo / "fleet.yaml").write_text(invalid)
    settings = Settings(cache_dir=tmp_path / "cache", state_dir=tmp_path / "state")
    with open_store(state_url) as store:
        engine = Engine(settings, ProviderPool(Access(), settings.state_dir), store, None)
        controller = Controller(engine, Followed(path=repo), clock=lambda: now)

        controller.poll()
        controller.refresh_metrics()
        samples = _samples(controller.metrics)
        assert _value(samples, "fleet_revision_attempted_valid") == 0
        assert _value(samples, "fleet_git_fetch_last_success_timestamp_seconds") == now.timestamp()
        assert _value(samples, "fleet_replicas") == 1
        assert not [key for key in samples if key[0] == "fleet_drift_oldest_timestamp_seconds"]

        first, later = now - timedelta(hours=5), now - timedelta(minutes=5)
        store.save_resource_states(
            [
                ResourceState("machine/a", "Machine", "drifted", "power moved", since=first),
                ResourceState("machine/b", "Machine", "drifted", "power moved", since=later),
                ResourceState("machine/c", "Machine", "unknown", "BMC did not answer", since=later),
                ResourceState("machine/d", "Machine", "unknown"),
                ResourceState("virtualmachine/v", "VirtualMachine", "in sync", since=later),
            ]
        )
        store.save_observations(
            [
                ObservationRecord("machine/c", "unknown", {}, "timeout", later),
                ObservationRecord("machine/a", "observed", {"power": "off"}, None, later),
            ]
        )
        store.set_revision("attempted", RevisionState("r2", None, now, True))
        controller.refresh_metrics()
        samples = _samples(controller.metrics)
        assert _value(samples, "fleet_revision_attempted_valid") == 1
        assert _value(samples, "fleet_drift_oldest_timestamp_seconds", kind="Machine") == first.timestamp()
        assert ("fleet_drift_oldest_timestamp_seconds", (("kind", "VirtualMachine"),)) not in samples
        unknown = {
            dict(labels)["reason"]: value
            for (name, labels), value in samples.items()
            if name == "fleet_unknown_resources" and dict(labels)["kind"] == "Machine" and value
        }
        assert unknown == {"timeout": 1, "not-observed": 1}
        assert _value(samples, "fleet_unknown_resources", kind="Machine", reason="auth-failure") == 0
        assert _value(samples, "fleet_resources", kind="Machine", state="unknown") == sum(unknown.values())
        # Bounded labels: no series names a resource.
        assert not [key for key in samples if any("/" in value for _, value in key[1])]

        store.save_resource_states(
            [
                ResourceState("machine/a", "Machine", "in sync", since=now),
                ResourceState("machine/b", "Machine", "in sync", since=now),
            ]
        )
        controller.refresh_metrics()
        samples = _samples(controller.metrics)
        assert not [key for key in samples if key[0] == "fleet_drift_oldest_timestamp_seconds"]
