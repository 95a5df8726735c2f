"""The web UI of `fleet serve` over HTTP: sign-in and its session cookie, CSRF, the roles, the
security headers, escaping, and what the pages show. `fleet serve` follows a copy of the example
(its providers pointed at closed loopback ports, so every observation is quickly unknown) with a
real SQLite store, which the tests also read and, to give resources states, write."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from controller_testing import serving_offline
from fleet_testing import EXAMPLE, copy_example, example_documents
from ruamel.yaml import YAML

from reconciler.controller.queries import Filter, FleetView, place
from reconciler.controller.sessions import SessionBook, open_session
from reconciler.source.worktree import read_worktree
from reconciler.spec import models
from reconciler.spec.loader import load_revision
from reconciler.state import ResourceState, open_store

OPS = "ops-ui-canary-token-3f9a61"
DASHBOARDS = "dashboards-ui-canary-token-c27e"
CANARIES = (OPS, DASHBOARDS)
XSS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")
MARKED = "ldn1-r03-01"  # the Machine whose annotation and label carry the payloads
MARKED_FILE = "machines/ldn1/r03.yaml"
PAGES = ("/ui/", "/ui/racks/nyc1/r01", "/ui/resources/machine/nyc1-r01-01", "/ui/runs", "/ui/revisions")


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    repo: Path
    state: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, follow_redirects=False)

    def api(self, path: str, token: str = OPS, **kwargs: Any) -> httpx.Response:
        with self.client() as client:
            method = kwargs.pop("method", "GET")
            return client.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)

    def wait(self, condition: Callable[[dict[str, Any]], bool], timeout: float = 120) -> dict[str, Any]:
        """Until the status meets `condition` with nothing waiting or running."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            with contextlib.suppress(httpx.TransportError):
                answer = self.api("/api/v1/status")
                if answer.status_code == 200:
                    last = answer.json()
                    queue = last["queue"]
                    if condition(last) and not queue["running"] and not queue["depth"]:
                        return last
            time.sleep(0.2)
        raise AssertionError(f"the controller did not get there: {str(last)[:3000]}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`fleet serve` on a copy of the example, once its first pass is done."""
    directory = tmp_path_factory.mktemp("web-ui")
    work = copy_example(directory / "work")
    state = f"sqlite:///{directory / 'state.db'}"
    tokens = {"FLEET_API_TOKEN_OPS": OPS, "FLEET_API_TOKEN_DASHBOARDS": DASHBOARDS}
    with serving_offline(directory, work, 1, tokens) as (process, log, port):
        server = Served(f"http://127.0.0.1:{port}", process, log, work, state)
        server.wait(lambda status: status["lastAppliedRevision"] is not None)
        yield server
    text = log.read_text()
    for canary in CANARIES:
        assert canary not in text, "a token reached the controller's log"
    assert "Traceback" not in text, text[-3000:]


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


def sign_in(served: Served, token: str) -> httpx.Client:
    """A client holding a session of `token`, as a browser would after the sign-in form."""
    client = served.client()
    form = client.get("/ui/login")
    assert form.status_code == 200
    answer = client.post("/ui/login", data={"token": token, "csrf": _csrf(form.text), "next": "/ui/"})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/"
    return client


@contextlib.contextmanager
def signed_in(served: Served, token: str) -> Iterator[httpx.Client]:
    client = sign_in(served, token)
    try:
        yield client
    finally:
        client.close()


def _finished(served: Served, run_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        run: dict[str, Any] = served.api(f"/api/v1/runs/{run_id}").json()
        if run["status"] != "running" or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _suspended(served: Served) -> set[str]:
    with open_store(served.state) as store:
        return set(store.suspensions())


# --- sign-in ------------------------------------------------------------------------------------


def test_sign_in_sets_an_http_only_strict_cookie_that_holds_no_token_and_sign_out_ends_it(
    served: Served,
) -> None:
    with served.client() as client:
        form = client.get("/ui/login")
        answer = client.post("/ui/login", data={"token": OPS, "csrf": _csrf(form.text)})
        assert answer.status_code == 303
        cookie = next(
            v for k, v in answer.headers.multi_items() if k == "set-cookie" and "fleet_session=" in v
        )
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert "httponly" in flags
        assert "samesite=strict" in flags
        assert "path=/" in flags
        assert OPS not in cookie
        overview = client.get("/ui/")
        assert overview.status_code == 200
        assert "ops" in overview.text and "operator" in overview.text
        # The browser's fetches of the API carry the same session.
        assert client.get("/api/v1/status").status_code == 200
        kept = client.cookies["fleet_session"]  # a copy of the cookie, taken before signing out
        out = client.post("/ui/logout", data={"csrf": _csrf(overview.text)})
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        assert any("fleet_session=" in v and "Max-Age=0" in v for k, v in out.headers.multi_items())
        assert client.get("/ui/").status_code == 401
        assert client.get("/api/v1/status").status_code == 401
    # The session ended on the server, not only in the browser: the copy opens nothing either.
    with served.client() as copy:
        copy.cookies.set("fleet_session", kept)
        assert copy.get("/ui/").status_code == 401
        assert copy.get("/api/v1/status").status_code == 401
        assert copy.get("/ui/resources/machine/nyc1-r01-01").status_code == 401
    # Every replica refuses it: the store has the session's digest, never the cookie or its id.
    with open_store(served.state) as store:
        ended = store.ended_sessions()
    assert len(ended) >= 1
    assert all(len(digest) == 64 and digest not in kept for digest in ended)


def test_a_wrong_token_or_a_forged_sign_in_form_opens_no_session(served: Served) -> None:
    with served.client() as client:
        form = client.get("/ui/login")
        wrong = client.post("/ui/login", data={"token": OPS + "x", "csrf": _csrf(form.text)})
        assert wrong.status_code == 401
        assert "fleet_session" not in wrong.headers.get("set-cookie", "")
    with served.client() as client:  # no sign-in form was asked for: no nonce to match
        forged = client.post("/ui/login", data={"token": OPS, "csrf": "guessed"})
        assert forged.status_code == 403
        assert "fleet_session" not in forged.headers.get("set-cookie", "")


@pytest.mark.parametrize("path", PAGES)
def test_every_page_needs_a_session(served: Served, path: str) -> None:
    with served.client() as client:
        answer = client.get(path)
        assert answer.status_code == 401
        assert 'action="/ui/login"' in answer.text
        client.cookies.set("fleet_session", "bm9ib2R5fDk5OTk5OTk5OTl8eA.forged")
        assert client.get(path).status_code == 401


def test_a_session_cookie_changes_nothing_through_the_api_without_its_csrf_token(served: Served) -> None:
    before = _suspended(served)
    with signed_in(served, OPS) as client:
        body = {"targets": ["machine/nyc1-r03-01"], "reason": "csrf check"}
        assert client.post("/api/v1/suspend", json=body).status_code == 403
        assert client.post("/api/v1/suspend", json=body, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert _suspended(served) == before


# --- roles and CSRF -------------------------------------------------------------------------------


OPERATOR_FORMS = [
    ("/ui/suspend", {"targets": "machine/nyc1-r03-01", "reason": "role check"}),
    ("/ui/resume", {"targets": "machine/nyc1-r03-01", "reason": "role check"}),
    ("/ui/reconcile/preview", {"targets": "machine/nyc1-r03-01", "reason": "role check"}),
    ("/ui/reconcile", {"targets": "machine/nyc1-r03-01", "reason": "role check"}),
    ("/ui/approve", {"targets": "machine/nyc1-r03-01", "reason": "role check"}),
]


@pytest.mark.parametrize(("path", "form"), OPERATOR_FORMS, ids=[p for p, _ in OPERATOR_FORMS])
def test_the_read_role_is_refused_every_operator_form_and_nothing_changes(
    served: Served, path: str, form: dict[str, str]
) -> None:
    runs = len(served.api("/api/v1/runs?limit=500").json()["items"])
    before = _suspended(served)
    with signed_in(served, DASHBOARDS) as client:
        page = client.get("/ui/resources/machine/nyc1-r03-01")
        assert page.status_code == 200
        for control in ('action="/ui/suspend"', 'action="/ui/reconcile/preview"', 'action="/ui/approve"'):
            assert control not in page.text, "a read-only user is shown an operator control"
        answer = client.post(path, data={**form, "csrf": _csrf(page.text)})
        assert answer.status_code == 403
    assert _suspended(served) == before
    assert len(served.api("/api/v1/runs?limit=500").json()["items"]) == runs


@pytest.mark.parametrize("csrf", [None, "", "wrong-token"], ids=["missing", "empty", "wrong"])
def test_an_operator_form_without_its_csrf_token_is_refused(served: Served, csrf: str | None) -> None:
    before = _suspended(served)
    with signed_in(served, OPS) as client:
        form = {"targets": "machine/nyc1-r03-01", "reason": "csrf check"}
        if csrf is not None:
            form["csrf"] = csrf
        for path in ("/ui/suspend", "/ui/reconcile/preview", "/ui/approve", "/ui/logout"):
            assert client.post(path, data=form).status_code == 403, path
        assert client.get("/ui/").status_code == 200, "the refused logout ended the session"
    assert _suspended(served) == before


# --- operator actions -------------------------------------------------------------------------------


def test_an_operator_suspends_and_resumes_through_the_ui_recorded_with_who_and_why(served: Served) -> None:
    address = "machine/nyc1-r04-01"
    with signed_in(served, OPS) as client:
        page = client.get(f"/ui/resources/{address}")
        assert 'action="/ui/suspend"' in page.text
        done = client.post(
            "/ui/suspend", data={"targets": address, "reason": "INC-77: disk swap", "csrf": _csrf(page.text)}
        )
        assert done.status_code == 200, done.text
        assert address in done.text
        with open_store(served.state) as store:
            suspension = store.suspensions([address])[address]
            assert (suspension.operator, suspension.reason) == ("api:ops", "INC-77: disk swap")
            run = store.get_run(suspension.run_id or 0)
            assert run is not None and run.operator == "api:ops" and run.reason == "INC-77: disk swap"
        page = client.get(f"/ui/resources/{address}")
        assert "INC-77: disk swap" in page.text and 'action="/ui/resume"' in page.text
        done = client.post(
            "/ui/resume", data={"targets": address, "reason": "swapped", "csrf": _csrf(page.text)}
        )
        assert done.status_code == 200, done.text
    assert address not in _suspended(served)
    resumes = [r for r in served.api("/api/v1/runs?limit=50").json()["items"] if r["kind"] == "resume"]
    assert resumes[0]["operator"] == "api:ops" and resumes[0]["reason"] == "swapped"


def test_the_emergency_reconcile_shows_its_plan_before_it_runs_and_approval_records_who(
    served: Served,
) -> None:
    address = "machine/nyc1-r04-02"
    with signed_in(served, OPS) as client:
        page = client.get("/ui/runs")
        preview = client.post(
            "/ui/reconcile/preview", data={"targets": address, "reason": "INC-78", "csrf": _csrf(page.text)}
        )
        assert preview.status_code == 200, preview.text
        assert "fleet reconcile --now: the plan" in preview.text
        fingerprint = re.search(r'name="fingerprint" value="([^"]+)"', preview.text)
        assert fingerprint and 'action="/ui/reconcile"' in preview.text
        runs = served.api("/api/v1/runs?limit=500").json()["items"]
        assert not any(r["reason"] == "INC-78" for r in runs), "the preview ran something"
        done = client.post(
            "/ui/reconcile",
            data={
                "targets": address,
                "reason": "INC-78",
                "fingerprint": fingerprint.group(1),
                "csrf": _csrf(preview.text),
            },
        )
        assert done.status_code == 303, done.text
        run_page = client.get(done.headers["location"])
        assert run_page.status_code == 200 and "INC-78" in run_page.text
        # Approval of a plan over the blast radius: the run records who approved.
        approved = client.post(
            "/ui/approve", data={"targets": address, "reason": "CAB-12", "csrf": _csrf(page.text)}
        )
        assert approved.status_code == 303, approved.text
        run_id = int(approved.headers["location"].rsplit("/", 1)[1])
        run = _finished(served, run_id)
        assert "Approved by" in client.get(f"/ui/runs/{run_id}").text
    assert run["operator"] == "api:ops"
    assert run["summary"]["approvedBy"] == "api:ops"
    assert "CAB-12" in run["reason"]
    # The API answers the same, to a bearer token; the read role is refused.
    assert served.api("/api/v1/plan", method="POST", json={"targets": [address]}).status_code == 200
    refused = served.api(
        "/api/v1/approve", DASHBOARDS, method="POST", json={"targets": [address], "reason": "no"}
    )
    assert refused.status_code == 403


# --- what the pages show -------------------------------------------------------------------------


@pytest.mark.parametrize("path", (*PAGES, "/ui/login", "/ui/runs/1"))
def test_every_ui_page_carries_the_security_headers(served: Served, path: str) -> None:
    with signed_in(served, DASHBOARDS) as client:
        answer = client.get(path)
    assert answer.status_code in (200, 303, 404)
    policy = answer.headers["content-security-policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ):
        assert directive in policy
    assert "unsafe-inline" not in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"]
    assert "<script>" not in answer.text and " style=" not in answer.text, "an inline script or style"
    assert answer.headers["cache-control"] == "no-store"


def test_the_api_and_static_files_answer_without_the_pages_headers(served: Served) -> None:
    with signed_in(served, DASHBOARDS) as client:
        api = client.get("/api/v1/status")
        script = client.get("/ui/static/fleet.js")
    assert api.status_code == 200 and "content-security-policy" not in api.headers
    assert script.status_code == 200 and "content-security-policy" in script.headers
    assert script.headers.get("cache-control") != "no-store", "static files may be cached"


def test_the_overview_counts_each_rack_by_state_and_the_rack_nests_vms_under_hosts(served: Served) -> None:
    documents = example_documents()
    machines = [d for d in documents if isinstance(d, models.Machine)]
    chosen = {
        "machine/nyc1-r02-01": "drifted",
        "machine/nyc1-r02-02": "failing",
        "machine/ldn1-r01-01": "waiting",
    }
    with open_store(served.state) as store:
        store.save_resource_states(
            ResourceState(a, "Machine", s, "set by the test") for a, s in chosen.items()
        )
    with signed_in(served, DASHBOARDS) as client:
        deadline = time.monotonic() + 10
        while True:  # the overview's states are at most a second old
            overview = served.api("/api/v1/overview", DASHBOARDS).json()
            sites = {s["name"]: s for s in overview["sites"]}
            racks = {r["name"]: r for r in sites["nyc1"]["racks"]}
            if racks["r02"]["counts"].get("failing") == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for site in ("nyc1", "ldn1"):
            expected: dict[str, int] = {}
            for machine in machines:
                if machine.spec.site == site:
                    expected[machine.spec.rack] = expected.get(machine.spec.rack, 0) + 1
            found = {r["name"]: r for r in sites[site]["racks"]}
            for rack, count in expected.items():
                assert found[rack]["total"] >= count  # its VMs count in it too
        assert racks["r02"]["counts"]["drifted"] == 1 and racks["r02"]["counts"]["failing"] == 1
        page = client.get("/ui/").text
        assert '<section class="site" data-site="nyc1"' in page
        tile = re.search(
            r'<a class="rack" data-rack="nyc1/r02" href="/ui/racks/nyc1/r02">(.*?)</a>', page, re.S
        )
        assert tile, "no tile for rack nyc1/r02"
        assert 'title="drifted">≠1</i>' in tile.group(1) and 'title="failing">✗1</i>' in tile.group(1)
        rack = client.get("/ui/racks/nyc1/r02").text
        assert 'data-address="machine/nyc1-r02-01" data-state="drifted"' in rack
        assert 'title="machine/nyc1-r02-01: drifted"' in rack
        hypervisor = client.get("/ui/racks/nyc1/r01").text
        vms = [d for d in documents if isinstance(d, models.VirtualMachine) and d.spec.host == "nyc1-r01-01"]
        assert vms, "the example has VMs on nyc1-r01-01"
        host = hypervisor.index('data-address="machine/nyc1-r01-01"')
        nested = hypervisor[host : hypervisor.index("</div></div>", host)]
        for vm in vms:
            assert f'data-address="virtualmachine/{vm.metadata.name}"' in nested
        assert 'data-address="sparkpool/' in client.get("/ui/racks/-/-").text


def test_the_filter_lives_in_the_url_and_narrows_the_overview(served: Served) -> None:
    with signed_in(served, DASHBOARDS) as client:
        page = client.get("/ui/", params={"kind": "Machine", "site": "ldn1", "selector": "team", "q": "r01"})
        assert page.status_code == 200
        assert '<option value="Machine" selected>' in page.text
        assert 'name="site" value="ldn1"' in page.text and 'name="q" type="search" value="r01"' in page.text
        assert 'data-site="nyc1"' not in page.text
        racks = re.findall(r'data-rack="([^"]+)"', page.text)
        assert racks == ["ldn1/r01"]
        assert 'href="/ui/?kind=Machine&amp;site=ldn1&amp;selector=team&amp;q=r01"' in page.text
        assert client.get("/ui/", params={"selector": "a in (b"}).status_code == 400
    answer = served.api("/api/v1/overview?kind=Machine&site=ldn1&selector=team&q=r01", DASHBOARDS).json()
    assert [s["name"] for s in answer["sites"]] == ["ldn1"]


def test_a_resource_page_shows_spec_file_observation_drift_actions_lease_and_suspension(
    served: Served,
) -> None:
    with signed_in(served, DASHBOARDS) as client:
        page = client.get("/ui/resources/machine/nyc1-r01-01").text
    for section in ("spec", "observation", "drift", "actions", "lease", "suspension"):
        assert f'id="{section}"' in page
    assert "machines/nyc1/r01.yaml:8" in page  # the document starts after the comments and `---`
    assert "Enforced:" in page and "<code>power</code>" in page


def _edit_marked(repo: Path, change: Callable[[Any], None]) -> None:
    yaml = YAML()
    target = repo / MARKED_FILE
    documents = list(yaml.load_all(target.read_text()))
    for document in documents:
        if document["metadata"]["name"] == MARKED:
            change(document)
    with target.open("w") as handle:
        yaml.dump_all(documents, handle)


def test_markup_in_specs_and_diagnostics_is_escaped_and_an_invalid_revision_shows_its_diagnostics(
    served: Served,
) -> None:
    original = (served.repo / MARKED_FILE).read_text()
    before = served.api("/api/v1/status").json()["lastAppliedRevision"]["revision"]
    _edit_marked(
        served.repo, lambda d: d["metadata"].setdefault("annotations", {}).update(note=" ".join(XSS))
    )
    served.wait(lambda s: s["lastAppliedRevision"]["revision"] != before)
    try:
        with signed_in(served, DASHBOARDS) as client:
            page = client.get(f"/ui/resources/machine/{MARKED}").text
            echoed = client.get("/ui/", params={"q": XSS[0], "selector": XSS[1]}).text
        for payload in XSS:
            assert payload not in page and payload not in echoed
        assert "alert(1)" in page  # shown, as text
        _edit_marked(served.repo, lambda d: d["metadata"]["labels"].update(note=XSS[0], other=XSS[1]))
        status = served.wait(lambda s: not s["lastAttemptedRevision"]["valid"])
        assert status["lastAppliedRevision"]["revision"] != status["lastAttemptedRevision"]["revision"]
        with signed_in(served, DASHBOARDS) as client:
            page = client.get("/ui/revisions").text
            resource = client.get(f"/ui/resources/machine/{MARKED}").text
        assert "invalid" in page and f"{MARKED_FILE}:" in page
        assert re.search(re.escape(MARKED_FILE) + r":\d+", page), "the diagnostics name file and line"
        for payload in XSS:
            assert payload not in page and payload not in resource
    finally:
        (served.repo / MARKED_FILE).write_text(original)
        served.wait(lambda s: s["lastAttemptedRevision"]["valid"])


# --- the overview's counts, kept between looks -------------------------------------------------------


class _InForce:
    """What the overview asks of the controller: the revision in force."""

    def __init__(self, loaded: Any) -> None:
        self.loaded = loaded

    def revision_in_force(self) -> tuple[str, None, Any]:
        return "revision-1", None, self.loaded

    def spec_files(self) -> tuple[str, dict[str, bytes]]:
        return "revision-1", {}


def test_the_overview_counts_follow_each_saved_state_as_a_full_count_would(tmp_path: Path) -> None:
    loaded = load_revision(read_worktree(EXAMPLE))
    placed = place(loaded)
    with open_store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        store.keep_resource_states({address: p.kind for address, p in placed.items()})
        view = FleetView(_InForce(loaded), store, states_kept=0)  # type: ignore[arg-type]

        def counted_again() -> dict[str, dict[str, dict[str, int]]]:
            counts: dict[str, dict[str, dict[str, int]]] = {}
            for address, resource in store.resource_states().items():
                state = resource.state
                where = placed.get(address)
                site, rack = (where.site, where.rack) if where else ("-", "-")
                bucket = counts.setdefault(site, {}).setdefault(rack, {})
                bucket[state] = bucket.get(state, 0) + 1
            return counts

        def shown() -> dict[str, dict[str, dict[str, int]]]:
            answer = view.overview(Filter())
            return {s["name"]: {r["name"]: r["counts"] for r in s["racks"]} for s in answer["sites"]}

        assert shown() == counted_again()
        machines = sorted(a for a, p in placed.items() if p.kind == "Machine")
        steps: list[Callable[[], None]] = [
            lambda: store.save_resource_states(ResourceState(a, "Machine", "drifted") for a in machines[:5]),
            lambda: store.save_resource_states(ResourceState(a, "Machine", "failing") for a in machines[3:8]),
            lambda: store.save_resource_states([ResourceState(machines[0], "Machine", "in sync")]),
            # A resource leaves and an orphan (no spec, no rack) appears: both are counted.
            lambda: store.keep_resource_states(
                {**{a: p.kind for a, p in placed.items() if a != machines[1]}, "machine/gone-01": "Machine"}
            ),
        ]
        for step in steps:
            step()
            assert shown() == counted_again()
        assert view.overview(Filter())["matched"] == len(store.resource_states())


class _CountedReads:
    """The store, counting the rows each overview look reads back."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.rows: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def resource_state_changes(self, since: Any = None) -> Any:
        answer = self.store.resource_state_changes(since)
        self.rows.append(len(answer[0]))
        return answer


def test_a_look_at_a_quiet_fleet_reads_no_state_again(tmp_path: Path) -> None:
    loaded = load_revision(read_worktree(EXAMPLE))
    placed = place(loaded)
    machines = sorted(a for a, p in placed.items() if p.kind == "Machine")
    with open_store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        store.keep_resource_states({address: p.kind for address, p in placed.items()})
        counted = _CountedReads(store)
        view = FleetView(
            _InForce(loaded),  # type: ignore[arg-type]
            counted,  # type: ignore[arg-type]
            states_kept=0,
            overlap=timedelta(seconds=0.2),
        )
        assert view.overview(Filter())["matched"] == len(placed)
        assert counted.rows == [len(placed)]  # the first look reads every state
        time.sleep(0.3)  # past the overlap: the next look reads again what was saved near the last
        view.overview(Filter())
        store.save_resource_states(ResourceState(a, "Machine", "drifted") for a in machines[:3])
        assert view.overview(Filter())["counts"]["drifted"] == 3
        assert counted.rows[-1] == 3  # then only what was saved since
        time.sleep(0.3)  # past the overlap: the looks before saw everything saved until then
        view.overview(Filter())
        time.sleep(0.3)
        view.overview(Filter())
        assert counted.rows[-1] == 0, counted.rows
        store.save_resource_states([ResourceState(machines[0], "Machine", "in sync")])
        answer = view.overview(Filter())
        assert counted.rows[-1] == 1 and answer["counts"]["drifted"] == 2


def test_a_session_signed_out_on_one_replica_is_refused_by_the_others(tmp_path: Path) -> None:
    """Two replicas' session books over one store: a session ended on one is refused there at once,
    and by the other from its next read of the store; other sessions stay open."""
    tokens = {OPS: ("ops", "operator"), DASHBOARDS: ("dashboards", "read")}
    with open_store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        here = SessionBook(lambda: tokens, store, every=0.1)
        there = SessionBook(lambda: tokens, store, every=0.1)  # each asks for `tokens` as it is now
        opened = [open_session(tokens, token, time.time()) for token in (OPS, DASHBOARDS)]
        assert all(o is not None for o in opened)
        (ending, session), (staying, _) = opened  # type: ignore[misc]
        assert here.read(ending) == session and there.read(ending) == session
        here.end(session)
        assert here.read(ending) is None, "the replica that signed it out still takes it"
        deadline = time.monotonic() + 10
        while there.read(ending) is not None:
            assert time.monotonic() < deadline, "the other replica never refused the ended session"
            time.sleep(0.05)
        assert here.read(staying) is not None and there.read(staying) is not None
        # A replica started later reads the ended sessions before it takes any.
        assert SessionBook(lambda: tokens, store).read(ending) is None
        assert store.ended_sessions() == {session.digest}
        assert ending.split(".")[0] not in session.digest
        # A checked cookie is checked again once the tokens are read again: a rotated token's
        # sessions end, and a forged copy of a checked cookie was never checked.
        assert there.read(staying) is not None
        tokens = {OPS: ("ops", "operator"), "rotated-dashboards-token": ("dashboards", "read")}
        assert there.read(staying) is None
        payload, _, signature = staying.partition(".")
        assert there.read(f"{payload}.{signature[::-1]}") is None
