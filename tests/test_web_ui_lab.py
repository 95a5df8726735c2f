"""The web UI's approval against the lab: a change over the blast radius waits, an operator sees
it, reviews its plan and approves it in the browser's forms, and it is applied, recorded with who
approved."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from controller_testing import DASHBOARDS, MACHINE, OPS, Served, bare_lab, edit, power, push, set_power

pytestmark = pytest.mark.slow  # a lab suite: left out of `make test-quick`

LAB_SUBNET = 81


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with bare_lab(
        tmp_path_factory.mktemp("web-ui-lab"), LAB_SUBNET, "--transition-seconds", "0.1"
    ) as running:
        yield running


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


def _blast_radius(limit: int) -> Any:
    return lambda fleet: fleet["spec"]["policies"]["blastRadius"].__setitem__("maxPowerOffsPerRun", limit)


def test_an_operator_approves_a_plan_that_waits_on_the_blast_radius(
    lab: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **lab,
        "FLEET_STATE": str(tmp_path / "state.db"),
        "FLEET_API_TOKEN_OPS": OPS,
        "FLEET_API_TOKEN_DASHBOARDS": DASHBOARDS,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    repo = Path(env["REPO"])
    address = f"machine/{MACHINE}"
    server = Served(env, tmp_path / "serve.log")
    try:
        server.wait(lambda s: s["lastAppliedRevision"] is not None)
        assert power(env, MACHINE) == "on"
        edit(repo, "fleet.yaml", _blast_radius(0))
        set_power(repo, "off")
        commit = push(env, "a power-off over the blast radius")
        server.wait(
            lambda s: (
                (s["lastAppliedRevision"] or {}).get("revision") == commit
                and s["resources"]["Machine"].get("waiting", 0) >= 1
            )
        )
        waiting = server.get(f"/api/v1/resources/{address}").json()
        assert waiting["state"] == "waiting" and "blastRadius" in waiting["detail"], waiting
        assert power(env, MACHINE) == "on"

        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as browser:
            form = browser.get("/ui/login")
            assert browser.post("/ui/login", data={"token": OPS, "csrf": _csrf(form.text)}).status_code == 303
            runs = browser.get("/ui/runs").text
            approvals = runs[runs.index('id="approvals"') : runs.index('id="emergency"')]
            assert address in approvals and 'name="mode" value="approve"' in approvals
            preview = browser.post(
                "/ui/reconcile/preview",
                data={
                    "mode": "approve",
                    "targets": address,
                    "reason": "CAB-7: rack work",
                    "csrf": _csrf(runs),
                },
            )
            assert preview.status_code == 200, preview.text
            assert 'action="/ui/approve"' in preview.text and MACHINE in preview.text
            fingerprint = re.search(r'name="fingerprint" value="([^"]+)"', preview.text)
            assert fingerprint
            done = browser.post(
                "/ui/approve",
                data={
                    "targets": address,
                    "reason": "CAB-7: rack work",
                    "fingerprint": fingerprint.group(1),
                    "csrf": _csrf(preview.text),
                },
            )
            assert done.status_code == 303, done.text
            run_id = int(done.headers["location"].rsplit("/", 1)[1])

        deadline = time.monotonic() + 60
        while power(env, MACHINE) != "off" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert power(env, MACHINE) == "off", "the approved plan was applied"
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = server.get(f"/api/v1/runs/{run_id}").json()
            if run["status"] != "running":
                break
            time.sleep(0.2)
        assert run["status"] == "succeeded", run
        assert run["operator"] == "api:ops" and run["summary"]["approvedBy"] == "api:ops"
        assert "CAB-7: rack work" in run["reason"]
        assert [a["address"] for a in run["actions"]] == [address]
    finally:
        edit(repo, "fleet.yaml", _blast_radius(4))
        set_power(repo, "on")
        push(env, "back as it was")
    assert server.stop() == 0
