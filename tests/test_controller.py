"""`fleet serve` against the lab: it follows a branch of a bare repository, applies each valid
commit, keeps the last good revision when a commit is invalid, lets a change outside its window
wait, answers its API only to the right tokens, and drains on SIGTERM."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from controller_testing import (
    DASHBOARDS,
    MACHINE,
    MACHINES,
    OPS,
    Served,
    bare_lab,
    edit,
    power,
    push,
    set_power,
)
from fleet_testing import git, lab_control

from reconciler.state import open_store

pytestmark = pytest.mark.slow  # a lab suite: left out of `make test-quick`

LAB_SUBNET = 85
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The example in a bare repository's main branch (with no change windows, so that nothing
    depends on the time of day), and a lab for it."""
    with bare_lab(
        tmp_path_factory.mktemp("controller"), LAB_SUBNET, "--transition-seconds", "0.1"
    ) as running:
        yield running


def _environment(lab: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {
        **lab,
        "FLEET_STATE": str(tmp_path / "state.db"),
        "FLEET_API_TOKEN_OPS": OPS,
        "FLEET_API_TOKEN_DASHBOARDS": DASHBOARDS,
        "FLEET_WEBHOOK_SECRET_GITHUB": WEBHOOK_SECRET,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }


@pytest.fixture()
def served(
    lab: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Served, dict[str, str]]]:
    """`fleet serve` on the lab, with the options a test names by indirect parametrization."""
    env = _environment(lab, tmp_path)
    server = Served(env, tmp_path / "serve.log", *getattr(request, "param", ()))
    try:
        yield server, env
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def test_serve_applies_each_valid_commit_and_keeps_the_last_good_one(
    served: tuple[Served, dict[str, str]],
) -> None:
    server, env = served
    repo = Path(env["REPO"])
    first = git(repo, "rev-parse", "HEAD")
    status = server.wait(lambda s: (s["lastAppliedRevision"] or {}).get("revision") == first)
    assert power(env, MACHINE) == "on"  # the first pass applied the spec
    assert status["resources"]["Machine"].get("in sync", 0) >= 15, status["resources"]

    # A commit that turns the machine off is applied: the resources it touched, at once.
    set_power(repo, "off")
    second = push(env, f"turn {MACHINE} off")
    status = server.wait(lambda s: (s["lastAppliedRevision"] or {}).get("revision") == second)
    assert power(env, MACHINE) == "off"
    runs = server.get("/api/v1/runs").json()["items"]
    mine = [r for r in runs if any(a["address"] == f"machine/{MACHINE}" for a in r["actions"])]
    assert mine and mine[0]["operator"] == "fleet-controller", runs[:2]
    assert mine[0]["reason"].startswith(f"controller: revision {second[:12]}"), mine[0]

    # An invalid commit applies nothing: the last good revision stays in force, both are shown.
    (repo / MACHINES).write_text((repo / MACHINES).read_text().replace("power: off", "power: of"))
    third = push(env, "a typo")
    status = server.wait(lambda s: s["lastAttemptedRevision"]["revision"] == third)
    attempted, applied = status["lastAttemptedRevision"], status["lastAppliedRevision"]
    assert not attempted["valid"] and attempted["errorCount"] >= 1
    assert any(f"{MACHINES}:" in e for e in attempted["errors"]), attempted
    assert applied["revision"] == second and applied["valid"]
    assert power(env, MACHINE) == "off"
    metrics = server.client.get("/metrics").text
    assert f'fleet_revision_info{{revision="{second}",valid="true",which="applied"}} 1.0' in metrics
    assert f'fleet_revision_info{{revision="{third}",valid="false",which="attempted"}} 1.0' in metrics
    observed = re.search(r'fleet_observe_duration_seconds_count\{kind="Machine"\} (\d+)', metrics)
    assert observed is not None and int(observed.group(1)) >= 2, "every batch's BMCs observed, timed"

    # The repo is valid again for the tests after this one (the lab keeps the machine off).
    set_power(repo, "off")
    push(env, "the typo fixed")
    assert server.stop() == 0, server.log.read_text()[-2000:]
    log = server.log.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert lines and all("replica" in line for line in lines)
    assert any(line.get("message", "").startswith("revision refused") for line in lines)
    # The API tokens are read by the controller and recorded nowhere.
    for canary in (OPS, DASHBOARDS):
        assert canary not in log
        with sqlite3.connect(env["FLEET_STATE"]) as db:
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
                assert canary not in json.dumps(db.execute(f"SELECT * FROM {table}").fetchall(), default=str)


