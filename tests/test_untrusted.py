"""A plan of an untrusted pull request runs no code from that pull request.

A real fleet repo with real Git commits: the base revision configures two hosts (this machine,
local connection) with a small playbook; each pull request (a commit on its own branch) plants
code where Ansible would run it even in check mode: a task that leaves check mode, lookups in
host variables (nested ones too), a filter plugin beside the playbook, a role name. Planned as
untrusted, no marker appears and the hosts are still observed, with the base revision's
playbooks; planned as trusted (the control), the same head plants its markers, so the tests can
fail. Which pull requests are trusted is read from the base revision's fleet.yaml.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_testing import ansible_inventory_list, commit_all, git, git_init, lab_access

from providers.ansible.unsafe import Unsafe, dump_yaml
from providers.base import ObservationState
from providers.registry import CONFIG, FACTORIES, ProviderPool
from reconciler.engine import (
    DEFERRED_NOTE,
    CancelToken,
    Engine,
    PlannedRun,
    RunOptions,
    Selection,
    SourceRef,
    UntrustedReport,
    UntrustedSource,
    open_engine,
)
from reconciler.errors import UsageError
from reconciler.kinds.config import BaseComparison, compare_with_base
from reconciler.plan.model import Finding
from reconciler.settings import Settings
from reconciler.spec import models
from reconciler.spec.trust import is_trusted
from reconciler.state import open_store

pytestmark = pytest.mark.slow  # runs ansible-playbook ten times

SITE = """\
- name: Baseline
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the message of the day
      ansible.builtin.copy:
        dest: "{{ host_root }}/{{ inventory_hostname }}-motd"
        content: "{{ motd }}\\n"
        mode: "0644"

    - name: Write the banner
      ansible.builtin.copy:
        dest: "{{ host_root }}/{{ inventory_hostname }}-banner"
        content: |
          {{ banner }}
          {% for line in banner_lines %}{{ line }}
          {% endfor %}{% for key, value in banner_table.items() %}{{ key }}={{ value }}
          {% endfor %}
        mode: "0644"
"""
BASELINE_ROLE = """\
- name: Say the baseline ran
  ansible.builtin.debug:
    msg: baseline
"""
PLANT_TASK = """
    - name: Plant a marker
      ansible.builtin.copy:
        content: planted
        dest: "{{ marker_dir }}/task"
        mode: "0644"
      check_mode: false
"""
FILTER_PLUGIN = """\
from pathlib import Path

Path({marker!r}).write_text("imported")


class FilterModule:
    def filters(self):
        return {{"shout": lambda text: str(text).upper()}}
