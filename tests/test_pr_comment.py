"""`fleet pr comment` and `fleet drift-report` against the lab and a local GitHub API server: one
sticky comment across three pushes with the commit status, drift on the changed resources in it,
a token in no output; a drift pull request opened, updated as drift grows and closed when the
drift is fixed; and a merged one adopted, after which nothing is drifted or to change."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controller_testing import DASHBOARDS, MACHINE, Served, bare_lab, power
from fleet_testing import FLEET, commit_all, git, lab_control
from forge_servers import GitHubServer, github_server, gitlab_server

pytestmark = pytest.mark.slow  # a lab suite: left out of `make test-quick`

LAB_SUBNET = 91
TOKEN = "ghp_canaryPRtoken0000000000000000000000000"
OTHER = "nyc1-r01-05"  # no cluster or VM depends on it either


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("pr")
    with bare_lab(directory, LAB_SUBNET, "--transition-seconds", "0.1") as running:
        yield {**running, "FLEET_STATE": str(directory / "state.db")}


@pytest.fixture()
def github() -> Iterator[GitHubServer]:
    with github_server("acme", "fleet", token=TOKEN) as server:
        yield server


def _fleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(FLEET), *args], env=env, capture_output=True, text=True, timeout=300)
    assert TOKEN not in done.stdout + done.stderr, "the token leaked into the output"
    return done


def _with_forge(lab: dict[str, str], github: GitHubServer) -> dict[str, str]:
    return {**lab, "FLEET_VCS_TOKEN": TOKEN, "FLEET_VCS_API_URL": github.url}


def _set(repo: Path, name: str, field: str, value: str) -> None:
    """One field of one Machine, as a person edits it: that line only."""
    for path in sorted((repo / "machines").glob("*/*.yaml")):
        text = path.read_text()
        documents = text.split("\n---\n")
        for index, document in enumerate(documents):
            if f"  name: {name}\n" in document:
                lines = document.split("\n")
                at = next(i for i, line in enumerate(lines) if line.startswith(f"  {field}: "))
                lines[at] = f"  {field}: {value}"
                documents[index] = "\n".join(lines)
                path.write_text("\n---\n".join(documents))
                return
    raise AssertionError(f"no Machine {name}")


def test_one_sticky_comment_across_three_pushes_with_drift_and_the_status(
    lab: dict[str, str], github: GitHubServer
) -> None:
    repo = Path(lab["REPO"])
    env = _with_forge(lab, github)
    for name in (MACHINE, OTHER):
        lab_control(lab, {"op": "set_power", "name": name, "power": "on"})
    # What fleet applied, then someone powers MACHINE off by hand: drift the comment must show.
    applied = _fleet(env, "apply", str(repo), "--lab", "--target", f"machine/{MACHINE}", "--yes")
    assert applied.returncode == 0, applied.stderr
    lab_control(lab, {"op": "set_power", "name": MACHINE, "power": "off"})
    main = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "turn-off")
    number = github.add_pull("turn-off", "main")
    comments, heads = [], []
    try:
        for push, (name, value) in enumerate(((OTHER, "off"), (MACHINE, "off"), (OTHER, "on"))):
            _set(repo, name, "power", value)
            head = commit_all(repo, f"push {push + 1}: {name} {value}")
            heads.append(head)
            github.forget()
            done = _fleet(
                env, "pr", "comment", "--vcs", "github", "--project", "acme/fleet", "--pr", str(number),
                "--base", main, "--head", head, "--repo", str(repo), "--lab",
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            calls = github.calls()
            comments.append(github.comments_on(number))
            # A listing page, one write (plus, when it creates, the listing that guards a race), one status.
            assert len(calls) <= (4 if push == 0 else 3), [(c.method, c.path) for c in calls]
        assert [len(c) for c in comments] == [1, 1, 1]
        assert len({c[0]["id"] for c in comments}) == 1, "one comment, edited in place"
        first, second = comments[0][0]["body"], comments[1][0]["body"]
        assert first.startswith("<!-- fleet:plan -->"), first
        assert "Changes" in first and first.index("| check | result |") < first.index("Changes"), first
        assert f"machine/{OTHER}" in first and "power-off" in first
        assert f"! machine/{MACHINE}" in second and "drift" in second  # the hand-made change shows
        for head in heads:
            [status] = github.statuses[head]
            assert (status["context"], status["state"]) == ("fleet/plan", "success"), status
        assert all(TOKEN not in c[0]["body"] for c in comments)
    finally:
        git(repo, "checkout", "-q", "main")
        lab_control(lab, {"op": "set_power", "name": MACHINE, "power": "on"})


def test_an_invalid_head_fails_the_status_with_links_and_a_dry_run_calls_nothing(
    lab: dict[str, str], github: GitHubServer
) -> None:
    repo = Path(lab["REPO"])
    env = _with_forge(lab, github)
    main = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "typo")
    try:
        _set(repo, OTHER, "power", "of")
        head = commit_all(repo, "a typo")
        number = github.add_pull("typo", "main")
        options = ["--vcs", "github", "--project", "acme/fleet", "--pr", str(number), "--base", main]
        dry = _fleet(
            env, "pr", "comment", *options, "--head", head, "--repo", str(repo), "--lab", "--dry-run"
        )
        assert dry.returncode == 0, dry.stderr
        assert github.calls() == [] and "validation error" in dry.stdout
        done = _fleet(env, "pr", "comment", *options, "--head", head, "--repo", str(repo), "--lab")
        assert done.returncode == 0, done.stderr
        [comment] = github.comments_on(number)
        assert f"https://github.com/acme/fleet/blob/{head}/machines/nyc1/r01.yaml#L" in comment["body"]
        [status] = github.statuses[head]
        assert status["state"] == "failure" and "validation error" in status["description"]
    finally:
        git(repo, "checkout", "-q", "main")


def _nyc1_pulls(github: GitHubServer) -> list[dict[str, Any]]:
    """The drift pull requests of nyc1 (other sites may have their own)."""
    return [i for i in github.issues.values() if i["pull"] and i["pull"]["head"] == "fleet/drift/nyc1"]


def _drift_report(env: dict[str, str], *extra: str) -> str:
    done = _fleet(
        env, "drift-report", "--repo", env["BARE"], "--branch", "main", "--vcs", "github",
        "--project", "acme/fleet", "--grace", "0", "--lab", *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _branch_diff(env: dict[str, str]) -> list[str]:
    """The lines the drift branch changes, as `git diff` says."""
    diff = git(Path(env["BARE"]), "diff", "--unified=0", "main", "fleet/drift/nyc1")
    return [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]


def test_a_drift_pull_request_is_opened_updated_as_drift_grows_and_closed_when_it_is_fixed(
    lab: dict[str, str], github: GitHubServer
) -> None:
    env = _with_forge(lab, github)
    repo = Path(lab["REPO"])
    for name in (MACHINE, OTHER):
        lab_control(lab, {"op": "set_power", "name": name, "power": "on"})
    assert (
        _fleet(
            env,
            "apply",
            str(repo),
            "--lab",
            "--target",
            f"machine/{MACHINE}",
            "--target",
            f"machine/{OTHER}",
            "--yes",
        ).returncode
        == 0
    )
    try:
        lab_control(lab, {"op": "set_power", "name": MACHINE, "power": "off"})
        assert _fleet(env, "drift", str(repo), "--lab").returncode == 0  # records when it was first seen
        out = _drift_report(env)
        assert "nyc1: opened" in out, out
        [pull] = _nyc1_pulls(github)
        assert pull["pull"]["head"] == "fleet/drift/nyc1" and pull["state"] == "open"
        assert _branch_diff(env) == ["-  power: on", "+  power: off"]

        lab_control(lab, {"op": "set_power", "name": OTHER, "power": "off"})
        assert _fleet(env, "drift", str(repo), "--lab").returncode == 0
        out = _drift_report(env)
        assert "nyc1: updated" in out, out
        [again] = _nyc1_pulls(github)
        assert again["number"] == pull["number"] and f"machine/{OTHER}" in again["body"]
        assert sorted(_branch_diff(env)) == ["+  power: off", "+  power: off", "-  power: on", "-  power: on"]

        for name in (MACHINE, OTHER):
            lab_control(lab, {"op": "set_power", "name": name, "power": "on"})
        assert _fleet(env, "drift", str(repo), "--lab").returncode == 0  # resolves the findings
        out = _drift_report(env)
        assert "nyc1: closed" in out, out
        [closed] = _nyc1_pulls(github)
        assert closed["state"] == "closed"
    finally:
        for name in (MACHINE, OTHER):
            lab_control(lab, {"op": "set_power", "name": name, "power": "on"})


def _drifted_off(env: dict[str, str], lab: dict[str, str]) -> None:
    """MACHINE applied on, then turned off behind fleet's back and found drifted."""
    repo = Path(lab["REPO"])
    lab_control(lab, {"op": "set_power", "name": MACHINE, "power": "on"})
    assert _fleet(env, "apply", str(repo), "--lab", "--target", f"machine/{MACHINE}", "--yes").returncode == 0
    lab_control(lab, {"op": "set_power", "name": MACHINE, "power": "off"})
    assert _fleet(env, "drift", str(repo), "--lab").returncode == 0