def test_the_api_answers_only_the_right_tokens_and_roles(served: tuple[Served, dict[str, str]]) -> None:
    server, _ = served
    server.wait(lambda s: s["lastAppliedRevision"] is not None)
    assert server.client.get("/healthz").json() == {"status": "ok"}
    assert server.get("/api/v1/status", token=None).status_code == 401
    # A wrong token passes the kept status by, to the route, which says why.
    wrong = server.get("/api/v1/status", token="not-a-token")
    assert wrong.status_code == 401 and "not valid" in wrong.json()["detail"], wrong.text
    kept = server.get("/api/v1/status", token=OPS)
    assert kept.status_code == 200 and kept.headers["content-type"] == "application/json", kept.headers
    assert {"lastAppliedRevision", "resources", "queue", "replicas"} <= kept.json().keys()
    one = server.get(f"/api/v1/resources/machine/{MACHINE}")
    assert one.status_code == 200 and one.json()["file"] == MACHINES, one.text
    assert server.get("/api/v1/resources/machine/no-such-machine").status_code == 404
    listed = server.get("/api/v1/resources", token=DASHBOARDS).json()
    assert listed["total"] >= 35 and all(r["state"] for r in listed["items"])
    selected = server.get("/api/v1/resources?selector=team%3Dplatform-k8s&kind=Machine").json()
    assert 0 < selected["total"] < listed["total"]
    # The emergency path: the operator's token name is the audit's operator, the reason required.
    ops = {"Authorization": f"Bearer {OPS}"}
    body = {"targets": [f"machine/{MACHINE}"], "reason": "INC-42: check it now", "incident": "INC-42"}
    refused = server.client.post(
        "/api/v1/reconcile", json=body, headers={"Authorization": f"Bearer {DASHBOARDS}"}
    )
    assert refused.status_code == 403, refused.text
    answer = server.client.post("/api/v1/reconcile", json=body, headers=ops)
    assert answer.status_code == 202, answer.text
    run = server.get(f"/api/v1/runs/{answer.json()['run']}").json()
    assert (run["operator"], run["reason"], run["incident"], run["kind"]) == (
        "api:ops",
        "INC-42: check it now",
        "INC-42",
        "reconcile",
    ), run
    for bad, status in (
        ({"targets": [f"machine/{MACHINE}"]}, 422),  # no reason
        ({"targets": [f"machine/{MACHINE}"], "reason": "  "}, 422),
        ({"reason": "nothing named"}, 422),
        ({"targets": ["machine/no-such-machine"], "reason": "x"}, 400),
        ({"targets": [f"machine/{MACHINE}"], "reason": "x", "unknown": 1}, 422),
    ):
        answer = server.client.post("/api/v1/reconcile", json=bad, headers=ops)
        assert answer.status_code == status, (bad, answer.text)
    # The read role may look, not act; the operator may.
    assert (
        server.client.post("/api/v1/poll", headers={"Authorization": f"Bearer {DASHBOARDS}"}).status_code
        == 403
    )
    assert server.client.post("/api/v1/poll", headers={"Authorization": f"Bearer {OPS}"}).status_code == 202
    assert server.stop() == 0