"""


def _pipe(marker: Path) -> str:
    return "{{ lookup('pipe', 'touch " + str(marker) + "') }}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The repo (a base commit and a branch per pull request), the hosts' files, the markers."""
    top = tmp_path_factory.mktemp("untrusted")
    repo, markers, host_root = top / "repo", top / "markers", top / "hosts"
    for directory in (repo / "playbooks", repo / "machines", markers, host_root):
        directory.mkdir(parents=True)
    _write(repo / "fleet.yaml", _fleet())
    _write(repo / "machines" / "web-1.yaml", _machine("web-1", _vars(host_root, markers)))
    (repo / "playbooks" / "site.yml").write_text(SITE)
    (repo / "roles" / "baseline" / "tasks").mkdir(parents=True)
    (repo / "roles" / "baseline" / "tasks" / "main.yml").write_text(BASELINE_ROLE)
    base = git_init(repo)

    def pull_request(branch: str, change: Callable[[Path], None]) -> str:
        git(repo, "checkout", "-q", "-B", branch, base)
        change(repo)
        return commit_all(repo, branch)

    def plant_task(root: Path) -> None:
        (root / "playbooks" / "site.yml").write_text(SITE + PLANT_TASK)

    def plant_lookups(root: Path) -> None:
        variables = _vars(host_root, markers)
        variables["banner"] = _pipe(markers / "lookup")
        variables["banner_lines"] = ["plain", _pipe(markers / "list")]
        variables["banner_table"] = {_pipe(markers / "key"): _pipe(markers / "value")}
        _write(root / "machines" / "web-1.yaml", _machine("web-1", variables))

    def plant_filter(root: Path) -> None:
        (root / "playbooks" / "filter_plugins").mkdir()
        (root / "playbooks" / "filter_plugins" / "shout.py").write_text(
            FILTER_PLUGIN.format(marker=str(markers / "filter"))
        )
        (root / "playbooks" / "site.yml").write_text(SITE.replace("{{ banner }}", "{{ banner | shout }}"))

    def plant_role_name(root: Path) -> None:
        # Rendered, the name would be the base revision's role `baseline`.
        config = {"playbooks": ["playbooks/site.yml"], "roles": ["{{ 'base' ~ 'line' }}"]}
        _write(root / "machines" / "web-1.yaml", _machine("web-1", _vars(host_root, markers), config))

    def widen(root: Path) -> None:
        # A playbook of its own, and a host the base revision does not configure.
        (root / "playbooks" / "new.yml").write_text(SITE)
        config = {"playbooks": ["playbooks/new.yml"]}
        _write(root / "machines" / "web-1.yaml", _machine("web-1", _vars(host_root, markers), config))
        _write(root / "machines" / "web-2.yaml", _machine("web-2", _vars(host_root, markers)))

    def trust_itself(root: Path) -> None:
        _write(root / "fleet.yaml", _fleet(pullRequests={"trust": {"authors": ["mallory"]}}))

    heads = {
        "task": pull_request("plant-task", plant_task),
        "lookup": pull_request("plant-lookups", plant_lookups),
        "filter": pull_request("plant-filter", plant_filter),
        "role": pull_request("plant-role-name", plant_role_name),
        "widen": pull_request("widen", widen),
        "trust": pull_request("trust-itself", trust_itself),
    }
    git(repo, "checkout", "-q", "main")
    python = "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else sys.executable  # starts faster
    local = {
        "ansible_connection": "local",
        "ansible_python_interpreter": python,
        "ansible_remote_tmp": str(top / "remote-tmp"),
    }
    return {
        "top": top,
        "repo": repo,
        "markers": markers,
        "base": base,
        "heads": heads,
        "access": lab_access(ansible_hosts=dict.fromkeys(("web-1", "web-2"), local)),
    }


def _fleet(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fleet/v1alpha1",
        "kind": "Fleet",
        "metadata": {"name": "lab"},
        "spec": {
            "sites": [{"name": "lab1", "racks": [{"name": "r01"}]}],
            "credentials": {"bmc": {"env": "FLEET_TEST_BMC"}},
            "exclude": ["playbooks/**", "roles/**"],
            **spec,
        },
    }


def _vars(host_root: Path, markers: Path) -> dict[str, Any]:
    return {
        "host_root": str(host_root),
        "marker_dir": str(markers),
        "motd": "hello {{ inventory_hostname }}",  # a trusted template: rendered for untrusted plans too
        "banner": "welcome",
        "banner_lines": [],
        "banner_table": {},
    }


def _machine(name: str, variables: dict[str, Any], config: dict[str, Any] | None = None) -> dict[str, Any]:
    index = int(name.rsplit("-", 1)[1])
    return {
        "apiVersion": "fleet/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": name},
        "spec": {
            "site": "lab1",
            "rack": "r01",
            "address": f"192.0.2.{index}",
            "bmc": {"address": f"198.51.100.{index}", "credentialsRef": "bmc"},
            "config": {**(config or {"playbooks": ["playbooks/site.yml"]}), "vars": variables},
        },
    }


