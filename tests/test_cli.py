"""The `fleet` command: exit codes, output formats, `get` and its selectors, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from fleet_testing import EXAMPLE, FLEET, copy_example, run_cli
from ruamel.yaml import YAML


def _fleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FLEET), *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize(
    "args, code",
    [
        (["validate", str(EXAMPLE), "--no-cache"], 0),
        (["validate", "/no/such/dir"], 2),
        (["validate", str(EXAMPLE), "--rev", "main"], 2),
        (["validate", str(EXAMPLE), "--repo", str(EXAMPLE)], 2),
        (["validate", str(EXAMPLE), "--format", "xml"], 2),
        (["validate", "--no-such-option"], 2),
        (["get", str(EXAMPLE), "--kind", "Gizmo"], 2),
        (["get", str(EXAMPLE), "-l", "team in (a"], 2),
        (["frobnicate"], 2),
    ],
    ids=[
        "valid",
        "missing-path",
        "rev-without-repo",
        "path-and-repo",
        "bad-format",
        "bad-option",
        "unknown-kind",
        "bad-selector",
        "unknown-command",
    ],
)
def test_exit_codes(args: list[str], code: int) -> None:
    result = _fleet(*args)
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_invalid_repo_exits_1_and_warnings_only_with_strict(tmp_path: Path) -> None:
    repo = copy_example(tmp_path / "r")
    vms = repo / "virtual-machines"
    target = next(p for p in sorted(vms.glob("*.yaml")))
    text = target.read_text()
    target.write_text(text.replace("vcpus: ", "vcpus: 9", 1))  # 4 -> 94 vCPUs: overcommits the host
    result = _fleet("validate", str(repo), "--no-cache")
    assert result.returncode == 0 and "warning[host-overcommitted]" in result.stdout, result.stdout
    assert _fleet("validate", str(repo), "--no-cache", "--strict").returncode == 1
    target.write_text(text.replace("vcpus: ", "vcpus: x", 1))
    result = _fleet("validate", str(repo), "--no-cache")
    assert result.returncode == 1 and "error[invalid-value]" in result.stdout


def test_text_and_json_report_the_same_problems(tmp_path: Path) -> None:
    repo = copy_example(tmp_path / "r")
    rack = repo / "machines" / "ldn1" / "r01.yaml"
    rack.write_text(
        rack.read_text()
        .replace("power: on", "power: maybe", 1)
        .replace("bootDevice: disk", "bootDevice: tape", 1)
    )
    text = _fleet("validate", str(repo), "--no-cache", env={"NO_COLOR": "1"}).stdout
    found = json.loads(_fleet("validate", str(repo), "--no-cache", "--format", "json").stdout)
    assert len(found) == 2
    for d in found:
        assert (
            f"{d['path']}:{d['line']}:{d['col']}: error[{d['code']}]: {d['message']} [{d['address']}]" in text
        )


def test_no_color_is_honoured() -> None:
    env = {"NO_COLOR": "1", "FORCE_COLOR": "", "TERM": "xterm-256color"}
    result = _fleet("get", str(EXAMPLE), env=env)
    assert result.returncode == 0 and "\x1b[" not in result.stdout


def test_version_and_help_everywhere() -> None:
    assert _fleet("--version").stdout.startswith("fleet ")
    for command in ([], ["validate"], ["get"], ["schema"]):
        result = _fleet(*command, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout


def test_get_filters_by_kind_and_selector() -> None:
    code, output = run_cli(
        "get", str(EXAMPLE), "--kind", "machine", "-l", "team=platform-k8s", "--format", "json"
    )
    assert code == 0, output
    items = json.loads(output)
    assert items and all(
        i["kind"] == "Machine" and i["metadata"]["labels"]["team"] == "platform-k8s" for i in items
    )
    assert all(i["address"] == f"machine/{i['metadata']['name']}" for i in items)
    code, output = run_cli(
        "get", str(EXAMPLE), "-k", "Machine", "-l", "team notin (platform-k8s),!no-such", "-o", "json"
    )
    others = {i["address"] for i in json.loads(output)}
    assert others and not others & {i["address"] for i in items}


def test_get_yaml_round_trips_normalised_documents() -> None:
    code, output = run_cli("get", str(EXAMPLE), "--kind", "SparkPool", "--format", "yaml")
    assert code == 0
    documents = YAML(typ="safe", pure=True).load(output)
    assert len(documents) == 3 and {d["kind"] for d in documents} == {"SparkPool"}
    assert [d["address"] for d in documents] == ["sparkpool/adhoc", "sparkpool/etl", "sparkpool/ml-gpu"]


def test_get_table_lists_every_resource() -> None:
    code, output = run_cli("get", str(EXAMPLE), env={"COLUMNS": "250"})
    assert code == 0
    assert "machine" not in output.splitlines()[0].lower() or "KIND" in output.splitlines()[0]
    assert output.count("VirtualMachine") >= 6 and "resources" in output.splitlines()[-1]


def test_get_reads_a_revision(tmp_path: Path) -> None:
    from fleet_testing import git_init

    repo = copy_example(tmp_path / "r")
    git_init(repo)
    code, output = run_cli(
        "get",
        "--repo",
        str(repo),
        "--rev",
        "main",
        "-k",
        "Cluster",
        "-o",
        "json",
        "--cache-dir",
        str(tmp_path / "c"),
    )
    assert code == 0 and len(json.loads(output)) == 2


def test_shell_completion_is_available() -> None:
    # typer names the shell from the process's ancestors unless told this (its test switch):
    # then --show-completion takes the shell as its value, whoever started the tests.
    told = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    result = _fleet("--show-completion", "bash", env=told)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "complete -o default -F _fleet_completion fleet" in result.stdout, result.stdout


def test_sub_commands_of_other_packages_and_a_broken_one(tmp_path: Path) -> None:
    """`fleet lab` comes from the entry point group fleet.commands; a registered sub-command that
    cannot be loaded is one line on stderr, never a traceback, and the others still run."""
    metadata = tmp_path / "broken_fleet_commands-1.0.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-fleet-commands\nVersion: 1.0\n")
    (metadata / "entry_points.txt").write_text(
        "[fleet.commands]\nmissing = no_such_fleet_commands.cli:app\nnot-typer = json:dumps\n"
    )
    result = _fleet("lab", "--help", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0 and "status" in result.stdout, result.stdout + result.stderr
    errors = sorted(result.stderr.splitlines())
    assert "Traceback" not in result.stderr and len(errors) == 2, result.stderr
    assert errors[0].startswith("error: cannot load `fleet missing` from no_such_fleet_commands.cli:app:")
    assert errors[1] == "error: cannot load `fleet not-typer`: json:dumps is not a typer app"
    result = _fleet("missing", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--target", "machine/no-such-machine"], id="unknown-target"),
        pytest.param(["-l", "team in (a"], id="bad-selector"),
        pytest.param(["--repo", str(EXAMPLE), "--rev", "no-such-rev"], id="bad-rev"),
    ],
)
def test_under_detailed_exitcode_every_error_is_1_never_the_code_for_changes(
    args: list[str], tmp_path: Path
) -> None:
    path = [] if "--repo" in args else [str(EXAMPLE)]
    for command in ("plan", "drift"):
        code, output = run_cli(
            command,
            *path,
            *args,
            "--detailed-exitcode",
            "--state",
            str(tmp_path / "s.db"),
            "--cache-dir",
            str(tmp_path / "c"),
        )
        assert code == 1 and "error:" in output and "Traceback" not in output, (command, output)
        code, output = run_cli(
            command, *path, *args, "--state", str(tmp_path / "s.db"), "--cache-dir", str(tmp_path / "c")
        )
        assert code == 2, (command, output)  # without it: a usage or infrastructure error


def test_detailed_exitcode_for_a_missing_path_and_a_repo_without_a_fleet(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "m.yaml").write_text("kind: Machine\n")
    for path in (tmp_path / "no-such-dir", tmp_path / "empty"):
        for command in ("plan", "drift"):
            code, output = run_cli(
                command, str(path), "--detailed-exitcode", "--state", str(tmp_path / "s.db")
            )
            assert code == 1 and "Traceback" not in output, (command, output)


def test_an_unusable_cache_directory_is_one_line_never_a_traceback(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for env, args in (
        ({"XDG_CACHE_HOME": "/proc/nope"}, []),
        ({}, ["--cache-dir", str(a_file)]),
    ):
        done = _fleet("validate", str(EXAMPLE), *args, env=env)
        assert done.returncode == 0 and "valid (0 errors" in done.stdout, done.stdout + done.stderr
        (warning,) = done.stderr.splitlines()
        assert warning.startswith("warning: cannot use the cache directory") and "--cache-dir" in warning
    # A clone of a remote repo needs the cache: one line saying what to do, usage error.
    done = _fleet("validate", "--repo", f"file://{EXAMPLE.parent}", "--cache-dir", str(a_file))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "cannot keep a clone" in done.stderr and "writable directory" in done.stderr