def test_a_change_outside_its_window_waits_and_says_for_which_window(
    served: tuple[Served, dict[str, str]],
) -> None:
    server, env = served
    repo = Path(env["REPO"])
    server.wait(lambda s: s["lastAppliedRevision"] is not None)
    # A window three days from now: closed at the time this runs, whatever the time is.
    closed_day = DAYS[(datetime.now(UTC) + timedelta(days=3)).weekday()]
    window = {"name": "nyc1-later", "sites": ["nyc1"], "days": [closed_day], "start": "00:00", "end": "23:59"}
    edit(repo, "fleet.yaml", lambda f: f["spec"]["policies"].__setitem__("changeWindows", [window]))
    set_power(repo, "on")
    before = power(env, MACHINE)
    commit = push(env, "a change that must wait for its window")
    try:
        status = server.wait(lambda s: (s["lastAppliedRevision"] or {}).get("revision") == commit)
        assert status["resources"]["Machine"].get("waiting", 0) >= 1, status["resources"]
        waiting = server.get(f"/api/v1/resources/machine/{MACHINE}").json()
        assert waiting["state"] == "waiting" and "nyc1-later" in waiting["detail"], waiting
        assert power(env, MACHINE) == before
    finally:
        edit(repo, "fleet.yaml", lambda f: f["spec"]["policies"].__setitem__("changeWindows", []))
        push(env, "no windows again")
    assert server.stop() == 0
    assert os.path.exists(env["FLEET_STATE"])


@pytest.mark.parametrize("served", [("--drift-interval", "2")], indirect=True)
def test_drift_is_corrected_where_enforced_and_only_reported_where_observed(
    served: tuple[Served, dict[str, str]],
) -> None:
    server, env = served
    server.wait(lambda s: s["lastAppliedRevision"] is not None)
    enforced, observed = "nyc1-r03-02", "ldn1-r02-06"  # power is enforced in nyc1, observed in ldn1
    for name in (enforced, observed):
        lab_control(env, {"op": "set_power", "name": name, "power": "off"})  # behind fleet's back
    try:
        deadline = time.monotonic() + 120
        while power(env, enforced) != "on" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert power(env, enforced) == "on", "the next pass puts enforced power back"
        status = server.wait(lambda s: s["resources"]["Machine"].get("drifted", 0) >= 1)
        assert power(env, observed) == "off", "observed fields are reported, never changed"
        found = server.get(f"/api/v1/resources/machine/{observed}").json()
        assert found["state"] == "drifted", found
        assert found["detail"] == 'power: spec "on", live "off" (observed only)', found
        assert found["observation"]["fields"]["power"] == "off"
        corrected = server.get(f"/api/v1/resources/machine/{enforced}").json()
        assert corrected["state"] == "in sync" and corrected["actions"], corrected
        assert status["lastAppliedRevision"]["valid"]
    finally:
        lab_control(env, {"op": "set_power", "name": observed, "power": "on"})
    assert server.stop() == 0


def test_a_removed_spec_is_reported_orphaned_and_left_alone(served: tuple[Served, dict[str, str]]) -> None:
    """The default orphans policy is report: the machine stays as it is, and status says why."""
    server, env = served
    repo = Path(env["REPO"])
    gone, rack = "nyc1-r01-05", repo / "machines/nyc1/r01.yaml"
    server.wait(
        lambda s: s["lastAppliedRevision"] is not None and s["resources"]["Machine"].get("in sync", 0) >= 15
    )
    before = power(env, gone)
    original = rack.read_text()
    documents = original.split("\n---\n")
    kept = [d for d in documents if f"name: {gone}\n" not in d]
    assert len(kept) == len(documents) - 1
    rack.write_text("\n---\n".join(kept))
    removed = push(env, f"{gone} leaves the fleet")
    try:
        status = server.wait(
            lambda s: (
                (s["lastAppliedRevision"] or {}).get("revision") == removed
                and s["resources"]["Machine"].get("orphaned") == 1
            )
        )
        assert power(env, gone) == before, "an orphan is reported, never acted on by the controller"
        found = server.get("/api/v1/resources?state=orphaned").json()
        assert [r["address"] for r in found["items"]] == [f"machine/{gone}"], found
        assert "orphans policy is report" in found["items"][0]["detail"], found
        assert status["lastAppliedRevision"]["valid"]
    finally:
        rack.write_text(original)
        back = push(env, f"{gone} is back")
    server.wait(
        lambda s: (
            (s["lastAppliedRevision"] or {}).get("revision") == back
            and not s["resources"]["Machine"].get("orphaned")
        )
    )
    assert server.stop() == 0