def _write(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")  # JSON is YAML


@pytest.fixture()
def engine(world: dict[str, Any], tmp_path: Path) -> Iterator[Engine]:
    """An engine whose only provider is Ansible's: Machines' power is not what this is about."""
    settings = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", config=True, workers=1)
    with (
        ProviderPool(world["access"], settings.state_dir, factories={CONFIG: FACTORIES[CONFIG]}) as pool,
        open_store(settings.state_url()) as store,
        open_engine(settings, pool, store) as engine,
    ):
        yield engine


def _plan(engine: Engine, world: dict[str, Any], head: str, *, trusted: bool) -> PlannedRun:
    for marker in world["markers"].iterdir():
        marker.unlink()
    ref = SourceRef(repo=str(world["repo"]), rev=world["heads"].get(head, head))
    untrusted = None if trusted else UntrustedSource(SourceRef(repo=str(world["repo"]), rev=world["base"]))
    return engine.plan(ref, Selection(kind="Machine"), untrusted=untrusted)


def _markers(world: dict[str, Any]) -> list[str]:
    return sorted(p.name for p in world["markers"].iterdir())


def _config(planned: PlannedRun, address: str) -> dict[str, Any]:
    (observation,) = [o for o in planned.observations.config if o.address == address]
    assert observation.state is ObservationState.OBSERVED, observation.detail
    config: dict[str, Any] = observation.fields["config"]
    return config


def _diffs(planned: PlannedRun, address: str) -> str:
    return "\n".join(c["diff"] for c in _config(planned, address)["changes"])


# --- what an untrusted pull request plants never runs; the same head, trusted, runs it -------------


@pytest.mark.parametrize(
    ("head", "changed_files", "unsafe_vars", "shown"),
    [
        pytest.param("task", ("playbooks/site.yml",), {}, [], id="a-task-that-leaves-check-mode"),
        pytest.param(
            "lookup",
            (),
            {"machine/web-1": ("banner", "banner_lines", "banner_table")},
            [
                "+" + _pipe(Path("MARKERS/lookup")),
                "+" + _pipe(Path("MARKERS/list")),
                "+" + _pipe(Path("MARKERS/key")) + "=" + _pipe(Path("MARKERS/value")),
            ],
            id="lookups-in-host-variables-nested-too",
        ),
        pytest.param(
            "filter",
            ("playbooks/filter_plugins/shout.py", "playbooks/site.yml"),
            {},
            ["+welcome"],
            id="a-filter-plugin-beside-the-playbook",
        ),
    ],
)
def test_an_untrusted_plan_runs_nothing_the_pull_request_plants(
    engine: Engine,
    world: dict[str, Any],
    head: str,
    changed_files: tuple[str, ...],
    unsafe_vars: dict[str, tuple[str, ...]],
    shown: list[str],
) -> None:
    with _plan(engine, world, head, trusted=False) as planned:
        assert _markers(world) == []
        report = planned.untrusted
        assert report is not None
        # The plan still ran: the host was checked with the base revision's playbook (no task of
        # the pull request's), its changed variables given as text: a template shows as written.
        assert report.evaluated == ("machine/web-1",) and report.deferred == {}
        assert [c["task"] for c in _config(planned, "machine/web-1")["changes"]] == [
            "Write the message of the day",
            "Write the banner",
        ]
        diff = _diffs(planned, "machine/web-1")
        for line in shown:
            assert line.replace("MARKERS", str(world["markers"])) in diff.splitlines(), diff
        # A trusted template still renders, so the plan shows what the trusted content would do.
        assert "+hello web-1" in diff.splitlines()
        assert [e.finding for e in planned.plan.entries if e.action] == [Finding.CHANGE]
        # What the PR comment says: the changed files Ansible would read, the variables given as text.
        assert report.changed_files == changed_files and report.unsafe_vars == unsafe_vars
        deferred_note = [line for line in report.notes() if DEFERRED_NOTE in line]
        assert deferred_note == ([f"{DEFERRED_NOTE} ({', '.join(changed_files)})"] if changed_files else [])


@pytest.mark.parametrize("head", ["task", "lookup", "filter"])
def test_the_control_the_same_head_trusted_runs_what_it_plants(
    engine: Engine, world: dict[str, Any], head: str
) -> None:
    planted = {
        "task": ["task"],
        "lookup": ["list", "lookup", "value"],  # a mapping's key is data to Ansible in any case
        "filter": ["filter"],
    }
    with _plan(engine, world, head, trusted=True) as planned:
        assert planned.untrusted is None
        assert _markers(world) == planted[head]


def test_a_role_name_is_a_name_never_a_template_trusted_or_not(engine: Engine, world: dict[str, Any]) -> None:
    for trusted in (False, True):
        with _plan(engine, world, "role", trusted=trusted) as planned:
            (web1,) = planned.observations.config
            assert web1.state is ObservationState.UNKNOWN, web1.fields
            assert "{{ 'base' ~ 'line' }}" in web1.detail and "was not found" in web1.detail


# --- what cannot be evaluated with the base revision waits until the pull request is trusted ------


def test_new_hosts_and_playbooks_wait_for_trust(engine: Engine, world: dict[str, Any]) -> None:
    with _plan(engine, world, "widen", trusted=False) as planned:
        report = planned.untrusted
        assert report is not None and report.evaluated == ()
        assert report.deferred == {
            "machine/web-1": "playbook playbooks/new.yml is not in the base revision",
            "machine/web-2": "it is not configured at the base revision",
        }
        assert report.changed_files == ("playbooks/new.yml",)
        assert report.notes() == (
            f"{DEFERRED_NOTE} (playbooks/new.yml)",
            "configuration not evaluated until the PR is trusted (it is not configured at the base "
            "revision): machine/web-2",
            "configuration not evaluated until the PR is trusted (playbook playbooks/new.yml is not "
            "in the base revision): machine/web-1",
        )
        unknown = {e.address: e for e in planned.plan.entries if e.reason == "config-not-attempted"}
        assert sorted(unknown) == ["machine/web-1", "machine/web-2"]
        assert "evaluated once the pull request is trusted" in unknown["machine/web-2"].detail


def test_an_unchanged_head_is_evaluated_as_is_and_never_applied(
    engine: Engine, world: dict[str, Any]
) -> None:
    with _plan(engine, world, world["base"], trusted=False) as planned:
        report = planned.untrusted
        assert report is not None and report.evaluated == ("machine/web-1",)
        assert report.unsafe_vars == {} and report.changed_files == () and report.deferred == {}
        assert report.notes() == (
            f"configuration of 1 resource evaluated with the playbooks of the base revision {report.base}: "
            "machine/web-1",
        )
        assert planned.plan.changes()
        with pytest.raises(UsageError, match="for review only"):
            engine.apply(planned, RunOptions(), CancelToken())
    assert engine.store.history(limit=1) == []


def test_the_notes_stay_short_for_a_large_fleet() -> None:
    many = tuple(f"machine/m-{i:03}" for i in range(250))
    report = UntrustedReport(
        "repo@main",
        many[:200],
        dict.fromkeys(many[200:], "it is not configured at the base revision"),
        dict.fromkeys(many[:100], ("motd",)),
        tuple(f"playbooks/{i}.yml" for i in range(30)),
    )
    notes = report.notes()
    assert notes[0].startswith("configuration of 200 resources evaluated with the playbooks of the base")
    assert notes[0].endswith("machine/m-009 and 190 more")
    assert notes[1] == "100 changed variables of 100 resources given to Ansible as text, never as templates"
    assert notes[2] == f"{DEFERRED_NOTE} ({', '.join(f'playbooks/{i}.yml' for i in range(10))} and 20 more)"
    assert notes[3].endswith("machine/m-209 and 40 more") and len(notes) == 4


def _configured(name: str, address: str = "192.0.2.1", **variables: Any) -> models.Machine:
    document = _machine(name, variables)
    document["spec"]["address"] = address
    return models.Machine.model_validate(document)


BASE = _configured(
    "web-1", motd="{{ greeting }}", port=22, token={"credentialsRef": "app"}, ansible_user="ops"
)


@pytest.mark.parametrize(
    ("head", "base", "expected"),
    [
        pytest.param(
            _configured(
                "web-1", motd="{{ greeting }}", port=22, token={"credentialsRef": "app"}, ansible_user="ops"
            ),
            BASE,
            BaseComparison(None, frozenset({"motd", "port", "token", "ansible_user"})),
            id="unchanged-every-variable-trusted",
        ),
        pytest.param(
            _configured(
                "web-1", motd="{{ x }}", port=True, token={"credentialsRef": "app"}, ansible_user="ops"
            ),
            BASE,
            BaseComparison(None, frozenset({"token", "ansible_user"}), ("motd", "port")),
            id="changed-values-unsafe-even-22-to-true",
        ),
        pytest.param(
            _configured("web-1", motd="{{ greeting }}", port=22, token={"credentialsRef": "app"}),
            BASE,
            BaseComparison("the pull request changes its connection variables ansible_user"),
            id="a-connection-variable-removed",
        ),
        pytest.param(
            _configured(
                "web-1", motd="{{ greeting }}", port=22, token={"credentialsRef": "db"}, ansible_user="ops"
            ),
            BASE,
            BaseComparison("the pull request changes its secret variables token"),
            id="another-credential",
        ),
        pytest.param(
            _configured(
                "web-1", "192.0.2.99", motd="{{ greeting }}", port=22, token={"credentialsRef": "app"}
            ),
            BASE,
            BaseComparison("the pull request changes its spec.address"),
            id="another-address",
        ),
        pytest.param(
            _configured("web-1"),
            None,
            BaseComparison("it is not configured at the base revision"),
            id="a-new-host",
        ),
    ],
)
def test_what_an_untrusted_configuration_may_run(
    head: models.Machine, base: models.Machine | None, expected: BaseComparison
) -> None:
    assert compare_with_base(head, base) == expected


# --- who is trusted: the base revision's fleet.yaml ------------------------------------------------


def test_a_pull_request_cannot_trust_itself(engine: Engine, world: dict[str, Any]) -> None:
    repo = str(world["repo"])
    base, head = SourceRef(repo=repo, rev=world["base"]), SourceRef(repo=repo, rev=world["heads"]["trust"])
    # The head names its author in fleet.yaml; the base revision, which decides, does not.
    assert engine.trusts(head, "mallory")
    assert not engine.trusts(base, "mallory")
    assert not engine.trusts(base, "mallory", labels=["fleet/trusted"])


def _trust(**trust: Any) -> models.Fleet:
    return models.Fleet.model_validate(_fleet(pullRequests={"trust": trust}))


@pytest.mark.parametrize(
    ("fleet", "author", "teams", "labels", "expected"),
    [
        pytest.param(_trust(), "alice", ["org/infra"], ["fleet/trusted"], False, id="nobody-by-default"),
        pytest.param(_trust(authors=["Alice"]), "alice", [], [], True, id="an-author-any-case"),
        pytest.param(_trust(authors=["alice"]), "bob", [], [], False, id="another-author"),
        pytest.param(_trust(teams=["org/infra"]), "bob", ["ORG/infra"], [], True, id="a-team-member"),
        pytest.param(_trust(teams=["org/infra"]), "bob", ["org/web"], [], False, id="another-team"),
        pytest.param(
            _trust(label="fleet/trusted"), "bob", [], ["fleet/Trusted"], True, id="the-label-when-configured"
        ),
        pytest.param(_trust(label="fleet/trusted"), "bob", [], [], False, id="not-labelled"),
    ],
)
def test_who_is_trusted(
    fleet: models.Fleet, author: str, teams: list[str], labels: list[str], expected: bool
) -> None:
    assert is_trusted(fleet, author, teams, labels) is expected


def test_pull_request_trust_is_validated() -> None:
    with pytest.raises(ValueError, match="pattern"):
        _trust(authors=["two words"])
    with pytest.raises(ValueError, match="Extra inputs"):
        _trust(everyone=True)


# --- the files fleet writes for Ansible --------------------------------------------------------------


def _read_back(value: Any, unsafe: list[str]) -> Any:
    """What ansible-inventory lists, with its unsafe strings (noted in `unsafe`) unwrapped."""
    if isinstance(value, dict) and set(value) == {"__ansible_unsafe"}:
        unsafe.append(value["__ansible_unsafe"])
        return value["__ansible_unsafe"]
    if isinstance(value, dict):
        return {k: _read_back(v, unsafe) for k, v in value.items()}
    if isinstance(value, list):
        return [_read_back(v, unsafe) for v in value]
    return value


def test_ansible_reads_back_exactly_what_fleet_wrote(tmp_path: Path) -> None:
    templates = ["{{ lookup('pipe', 'id') }}", "{% if true %}x{% endif %}", "#jinja2: x\n[[ y ]]", "50%"]
    tricky = [
        *templates,
        'quotes " and \\ backslashes',
        "lines\nand\ttabs\r\n",
        "unicode é ☃ 😀 \u2028 \x85 \x7f \x00",
        *["", "off", "yes", "1", "0x1f", "1.5", ".inf", "null", "~", "2001-01-01", "<<", "="],
    ]
    variables = {
        "plain": tricky,
        "marked": Unsafe({"list": tricky, "nested": {"{{ key }}": tricky[0], "off": "1"}, "number": 7}),
        "numbers": [1, -2.5, float("inf"), None, True],
    }
    path = tmp_path / "hosts.yml"
    path.write_text(dump_yaml({"all": {"hosts": {"h1": variables}}}))
    listed = ansible_inventory_list(path, tmp_path / "home")["_meta"]["hostvars"]["h1"]
    unsafe: list[str] = []
    assert _read_back(listed, unsafe) == json.loads(
        json.dumps({**variables, "marked": variables["marked"].value})
    )
    # What could be a template, and only that, is unsafe: in the marked variable, nowhere else.
    assert sorted(unsafe) == sorted([*templates, tricky[0]])