def test_a_merged_drift_pull_request_adopts_the_live_values(
    lab: dict[str, str], github: GitHubServer
) -> None:
    env = _with_forge(lab, github)
    repo = Path(lab["REPO"])
    try:
        _drifted_off(env, lab)
        assert "nyc1: opened" in _drift_report(env)
        git(repo, "fetch", "-q", "origin", "fleet/drift/nyc1")
        git(repo, "merge", "-q", "--ff-only", "FETCH_HEAD")  # the pull request merged
        git(repo, "push", "-q", "origin", "main")
        assert power(lab, MACHINE) == "off"
        # The next reconcile has nothing to change (the spec is the live value); it records that.
        reconciled = _fleet(env, "apply", str(repo), "--lab", "--target", f"machine/{MACHINE}", "--yes")
        assert reconciled.returncode == 0, reconciled.stderr
        plan = _fleet(env, "plan", str(repo), "--lab", "--target", f"machine/{MACHINE}", "-o", "json")
        assert plan.returncode == 0, plan.stderr
        assert '"finding": "change"' not in plan.stdout and '"finding": "drift"' not in plan.stdout
        assert power(lab, MACHINE) == "off"
    finally:
        git(repo, "checkout", "-q", "main")
        _set(repo, MACHINE, "power", "on")
        commit_all(repo, "back on")
        git(repo, "push", "-q", "origin", "main")
        lab_control(lab, {"op": "set_power", "name": MACHINE, "power": "on"})