def test_a_restart_marks_the_runs_a_killed_replica_left_open_interrupted(
    lab: dict[str, str], tmp_path: Path
) -> None:
    """What a SIGKILLed replica leaves: a run still `running` with an action pending and its
    leases expired. The next replica to start marks both interrupted; its passes then recompute
    from Git and live state, so nothing recorded as applied is applied again blindly."""
    env = {**_environment(lab, tmp_path), "FLEET_LEASE_TTL": "1"}
    with open_store(env["FLEET_STATE"]) as store:
        left = store.start_run("reconcile", "fleet-controller", reason="killed in the middle of an apply")
        store.start_action(left, f"machine/{MACHINE}", "power-on", None)
    time.sleep(1.5)  # longer than the lease TTL
    server = Served(env, tmp_path / "serve.log")
    try:
        server.wait(lambda s: s["lastAppliedRevision"] is not None)
        run = server.get(f"/api/v1/runs/{left}").json()
        assert run["status"] == "interrupted", run
        assert [a["result"] for a in run["actions"]] == ["interrupted"], run
        assert server.stop() == 0
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
    assert "marked interrupted" in server.log.read_text()


def test_a_resource_suspended_through_the_api_is_left_alone_until_resumed(
    served: tuple[Served, dict[str, str]],
) -> None:
    server, env = served
    repo = Path(env["REPO"])
    server.wait(lambda s: s["lastAppliedRevision"] is not None)
    ops = {"Authorization": f"Bearer {OPS}"}
    before = power(env, MACHINE)
    wanted = "on" if before == "off" else "off"
    assert (
        server.client.post(
            "/api/v1/suspend", json={"targets": [f"machine/{MACHINE}"]}, headers=ops
        ).status_code
        == 422
    )
    answer = server.client.post(
        "/api/v1/suspend",
        json={"targets": [f"machine/{MACHINE}"], "reason": "disk swap in progress"},
        headers=ops,
    )
    assert answer.status_code == 200 and answer.json()["changed"] == [f"machine/{MACHINE}"], answer.text
    set_power(repo, wanted)
    commit = push(env, "a change to a suspended machine")
    status = server.wait(lambda s: (s["lastAppliedRevision"] or {}).get("revision") == commit)
    assert status["resources"]["Machine"].get("suspended", 0) >= 1, status["resources"]
    held = server.get(f"/api/v1/resources/machine/{MACHINE}").json()
    assert held["state"] == "suspended" and "disk swap in progress" in held["detail"], held
    assert power(env, MACHINE) == before, "nothing is applied to a suspended resource"
    # An emergency reconcile of it is refused too, and says why.
    refused = server.client.post(
        "/api/v1/reconcile", json={"targets": [f"machine/{MACHINE}"], "reason": "now"}, headers=ops
    )
    assert refused.status_code == 409 and "suspended" in refused.text, refused.text

    resumed = server.client.post("/api/v1/resume", json={"targets": [f"machine/{MACHINE}"]}, headers=ops)
    assert resumed.status_code == 200, resumed.text
    deadline = time.monotonic() + 60
    while power(env, MACHINE) != wanted and time.monotonic() < deadline:
        time.sleep(0.2)
    assert power(env, MACHINE) == wanted, "a resumed resource is reconciled at once"
    runs = server.get("/api/v1/runs").json()["items"]
    assert {("suspend", "api:ops"), ("resume", "api:ops")} <= {(r["kind"], r["operator"]) for r in runs}
    assert server.stop() == 0


WEBHOOK_SECRET = "webhook-canary-secret-3d9e"


