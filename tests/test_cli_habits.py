"""The CLI as people who live in kubectl and terraform use it: through pipes and files, with
`-o`, short kind names and durations, and told which state store a command uses.

Every test runs the installed `fleet` as a subprocess with its output to a pipe (no terminal).
Golden files (tests/golden/cli/, FLEET_UPDATE_GOLDEN=1 rewrites them) hold the tables of `get`,
`observe` and `history` in every list format; they must not depend on the terminal width.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fleet_testing import FLEET, copy_example, git_init
from test_plan_renderers import check_golden

from reconciler.state import open_store

EXAMPLE = Path(__file__).resolve().parent.parent / "fleet-repo-example"
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "FLEET_OPERATOR": "alice",
    }


def fleet(env: dict[str, str], *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FLEET), *args],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": str(columns)},
        timeout=300,
        check=False,
    )


def _normalised(text: str) -> str:
    return TIMESTAMP.sub("YYYY-MM-DDTHH:MM:SSZ", text)


# --- output that survives pipes and files -------------------------------------------------


def test_tables_are_never_cut_or_wrapped_off_a_terminal(env: dict[str, str]) -> None:
    args = ("get", str(EXAMPLE), "--kind", "Machine", "-l", "team=platform-k8s", "--show-labels")
    narrow, wide = fleet(env, *args, columns=80), fleet(env, *args, columns=300)
    assert narrow.returncode == 0, narrow.stderr
    assert narrow.stdout == wide.stdout
    lines = narrow.stdout.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "WHERE", "WHAT", "FILE", "LABELS"]
    assert "…" not in narrow.stdout
    assert all(line.split()[-1].startswith("fleet.acme.io/") or "team=" in line for line in lines[1:])
    # The count is for people: on stderr, so that a pipe gets rows only.
    assert narrow.stderr.strip().endswith(f"{len(lines) - 1} resources")
    assert "resources" not in narrow.stdout
    # awk sees one field per column.
    names = [line.split()[1] for line in lines[1:]]
    assert names and all(name.startswith("ldn1-") or name.startswith("nyc1-") for name in names)


LIST_FORMATS = [("text",), ("text", "--no-headers"), ("wide",), ("name",)]


def _history_store(env: dict[str, str]) -> None:
    with open_store(str(Path(env["XDG_STATE_HOME"]) / "fleet" / "state.db")) as store:
        run = store.start_run(
            "apply", "alice", reason="INFRA-2231: DIMM B2 replaced", revision="9c1e4b7d2f0a"
        )
        action = store.start_action(run, "machine/nyc1-r02-04", "power-on", {"power": "off"})
        store.finish_action(action, "succeeded", {"power": "on"})
        failed = store.start_action(run, "machine/nyc1-r02-05", "power-on", {"power": "off"})
        store.finish_action(failed, "failed", None, "BMC busy (completion code 0xC0)")
        store.finish_run(run, "failed")
        planned = store.start_run("plan", "bob", revision="9c1e4b7d2f0a")
        store.finish_run(planned, "succeeded")


@pytest.mark.parametrize("command", ["get", "observe", "history"])
@pytest.mark.parametrize("options", LIST_FORMATS, ids=lambda o: "-".join(o))
def test_list_tables_match_their_golden_files_at_every_width(
    env: dict[str, str], command: str, options: tuple[str, ...]
) -> None:
    output, *extra = options
    if command == "history":
        _history_store(env)
        args: tuple[str, ...] = ("history",)
    elif command == "observe":
        # No credentials in this environment: every Machine is unknown at once, with its reason.
        args = ("observe", str(EXAMPLE), "-k", "m", "-l", "team=platform-k8s")
    else:
        args = ("get", str(EXAMPLE), "-k", "vm")
    shown = {width: fleet(env, *args, "-o", output, *extra, columns=width) for width in (80, 200)}
    assert shown[80].returncode == 0, shown[80].stderr
    assert _normalised(shown[80].stdout) == _normalised(shown[200].stdout)
    assert "\x1b[" not in shown[80].stdout
    check_golden(f"cli/{command}-{'-'.join(options)}.txt", _normalised(shown[80].stdout))


def test_json_and_yaml_carry_the_same_fields(env: dict[str, str]) -> None:
    from ruamel.yaml import YAML

    for args in (("get", str(EXAMPLE), "-k", "sp"), ("version",), ("validate", str(EXAMPLE))):
        as_json = json.loads(fleet(env, *args, "-o", "json").stdout)
        as_yaml = YAML(typ="safe", pure=True).load(fleet(env, *args, "--output", "yaml").stdout)
        assert as_json == as_yaml, args
    # --format stays an alias of -o.
    assert json.loads(fleet(env, "get", str(EXAMPLE), "-k", "sp", "--format", "json").stdout)


def test_a_closed_pipe_is_a_normal_end(env: dict[str, str], tmp_path: Path) -> None:
    repo = tmp_path / "big"
    subprocess.run(
        [
            sys.executable,
            "bench/gen_fleet.py",
            "--out",
            str(repo),
            "--machines",
            "3000",
            "--vms",
            "0",
            "--clusters",
            "0",
            "--spark-pools",
            "0",
        ],
        cwd=EXAMPLE.parent,
        check=True,
        capture_output=True,
    )
    for output in ("text", "json", "name"):
        script = f'"{FLEET}" get "{repo}" -o {output} | head -1 >/dev/null; echo "${{PIPESTATUS[0]}}"'
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)
        assert done.stdout.strip() == "0", (output, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr and "Exception" not in done.stderr


def test_no_color_means_no_escape_codes_at_all(env: dict[str, str]) -> None:
    forced = {**env, "FORCE_COLOR": "1"}
    coloured = fleet(forced, "get", str(EXAMPLE), "-k", "cl")
    assert "\x1b[" in coloured.stdout  # the check below can fail
    plain = fleet({**forced, "NO_COLOR": "1"}, "get", str(EXAMPLE), "-k", "cl")
    assert "\x1b[" not in plain.stdout + plain.stderr
    assert plain.stdout.split() == coloured.stdout.replace("\x1b[1m", "").replace("\x1b[0m", "").split()


# --- selection and the habits people bring ---------------------------------------------------


def test_quiet_and_verbose(env: dict[str, str], tmp_path: Path) -> None:
    args = ("plan", str(EXAMPLE), "-k", "cl", "--no-config", "--state", str(tmp_path / "s.db"))
    quiet = fleet(env, *args, "-q")
    assert quiet.returncode == 0 and quiet.stderr == "" and "Plan:" in quiet.stdout
    verbose = fleet(env, *args, "--verbose")
    assert "debug: settings: cache " in verbose.stderr and "debug: done in " in verbose.stderr
    assert "state: " in verbose.stderr
    for command in (
        "validate",
        "get",
        "observe",
        "plan",
        "apply",
        "drift",
        "history",
        "inventory",
        "explain",
    ):
        assert "--quiet" in fleet(env, command, "--help").stdout, command


def test_kinds_have_short_names_and_suggestions(env: dict[str, str]) -> None:
    assert (
        fleet(env, "get", str(EXAMPLE), "-k", "vms", "-o", "name")
        .stdout.splitlines()[0]
        .startswith("virtualmachine/")
    )
    assert fleet(env, "get", str(EXAMPLE), "-k", "sp", "-o", "name").stdout.split() == [
        "sparkpool/adhoc",
        "sparkpool/etl",
        "sparkpool/ml-gpu",
    ]
    wrong = fleet(env, "plan", str(EXAMPLE), "-k", "machin", "--no-config")
    assert wrong.returncode == 2
    assert "unknown kind 'machin' (did you mean 'Machine'?)" in wrong.stderr


def test_get_shows_the_resources_named(env: dict[str, str]) -> None:
    shown = fleet(env, "get", str(EXAMPLE), "sparkpool/etl", "machine/nyc1-r01-02", "-o", "name")
    assert shown.stdout.split() == ["machine/nyc1-r01-02", "sparkpool/etl"]
    inside = subprocess.run(
        [str(FLEET), "get", "cluster/k8s-ldn1", "--no-headers"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert inside.stdout.split()[:2] == ["Cluster", "k8s-ldn1"]
    missing = fleet(env, "get", str(EXAMPLE), "machine/nope")
    assert missing.returncode == 2 and "no such resource: machine/nope" in missing.stderr


def test_a_target_left_out_by_a_filter_is_said_to_be(env: dict[str, str]) -> None:
    done = fleet(env, "observe", str(EXAMPLE), "-k", "m", "-l", "team=nobody", "-t", "machine/nyc1-r01-02")
    assert done.returncode == 2
    assert "machine/nyc1-r01-02 is declared, but the label selector leaves it out" in done.stderr
    counted = fleet(env, "observe", str(EXAMPLE), "-k", "cl")
    assert counted.stderr.strip().endswith("2 resources: 2 unknown")


def test_get_refuses_a_directory_without_a_fleet_yaml(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    shutil.copy(EXAMPLE / "machines" / "nyc1" / "r01.yaml", tmp_path / "sub" / "r01.yaml")
    done = subprocess.run(
        [str(FLEET), "get"], cwd=tmp_path / "sub", capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode != 0 and done.stdout == ""
    assert "no fleet.yaml" in done.stderr


def test_history_since_takes_durations_and_times(env: dict[str, str]) -> None:
    _history_store(env)
    for since in ("1h", "7d", "2w", "2000-01-01T00:00:00"):
        shown = fleet(env, "history", "--since", since, "-o", "name")
        assert shown.stdout.split() == ["run/2", "run/1"], (since, shown.stderr)
    assert fleet(env, "history", "--since", "2999-01-01", "-o", "name").stdout == ""
    bad = fleet(env, "history", "--since", "yesterday")
    assert bad.returncode == 2 and "neither a duration (30m, 1h, 7d, 2w) nor an ISO 8601 time" in bad.stderr


def test_version_names_fleet_its_sdks_and_the_store_schema(env: dict[str, str]) -> None:
    assert fleet(env, "version").stdout.startswith("fleet ")
    assert fleet(env, "--version").stdout == fleet(env, "version").stdout
    shown = json.loads(fleet(env, "version", "-o", "json").stdout)
    assert set(shown) == {"fleet", "python", "sdks", "stateSchema"}
    assert shown["sdks"]["pyghmi"] and shown["sdks"]["kubernetes"] and shown["stateSchema"]


def test_terraform_spellings_are_understood(env: dict[str, str], tmp_path: Path) -> None:
    assert "--auto-approve" in fleet(env, "apply", "--help").stdout
    out = fleet(env, "plan", str(EXAMPLE), "-out", "plan.json")
    assert out.returncode == 2 and "`--out FILE`" in out.stderr
    missing = fleet(env, "apply", str(tmp_path / "plan.json"), "--auto-approve")
    assert missing.returncode == 2 and "no such plan file or fleet repo" in missing.stderr


def test_schema_of_one_kind_or_of_the_plan(env: dict[str, str], tmp_path: Path) -> None:
    plan = json.loads(fleet(env, "schema", "plan").stdout)
    assert plan["title"].lower().startswith("fleet plan")
    written = fleet(env, "schema", "vm", "--write", str(tmp_path / "s"))
    assert written.returncode == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["virtualmachine.schema.json"]


def test_a_fleet_repo_in_a_folder_of_a_larger_repository(env: dict[str, str], tmp_path: Path) -> None:
    """`--path` with `--repo`, as Flux's and Argo CD's `path`: the root's other YAML is not fleet's."""
    monorepo = tmp_path / "mono"
    copy_example(monorepo / "infra" / "fleet")
    (monorepo / "ci.yaml").write_text("jobs: {build: {runs-on: ubuntu}}\n")
    (monorepo / "charts").mkdir()
    (monorepo / "charts" / "values.yaml").write_text("replicaCount: 2\n")
    git_init(monorepo)
    whole = fleet(env, "validate", "--repo", str(monorepo), "--rev", "HEAD")
    assert whole.returncode == 1  # the repository's root holds no fleet.yaml
    inside = fleet(env, "validate", "--repo", str(monorepo), "--rev", "HEAD", "--path", "infra/fleet")
    assert inside.returncode == 0, inside.stdout + inside.stderr
    assert ":infra/fleet (" in inside.stdout and "valid (0 errors" in inside.stdout
    listed = fleet(env, "get", "--repo", str(monorepo), "--path", "infra/fleet/", "-k", "sp", "-o", "name")
    assert listed.stdout.split() == ["sparkpool/adhoc", "sparkpool/etl", "sparkpool/ml-gpu"]
    planned = fleet(
        env, "plan", "--repo", str(monorepo), "--path", "infra/fleet", "-k", "cl", "--no-config", "-o", "json"
    )
    assert planned.returncode == 0, planned.stderr
    assert {e["address"] for e in json.loads(planned.stdout)["entries"]} == {
        "cluster/k8s-ldn1",
        "cluster/k8s-nyc1",
    }
    for bad, message in (
        ("nope", "has no directory nope"),
        ("../x", "is not a directory inside the repository"),
    ):
        refused = fleet(env, "validate", "--repo", str(monorepo), "--path", bad)
        assert refused.returncode == 2 and message in refused.stderr
    alone = fleet(env, "validate", str(monorepo), "--path", "infra/fleet")
    assert alone.returncode == 2 and "--path needs --repo" in alone.stderr


def _complete(env: dict[str, str], words: str) -> list[str]:
    """What bash completion offers for the last word of `words`, typed in the example repo."""
    done = subprocess.run(
        [str(FLEET)],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        env={
            **env,
            "_FLEET_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split(" ")) - 1),
        },
        timeout=120,
        check=False,
    )
    return done.stdout.split()


def test_completion_of_kinds_addresses_label_keys_and_formats(env: dict[str, str]) -> None:
    assert _complete(env, "fleet get -k v") == ["virtualmachine", "vm"]
    assert _complete(env, "fleet plan -t sparkpool/") == [
        "sparkpool/adhoc",
        "sparkpool/etl",
        "sparkpool/ml-gpu",
    ]
    assert "team=" in _complete(env, "fleet get -l te")
    assert _complete(env, "fleet observe -o ") == ["text", "wide", "name", "json", "yaml"]
    zsh = fleet(env, "--show-completion", "zsh")
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef fleet")
    assert "complete -o default -F _fleet_completion fleet" in fleet(env, "--show-completion", "bash").stdout


# --- where the state lives, said out loud ------------------------------------------------------


def test_plan_says_which_store_it_uses_and_that_it_made_it(env: dict[str, str], tmp_path: Path) -> None:
    store = tmp_path / "stat.db"  # a mistyped path: no longer silent
    first = fleet(env, "plan", str(EXAMPLE), "-k", "cl", "--no-config", "--state", str(store))
    assert f"state: sqlite+pysqlite:///{store} (created: a new, empty store" in first.stderr
    again = fleet(env, "plan", str(EXAMPLE), "-k", "cl", "--no-config", "--state", str(store))
    assert again.stderr.count("state: ") == 1 and "created" not in again.stderr
    history = fleet(env, "history", "--state", str(tmp_path / "stat2.db"))
    assert history.returncode == 2 and "no state store at" in history.stderr
    assert not (tmp_path / "stat2.db").exists()


def test_a_store_with_other_tables_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE users (id INTEGER)")
    done = fleet(env, "plan", str(EXAMPLE), "-k", "cl", "--no-config", "--state", str(other))
    assert done.returncode == 2
    assert "holds tables that are not fleet's (users)" in done.stderr
    with sqlite3.connect(other) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["users"]


def test_store_errors_say_what_to_do_and_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    damaged = tmp_path / "state.db"
    damaged.write_bytes(b"not a database " * 200)
    done = fleet(env, "history", "--state", str(damaged))
    assert done.returncode == 2
    assert "is damaged or not a SQLite file: restore it from your backup, or move it aside" in done.stderr
    down = fleet(env, "history", "--state", "postgresql://fleet@127.0.0.1:1/fleet")
    assert down.returncode == 2
    assert "check that PostgreSQL on 127.0.0.1:1 runs and accepts connections" in down.stderr
    assert "pg_isready -h 127.0.0.1 -p 1" in down.stderr


def test_plan_and_drift_work_on_a_read_only_store_and_apply_refuses_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    # util-linux's unshare gives the fleet below a mount namespace of its own, in which the
    # store's directory is mounted read-only (as root, file modes alone would not stop a write).
    directory = tmp_path / "ro"
    directory.mkdir()
    store = directory / "state.db"
    with open_store(str(store)) as opened:
        opened.finish_run(opened.start_run("plan", "alice"), "succeeded")
    repo = copy_example(tmp_path / "repo")
    before = store.read_bytes()

    def read_only(*args: str) -> subprocess.CompletedProcess[str]:
        script = (
            f'mount --bind "{directory}" "{directory}" && mount -o remount,bind,ro "{directory}" && '
            f'"{FLEET}" "$@"'
        )
        return subprocess.run(
            ["unshare", "-m", "sh", "-c", script, "fleet", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )

    probe = read_only("version")
    assert probe.returncode == 0, probe.stderr
    for command in ("plan", "drift"):
        done = read_only(command, str(repo), "-k", "cl", "--no-config", "--state", str(store))
        assert done.returncode == 0, done.stderr
        assert "(read-only: this command records nothing in it)" in done.stderr
    history = read_only("history", "--state", str(store), "-o", "name")
    assert history.returncode == 0 and history.stdout.split() == ["run/1"]
    refused = read_only("apply", str(repo), "-k", "cl", "--no-config", "--yes", "--state", str(store))
    assert refused.returncode == 2 and "is read-only, and every action is recorded" in refused.stderr
    assert store.read_bytes() == before