def test_push_only_pushes_the_drift_branch_prints_the_pull_request_and_calls_no_forge(
    lab: dict[str, str], github: GitHubServer
) -> None:
    """For a forge fleet has no client for, or a local bare repository (as the demo has)."""
    env = _with_forge(lab, github)  # a forge it could call, and must not
    try:
        _drifted_off(env, lab)
        options = ["--repo", env["BARE"], "--branch", "main", "--grace", "0", "--lab"]
        done = _fleet(env, "drift-report", *options, "--push-only")
        assert done.returncode == 0, done.stderr
        commit = git(Path(env["BARE"]), "rev-parse", "fleet/drift/nyc1")
        assert f"nyc1: pushed fleet/drift/nyc1 at {commit[:12]} (1 drifted fields, 1 adopted" in done.stdout
        assert "pull request to open: fleet/drift/nyc1 -> main" in done.stdout
        assert "<!-- fleet:drift:nyc1 -->" in done.stdout and f"machine/{MACHINE}" in done.stdout
        assert _branch_diff(env) == ["-  power: on", "+  power: off"]
        assert github.calls() == []
        for clash in ("--dry-run", "--as-issue"):
            refused = _fleet(env, "drift-report", "--repo", env["BARE"], "--push-only", clash)
            assert refused.returncode == 2 and "--push-only" in refused.stderr, refused.stderr
    finally:
        subprocess.run(["git", "-C", env["BARE"], "branch", "-q", "-D", "fleet/drift/nyc1"], check=False)
        lab_control(lab, {"op": "set_power", "name": MACHINE, "power": "on"})


WEBHOOK_SECRET = "webhook-canary-secret-pr-71c2"