@pytest.mark.parametrize(
    "served", [("--poll-interval", "3600", "--repository-name", "acme/fleet")], indirect=True
)
def test_a_signed_push_webhook_is_applied_and_a_forged_one_changes_nothing(
    served: tuple[Served, dict[str, str]],
) -> None:
    """With polling an hour apart, only the webhook can bring the commit in: the secret comes
    from the Fleet's githubSecretRef (an environment variable the deployment sets)."""
    server, env = served
    repo = Path(env["REPO"])
    first = server.wait(lambda s: s["lastAppliedRevision"] is not None)["lastAppliedRevision"]["revision"]
    before = power(env, MACHINE)
    wanted = "on" if before == "off" else "off"
    set_power(repo, wanted)
    commit = push(env, "pushed, then announced by a webhook")
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "before": first,
            "after": commit,
            "repository": {"full_name": "acme/fleet", "clone_url": "https://github.com/acme/fleet.git"},
            "commits": [{"id": commit, "added": [], "removed": [], "modified": [MACHINES]}],
        }
    ).encode()

    def deliver(delivery: str, signature: str | None) -> httpx.Response:
        headers = {
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "Content-Type": "application/json",
        }
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        return server.client.post("/webhooks/github", content=body, headers=headers)

    forged = "sha256=" + hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest()
    assert deliver("d-forged", forged).status_code == 401
    assert deliver("d-unsigned", None).status_code == 401
    time.sleep(2)
    status = server.status()
    assert status["lastAttemptedRevision"]["revision"] == first, "a refused webhook fetches nothing"
    assert power(env, MACHINE) == before

    signed = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    accepted = deliver("d-1", signed)
    assert accepted.status_code == 202 and accepted.json()["result"] == "accepted", accepted.text
    server.wait(lambda s: (s["lastAppliedRevision"] or {}).get("revision") == commit)
    assert power(env, MACHINE) == wanted
    again = deliver("d-1", signed)
    assert again.status_code == 200 and again.json()["result"] == "duplicate", again.text
    metrics = server.client.get("/metrics").text
    assert 'fleet_webhook_deliveries_total{forge="github",result="accepted"} 1.0' in metrics
    assert 'fleet_webhook_deliveries_total{forge="github",result="unauthorized"} 2.0' in metrics
    assert server.stop() == 0
    assert WEBHOOK_SECRET not in server.log.read_text()


@pytest.mark.parametrize("served", [("--drift-interval", "2")], indirect=True)
def test_a_resource_that_keeps_failing_backs_off_and_says_when_it_is_tried_next(
    served: tuple[Served, dict[str, str]],
) -> None:
    server, env = served
    name = "nyc1-r03-03"  # on in its spec; its BMC now refuses to power it on
    # Passes follow each other every 2 s: wait for the first one's machines, not for a quiet queue.
    server.wait(lambda s: s["resources"].get("Machine", {}).get("in sync", 0) >= 20, idle=False)
    lab_control(env, {"op": "set_faults", "name": name, "faults": ["refuse-power-on"]})
    lab_control(env, {"op": "set_power", "name": name, "power": "off"})
    try:
        status = server.wait(
            lambda s: any(r["address"] == f"machine/{name}" for r in s["failing"]), idle=False
        )
        failing = next(r for r in status["failing"] if r["address"] == f"machine/{name}")
        assert failing["state"] == "failing" and failing["failures"] == 1 and failing["lastError"], failing
        next_try = datetime.fromisoformat(failing["nextTry"].replace("Z", "+00:00"))
        assert next_try > datetime.now(UTC) + timedelta(seconds=20), "the first retry waits 30 s"
        time.sleep(6)  # three more passes: it is not tried again before its time
        again = next(r for r in server.status()["failing"] if r["address"] == f"machine/{name}")
        assert again["failures"] == 1 and again["nextTry"] == failing["nextTry"], again
    finally:
        lab_control(env, {"op": "set_faults", "name": name, "faults": []})
        lab_control(env, {"op": "set_power", "name": name, "power": "on"})
    assert server.stop() == 0