def test_the_controller_comments_on_a_pull_request_a_signed_webhook_announces(
    lab: dict[str, str], github: GitHubServer, tmp_path: Path
) -> None:
    repo = Path(lab["REPO"])
    lab_control(lab, {"op": "set_power", "name": OTHER, "power": "on"})
    git(repo, "checkout", "-q", "-b", "from-a-webhook")
    try:
        _set(repo, OTHER, "power", "off")
        head = commit_all(repo, f"{OTHER} off")
        git(repo, "push", "-q", "origin", "from-a-webhook")
    finally:
        git(repo, "checkout", "-q", "main")
    number = github.add_pull("from-a-webhook", "main")
    env = {
        **_with_forge(lab, github),
        "FLEET_STATE": str(tmp_path / "state.db"),
        "FLEET_WEBHOOK_SECRET_GITHUB": WEBHOOK_SECRET,
        "FLEET_API_TOKEN_OPS": "ops-token-pr",
        "FLEET_API_TOKEN_DASHBOARDS": DASHBOARDS,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    server = Served(env, tmp_path / "serve.log", "--poll-interval", "3600", "--repository-name", "acme/fleet")
    try:
        server.wait(lambda s: s["lastAppliedRevision"] is not None, idle=False)
        body = json.dumps(
            {
                "action": "opened",
                "number": number,
                "pull_request": {
                    "number": number,
                    "user": {"login": "octocat"},
                    "labels": [],
                    "base": {"ref": "main", "sha": git(repo, "rev-parse", "main")},
                    "head": {"ref": "from-a-webhook", "sha": head},
                },
                "repository": {"full_name": "acme/fleet", "html_url": "https://github.com/acme/fleet"},
            }
        ).encode()
        signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": "pr-d-1",
            "X-Hub-Signature-256": signature,
            "Content-Type": "application/json",
        }
        answer = server.client.post("/webhooks/github", content=body, headers=headers)
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 120
        while head not in github.statuses and time.monotonic() < deadline:  # the status comes last
            time.sleep(0.5)
        [comment] = github.comments_on(number)
        assert f"machine/{OTHER}" in comment["body"] and "power-off" in comment["body"], comment["body"]
        assert github.statuses[head][0]["state"] == "success"
        assert power(lab, OTHER) == "on", "a pull request's plan applies nothing"
        assert server.stop() == 0
        log = server.log.read_text()
        assert TOKEN not in log and WEBHOOK_SECRET not in log and "pull request commented" in log
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def test_the_controller_keeps_drift_pull_requests_on_the_drift_schedule(
    lab: dict[str, str], github: GitHubServer, tmp_path: Path
) -> None:
    observed = "ldn1-r02-06"  # ldn1's power is only observed: the drift stays, and is reported
    env = {
        **_with_forge(lab, github),
        "FLEET_STATE": str(tmp_path / "state.db"),
        "FLEET_API_TOKEN_OPS": "ops-token-pr",
        "FLEET_API_TOKEN_DASHBOARDS": DASHBOARDS,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "FLEET_VCS": "github",
        "FLEET_DRIFT_REPORTS": "true",
        "FLEET_DRIFT_GRACE": "0",
    }
    lab_control(lab, {"op": "set_power", "name": observed, "power": "on"})
    server = Served(env, tmp_path / "serve.log", "--repository-name", "acme/fleet", "--drift-interval", "3")
    try:
        # Passes come every 3 s, each with its drift report: the queue is seldom empty.
        server.wait(lambda s: s["resources"].get("Machine", {}).get("in sync", 0) >= 10, idle=False)
        lab_control(lab, {"op": "set_power", "name": observed, "power": "off"})
        deadline = time.monotonic() + 120
        pulls: list[dict[str, object]] = []
        while time.monotonic() < deadline:  # ldn1's first report may come before the change
            pulls = [i for i in github.issues.values() if i["pull"] and i["state"] == "open"]
            if any(f"machine/{observed}" in str(p["body"]) for p in pulls):
                break
            time.sleep(0.5)
        ldn1 = [p for p in pulls if isinstance(p["pull"], dict) and p["pull"]["head"] == "fleet/drift/ldn1"]
        assert len(ldn1) == 1, server.log.read_text()[-3000:]
        [pull] = ldn1
        assert f"machine/{observed}" in str(pull["body"]) and "observe-only" in str(pull["body"])
        assert power(lab, observed) == "off", "observed fields are reported, never changed"
        assert server.stop() == 0
        assert TOKEN not in server.log.read_text()
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        lab_control(lab, {"op": "set_power", "name": observed, "power": "on"})


def test_a_gitlab_merge_request_gets_the_same_note_and_its_status_in_a_pipeline(lab: dict[str, str]) -> None:
    """In a GitLab merge-request pipeline the command needs no flags (CI_MERGE_REQUEST_*)."""
    repo = Path(lab["REPO"])
    lab_control(lab, {"op": "set_power", "name": OTHER, "power": "on"})
    main = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "gitlab-change")
    try:
        _set(repo, OTHER, "power", "off")
        head = commit_all(repo, f"{OTHER} off")
    finally:
        git(repo, "checkout", "-q", "main")
    with gitlab_server("acme/fleet", 42, token="glpat-canary0000000000") as gitlab:
        iid = gitlab.add_merge_request("gitlab-change", "main")
        env = {
            **lab,
            "FLEET_VCS_TOKEN": "glpat-canary0000000000",
            "CI_MERGE_REQUEST_IID": str(iid),
            "CI_MERGE_REQUEST_DIFF_BASE_SHA": main,
            "CI_COMMIT_SHA": head,
            "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
            "CI_PROJECT_PATH": "acme/fleet",
            "CI_API_V4_URL": gitlab.url + "/api/v4",
            "CI_PROJECT_URL": "https://gitlab.example.com/acme/fleet",
        }
        done = _fleet(env, "pr", "comment", "--repo", str(repo), "--lab")
        assert done.returncode == 0, done.stderr
        assert "glpat-canary" not in done.stdout + done.stderr
        [note] = gitlab.notes_on(iid)
        assert note["body"].startswith("<!-- fleet:plan -->") and f"machine/{OTHER}" in note["body"]
        assert (
            f"https://gitlab.example.com/acme/fleet/-/blob/{head}/" in note["body"]
            or "power-off" in note["body"]
        )
        [status] = gitlab.statuses[head]
        assert (status["name"], status["status"]) == ("fleet/plan", "success"), status


def test_drift_goes_to_a_tracking_issue_with_as_issue(lab: dict[str, str], github: GitHubServer) -> None:
    env = _with_forge(lab, github)
    repo = Path(lab["REPO"])
    try:
        _drifted_off(env, lab)
        assert "nyc1: opened" in _drift_report(env, "--as-issue")
        [issue] = [i for i in github.issues.values() if not i["pull"] and "fleet:drift:nyc1" in i["body"]]
        assert issue["state"] == "open" and f"machine/{MACHINE}" in issue["body"]
        assert not _nyc1_pulls(github), "an issue, not a pull request"
        lab_control(lab, {"op": "set_power", "name": MACHINE, "power": "on"})
        assert _fleet(env, "drift", str(repo), "--lab").returncode == 0
        assert "nyc1: closed" in _drift_report(env, "--as-issue")
        assert github.issues[issue["number"]]["state"] == "closed"
    finally:
        lab_control(lab, {"op": "set_power", "name": MACHINE, "power": "on"})


def test_an_untrusted_pull_request_that_moves_a_bmc_gets_no_credentials_sent_there(
    lab: dict[str, str], github: GitHubServer
) -> None:
    """Nobody is trusted by default: a pull request that points a BMC at its author's host is not
    observed (fleet would send the BMC's credentials there) and its status fails until trusted."""
    repo = Path(lab["REPO"])
    env = _with_forge(lab, github)
    trap = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    trap.bind((f"127.{LAB_SUBNET}.250.250", 623))
    trap.settimeout(0.2)
    main = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "moved-bmc")
    try:
        rack = repo / "machines/nyc1/r01.yaml"
        documents = rack.read_text().split("\n---\n")
        for index, document in enumerate(documents):
            if f"  name: {OTHER}\n" in document:
                lines = document.split("\n")
                at = next(i for i, line in enumerate(lines) if line.startswith("    address: "))
                lines[at] = f"    address: 127.{LAB_SUBNET}.250.250"
                documents[index] = "\n".join(lines)
        rack.write_text("\n---\n".join(documents))
        head = commit_all(repo, "my BMC now")
        number = github.add_pull("moved-bmc", "main")
        done = _fleet(
            env, "pr", "comment", "--vcs", "github", "--project", "acme/fleet", "--pr", str(number),
            "--base", main, "--head", head, "--repo", str(repo), "--lab",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        with contextlib.suppress(TimeoutError):
            data = trap.recv(4096)
            raise AssertionError(f"fleet sent {len(data)} bytes to the pull request's BMC")
        [comment] = github.comments_on(number)
        assert f"machine/{OTHER}` is observed once the pull request is trusted" in comment["body"], comment[
            "body"
        ]
        [status] = github.statuses[head]
        assert status["state"] == "failure" and "not observed" in status["description"]
    finally:
        trap.close()
        git(repo, "checkout", "-q", "main")
