"""The forge layer (`reconciler.vcs`) against local GitHub and GitLab API servers over real HTTP:
the sticky comment (paginated, raced), statuses, drift pull requests, issues, rate limits, errors
and what they never show, GitHub App authentication, and the write pacer."""

from __future__ import annotations

import itertools
import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from forge_servers import (
    Answer,
    GitHubServer,
    GitLabServer,
    github_server,
    gitlab_rate_limit,
    gitlab_server,
    make_github_app,
    primary_rate_limit,
    secondary_rate_limit,
    server_error,
)
from githubkit_schemas.latest import models
from pydantic import TypeAdapter

from reconciler import vcs
from reconciler.errors import PermanentError, TemporaryError
from reconciler.vcs import Forge, Limits, Secret, WritePacer

MARKER = "<!-- fleet:plan -->"
SHA = "3f786850e387550fdab836ed7e6dc881de23001b"
FAST = Limits(write_interval=0, max_wait=5, retries=2, timeout=10)


def check_github_shapes(server: GitHubServer) -> None:
    """Every answer the GitHub server gave parses as the githubkit model it names (and every
    successful JSON answer names one), so a wrong shape fails here rather than hides."""
    for request in server.requests:
        if request.injected and request.schema is None:
            continue
        if request.schema is None:
            assert request.status == 204 or request.status >= 500, request
            continue
        many = request.schema.startswith("list[")
        model = getattr(models, request.schema[5:-1] if many else request.schema)
        TypeAdapter(list[model] if many else model).validate_python(request.body)


@dataclass
class Site:
    """One local forge and how the tests reach into it, the same way for both forges."""

    kind: str
    server: GitHubServer | GitLabServer

    def forge(self, *, limits: Limits = FAST, pacer: WritePacer | None = None, **auth: Any) -> Forge:
        pacer = pacer or WritePacer()
        if isinstance(self.server, GitHubServer):
            auth = auth or {"token": Secret(self.server.token)}
            return vcs.github("acme/fleet", base_url=self.server.url, limits=limits, pacer=pacer, **auth)
        token = auth.get("token", Secret(self.server.token))
        return vcs.gitlab("acme/fleet", token=token, base_url=self.server.url, limits=limits, pacer=pacer)

    def add_pull(self, head: str = "feature") -> int:
        if isinstance(self.server, GitHubServer):
            return self.server.add_pull(head)
        return self.server.add_merge_request(head)

    def add_comment(self, pr: int, body: str) -> int:
        if isinstance(self.server, GitHubServer):
            return self.server.add_comment(pr, body)
        return self.server.add_note(pr, body)

    def comments(self, pr: int) -> list[dict[str, Any]]:
        if isinstance(self.server, GitHubServer):
            return sorted(self.server.comments_on(pr), key=lambda c: c["id"])
        return sorted(self.server.notes_on(pr), key=lambda c: c["id"])

    def marked(self, pr: int) -> list[dict[str, Any]]:
        return [c for c in self.comments(pr) if c["body"].startswith(MARKER)]

    @property
    def comment_list(self) -> str:
        return r"/(issues|merge_requests)/\d+/(comments|notes)$"

    @property
    def status_path(self) -> str:
        return r"/statuses/"


@pytest.fixture(params=["github", "gitlab"])
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    if request.param == "github":
        with github_server() as server:
            yield Site("github", server)
            check_github_shapes(server)
    else:
        with gitlab_server() as server:
            yield Site("gitlab", server)


@pytest.fixture
def github() -> Iterator[GitHubServer]:
    with github_server() as server:
        yield server
        check_github_shapes(server)


@pytest.fixture
def gitlab() -> Iterator[GitLabServer]:
    with gitlab_server() as server:
        yield server


# -- the sticky comment


def test_one_sticky_comment_is_edited_in_place_and_found_again_on_page_two(site: Site) -> None:
    pr = site.add_pull()
    for number in range(150):
        site.add_comment(pr, f"a reviewer's comment {number}")
    forge = site.forge()

    first = forge.upsert_comment(pr, "plan: 1 to add", MARKER)
    assert first.action == "created"
    # Two list pages, the create, and two list pages again to catch a racing run.
    assert first.api_calls == 5 == len(site.server.calls())
    assert len(site.server.calls("GET", site.comment_list)) == 4

    for number, body in enumerate(["plan: 2 to add", "plan: 3 to add"], start=2):
        site.server.forget()
        again = forge.upsert_comment(pr, body, MARKER)
        assert (again.id, again.action, again.url) == (first.id, "updated", first.url)
        # The marker comment is the 151st: found on page 2; then one update, nothing else.
        pages = site.server.calls("GET", site.comment_list)
        assert [p.query.get("page", ["1"])[-1] for p in pages] == ["1", "2"]
        assert again.api_calls == len(pages) + 1 == len(site.server.calls()) == 3
        assert [r.method for r in site.server.calls() if r.method != "GET"] in (["PATCH"], ["PUT"])
        assert [c["body"] for c in site.marked(pr)] == [f"{MARKER}\n{body}"], f"upsert {number}"

    site.server.forget()
    same = forge.upsert_comment(pr, "plan: 3 to add", MARKER)
    assert (same.id, same.action, same.api_calls) == (first.id, "unchanged", 2)
    assert len(site.comments(pr)) == 151


def test_a_quote_of_the_marker_is_not_fleets_comment(site: Site) -> None:
    pr = site.add_pull()
    site.add_comment(pr, f"> {MARKER}\n> the old plan\n\nwhy?")
    done = site.forge().upsert_comment(pr, "the plan", MARKER)
    assert done.action == "created"
    assert len(site.marked(pr)) == 1 and len(site.comments(pr)) == 2


def test_racing_upserts_leave_exactly_one_comment(site: Site) -> None:
    pr = site.add_pull()
    # Both runs list before either creates, so both create one.
    site.server.gate(2, method="GET", path=site.comment_list)
    forges = [site.forge(), site.forge()]
    start = threading.Barrier(2)
    results: dict[int, Any] = {}

    def run(index: int) -> None:
        start.wait(10)
        try:
            results[index] = forges[index].upsert_comment(pr, f"plan from run {index}", MARKER)
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert all(isinstance(result, vcs.CommentResult) for result in results.values()), results
    assert len(site.server.calls("POST", site.comment_list)) == 2
    kept = site.marked(pr)
    assert len(kept) == 1
    assert {result.id for result in results.values()} == {kept[0]["id"]}
    assert sum(result.duplicates_removed for result in results.values()) == 1
    assert len(site.server.calls("DELETE")) == 1


def test_a_body_longer_than_the_forge_takes_is_refused_before_asking(site: Site) -> None:
    forge = site.forge()
    too_long = "x" * forge.max_body_chars
    with pytest.raises(PermanentError, match="characters long") as caught:
        forge.upsert_comment(1, too_long, MARKER)
    assert caught.value.hint and "max_body_chars" in caught.value.hint
    with pytest.raises(PermanentError, match="characters long"):
        forge.open_issue("Drift", too_long + "x")
    assert site.server.calls() == []


def test_a_marker_must_be_one_hidden_html_comment(site: Site) -> None:
    forge = site.forge()
    for marker in ["fleet:plan", "<!-- two\nlines -->", "<!-- a -- b -->", ""]:
        with pytest.raises(ValueError, match="HTML comment"):
            forge.upsert_comment(1, "body", marker)
    assert site.server.calls() == []


@pytest.mark.parametrize("project", ["infra/platform/fleet", 42], ids=["subgroup-path", "numeric-id"])
def test_gitlab_projects_are_reached_by_path_or_id(project: str | int) -> None:
    with gitlab_server(path="infra/platform/fleet", project_id=42) as server:
        mr = server.add_merge_request()
        forge = vcs.gitlab(project, token=server.token, base_url=server.url, limits=FAST, pacer=WritePacer())
        done = forge.upsert_comment(mr, "plan", MARKER)
        expected = "infra%2Fplatform%2Ffleet" if isinstance(project, str) else "42"
        assert {r.path.split("/")[4] for r in server.requests} == {expected}
        # A note's link needs the project's path, which a numeric id does not tell.
        assert done.url == (
            None
            if isinstance(project, int)
            else f"{server.url}/infra/platform/fleet/-/merge_requests/{mr}#note_{done.id}"
        )


# -- statuses


@pytest.mark.parametrize(
    ("state", "on_gitlab"),
    [("success", "success"), ("failure", "failed"), ("pending", "pending"), ("error", "failed")],
    ids=["success", "failure-is-failed-on-gitlab", "pending", "error-is-failed-on-gitlab"],
)
def test_statuses_are_set_with_the_forges_state_names(
    site: Site, state: vcs.StatusState, on_gitlab: str
) -> None:
    forge = site.forge()
    long = "3 to add, 1 to change " * 20
    result = forge.set_status(
        SHA, state, long, context="fleet/plan", target_url="https://fleet.example/runs/7"
    )
    expected = state if site.kind == "github" else on_gitlab
    assert (result.state, result.forge_state, result.api_calls) == (state, expected, 1)
    [status] = site.server.statuses[SHA]
    assert status["state" if site.kind == "github" else "status"] == expected
    assert status["context" if site.kind == "github" else "name"] == "fleet/plan"
    assert status["target_url"] == "https://fleet.example/runs/7"
    assert len(status["description"]) <= 140 and status["description"].startswith("3 to add, 1 to change")


def test_an_unknown_status_state_is_refused_before_asking(site: Site) -> None:
    with pytest.raises(ValueError, match="success, failure, pending, error"):
        site.forge().set_status(SHA, "failed", "no")  # type: ignore[arg-type]
    assert site.server.calls() == []


# -- drift pull requests and issues


def test_drift_pull_request_is_opened_found_updated_and_closed_with_a_comment(site: Site) -> None:
    forge = site.forge()
    assert forge.find_pull("fleet/drift-nyc1") is None
    opened = forge.open_pull("fleet/drift-nyc1", "main", "Adopt drift in nyc1", "3 machines drifted")
    assert (opened.state, opened.head, opened.base, opened.title) == (
        "open",
        "fleet/drift-nyc1",
        "main",
        "Adopt drift in nyc1",
    )
    assert forge.find_pull("fleet/drift-nyc1") == opened
    assert forge.find_pull("fleet/other") is None

    updated = forge.update_pull(opened.number, body="4 machines drifted")
    assert (updated.number, updated.title, updated.body) == (
        opened.number,
        opened.title,
        "4 machines drifted",
    )

    with pytest.raises(PermanentError, match="acme/fleet") as refused:
        forge.open_pull("fleet/drift-nyc1", "main", "Again", "twice")
    assert "already exists" in str(refused.value)

    closed = forge.close_pull(opened.number, comment="The drift was reverted by enforcement.")
    assert closed.state == "closed"
    assert [c["body"] for c in site.comments(opened.number)] == ["The drift was reverted by enforcement."]
    assert forge.find_pull("fleet/drift-nyc1") is None


def test_drift_issue_is_opened_found_by_marker_updated_and_closed(site: Site) -> None:
    forge = site.forge()
    marker = "<!-- fleet:drift nyc1 -->"
    # GitHub lists pull requests among issues: one that quotes the marker is not the issue.
    forge.open_pull("fleet/drift-nyc1", "main", "Adopt drift", f"{marker}\nadopts it")
    other = forge.open_issue("Someone's issue", "not fleet's", ["drift"])
    opened = forge.open_issue("Drift in nyc1", f"{marker}\n3 machines drifted", ["drift", "fleet"])
    assert (opened.state, opened.labels) == ("open", ("drift", "fleet"))
    assert forge.find_issue(marker) == opened
    assert forge.find_issue(marker, ["drift"]) == opened
    assert forge.find_issue(marker, ["security"]) is None
    assert forge.find_issue("<!-- fleet:drift lon1 -->") is None

    updated = forge.update_issue(opened.number, title="Drift in nyc1 (4 machines)")
    assert (updated.title, updated.body) == ("Drift in nyc1 (4 machines)", opened.body)
    closed = forge.close_issue(opened.number, comment="Adopted in !12")
    assert closed.state == "closed"
    assert forge.find_issue(marker) is None
    assert forge.update_issue(other.number, body="still open").state == "open"


# -- rate limits


@pytest.mark.parametrize(
    ("answer", "method", "why"),
    [
        (primary_rate_limit(reset_in=1), "GET", "primary: 403, x-ratelimit-remaining 0, x-ratelimit-reset"),
        (secondary_rate_limit(retry_after=1, status=403), "PATCH", "secondary: 403 with Retry-After"),
        (secondary_rate_limit(retry_after=1, status=429), "POST", "secondary: 429 with Retry-After"),
    ],
    ids=["primary", "secondary-403", "secondary-429"],
)
def test_github_rate_limits_are_waited_out(
    github: GitHubServer, answer: Callable[[float], Any], method: str, why: str
) -> None:
    pr = github.add_pull()
    github.add_comment(pr, f"{MARKER}\nold plan")
    github.fail(answer, method=method)
    forge = Site("github", github).forge()
    if method == "POST":
        done: Any = forge.set_status(SHA, "success", "ok")
    else:
        done = forge.upsert_comment(pr, "new plan", MARKER)
    limited = next(r for r in github.requests if r.not_before is not None)
    retry = github.requests[github.requests.index(limited) + 1]
    assert (retry.method, retry.path, retry.status) == (
        limited.method,
        limited.path,
        200 if method != "POST" else 201,
    )
    assert retry.at >= limited.not_before, why
    assert done.api_calls == len(github.requests)


def test_gitlab_rate_limit_is_waited_out(gitlab: GitLabServer) -> None:
    gitlab.fail(gitlab_rate_limit(retry_after=1), method="POST")
    done = Site("gitlab", gitlab).forge().set_status(SHA, "pending", "planning")
    limited, retry = gitlab.requests
    assert (limited.status, retry.status) == (429, 201)
    assert limited.not_before is not None and retry.at >= limited.not_before
    assert done.api_calls == 2


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_rate_limits_that_outlast_the_retries_are_temporary_errors_naming_the_project(kind: str) -> None:
    limit = secondary_rate_limit(retry_after=1) if kind == "github" else gitlab_rate_limit(retry_after=1)
    with github_server() if kind == "github" else gitlab_server() as server:
        site = Site(kind, server)
        server.fail(limit, times=10)
        with pytest.raises(TemporaryError) as caught:
            site.forge(limits=Limits(write_interval=0, max_wait=5, retries=1)).set_status(
                SHA, "success", "ok"
            )
        assert "acme/fleet" in str(caught.value) and "rate limit" in str(caught.value)
        assert caught.value.delay >= 1
        assert len(server.requests) == 2  # the request and one retry


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_a_wait_longer_than_allowed_is_not_slept_but_handed_to_the_caller(kind: str) -> None:
    limit = (
        secondary_rate_limit(retry_after=3600) if kind == "github" else gitlab_rate_limit(retry_after=3600)
    )
    with github_server() if kind == "github" else gitlab_server() as server:
        server.fail(limit)
        with pytest.raises(TemporaryError) as caught:
            Site(kind, server).forge().set_status(SHA, "success", "ok")
        assert caught.value.delay == pytest.approx(3600, abs=2)
        assert len(server.requests) == 1


def test_server_errors_are_retried_for_reads_but_not_for_creating_writes(site: Site) -> None:
    pr = site.add_pull()
    site.server.fail(server_error(502), method="GET")
    assert site.forge().upsert_comment(pr, "plan", MARKER).action == "created"
    assert [r.status for r in site.server.calls("GET")][:2] == [502, 200]

    site.server.forget()
    site.server.fail(server_error(502), method="POST")
    with pytest.raises(TemporaryError, match=r"acme/fleet.*502"):
        site.forge().set_status(SHA, "success", "ok")
    assert len(site.server.requests) == 1


def test_no_answer_is_a_temporary_error(site: Site) -> None:
    forge = site.forge(limits=Limits(write_interval=0, max_wait=5, retries=0))
    site.server.stop()
    with pytest.raises(TemporaryError, match="acme/fleet") as caught:
        forge.find_pull("fleet/drift")
    assert "network" in str(caught.value)


# -- credentials and errors


def test_refused_token_is_a_permanent_error_that_never_shows_the_token(
    site: Site, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    canary = "ghp_canary0123456789abcdefCANARY" if site.kind == "github" else "glpat-canary0123456789CANARY"
    caplog.set_level(logging.DEBUG)
    pr = site.add_pull()
    forge = site.forge(token=Secret(canary))
    with pytest.raises(PermanentError) as caught:
        forge.upsert_comment(pr, "plan", MARKER)
    error = caught.value
    assert "401" in str(error) and "acme/fleet" in str(error)
    assert error.hint and "token" in error.hint
    shown = [
        str(error),
        repr(error),
        "".join(traceback.format_exception(error)),
        repr(forge),
        repr(Secret(canary)),
        caplog.text,
        *capsys.readouterr(),
    ]
    assert not any(canary in text for text in shown)
    assert not any(canary[-12:] in text for text in shown)


def test_missing_scopes_and_unknown_projects_are_permanent_errors_with_what_to_do(site: Site) -> None:
    forge = site.forge()
    site.server.fail(
        lambda now: Answer(
            403,
            {
                "message": "Resource not accessible by integration",
                "documentation_url": "https://docs.github.com",
            },
            schema="BasicError",
        ),
    )
    with pytest.raises(PermanentError, match="403") as forbidden:
        forge.set_status(SHA, "success", "ok")
    assert forbidden.value.hint and ("scope" in forbidden.value.hint)

    with pytest.raises(PermanentError, match="404") as missing:
        forge.upsert_comment(999, "plan", MARKER)
    assert "#999" in str(missing.value) or "!999" in str(missing.value)
    assert missing.value.hint and "project" in missing.value.hint


def test_an_unknown_project_names_itself(site: Site) -> None:
    forge: Forge
    if isinstance(site.server, GitHubServer):
        forge = vcs.github("acme/elsewhere", token=site.server.token, base_url=site.server.url, limits=FAST)
    else:
        forge = vcs.gitlab("acme/elsewhere", token=site.server.token, base_url=site.server.url, limits=FAST)
    with pytest.raises(PermanentError, match=r"acme/elsewhere.*404"):
        forge.find_pull("fleet/drift")


@pytest.mark.parametrize(
    "answer",
    [Answer(200, "<html>a sign-in page</html>"), Answer(200, {"not": "a list"}), Answer(200, [{"id": "x"}])],
    ids=["html", "wrong-json", "wrong-shape"],
)
def test_an_answer_that_is_not_the_forges_api_is_a_permanent_error(site: Site, answer: Answer) -> None:
    pr = site.add_pull()
    site.server.fail(lambda now: answer, method="GET")
    with pytest.raises(PermanentError, match="acme/fleet") as caught:
        site.forge().upsert_comment(pr, "plan", MARKER)
    assert caught.value.hint and "base URL" in caught.value.hint


def test_settings_that_cannot_work_are_refused_at_once() -> None:
    with pytest.raises(PermanentError, match="owner/name"):
        vcs.github("fleet", token="x")
    with pytest.raises(PermanentError, match="either a token or an App"):
        vcs.github("acme/fleet", token="x", app_id=1)
    with pytest.raises(PermanentError, match="PEM") as caught:
        vcs.github("acme/fleet", app_id=1, private_key=Secret("-----BEGIN nonsense"), installation_id=2)
    assert "nonsense" not in str(caught.value)
    with pytest.raises(ValueError, match="must not be negative"):
        Limits(retries=-1)


# -- GitHub App authentication


def test_github_app_exchanges_its_jwt_for_an_installation_token_used_afterwards() -> None:
    app = make_github_app(app_id=4242, installation_id=777)
    with github_server(app=app) as server:
        pr = server.add_pull()
        forge = vcs.github(
            "acme/fleet",
            app_id=app.app_id,
            private_key=Secret(app.private_key_pem),
            installation_id=app.installation_id,
            base_url=server.url,
            limits=FAST,
            pacer=WritePacer(),
        )
        assert app.private_key_pem[40:80] not in repr(forge)
        forge.upsert_comment(pr, "plan", MARKER)
        forge.set_status(SHA, "success", "ok")
        exchange, *rest = server.requests
        assert (exchange.method, exchange.path, exchange.credential) == (
            "POST",
            "/app/installations/777/access_tokens",
            "jwt",
        )
        assert rest and {r.credential for r in rest} == {"installation"}
        assert server.comments_on(pr)[0]["login"] == "fleet-app[bot]"
        check_github_shapes(server)

        wrong = vcs.github(
            "acme/fleet",
            app_id=app.app_id,
            private_key=Secret(make_github_app().private_key_pem),
            installation_id=app.installation_id,
            base_url=server.url,
            limits=FAST,
        )
        with pytest.raises(PermanentError, match="401") as refused:
            wrong.find_pull("fleet/drift")
        assert refused.value.hint and "App" in refused.value.hint


# -- pacing writes


def test_writes_are_paced_by_one_pacer_and_reads_are_not(site: Site) -> None:
    pacer = WritePacer()
    limits = Limits(write_interval=0.3, max_wait=5, retries=0)
    one, two = site.forge(limits=limits, pacer=pacer), site.forge(limits=limits, pacer=pacer)
    one.set_status(SHA, "pending", "planning")
    two.set_status(SHA, "success", "planned")
    one.find_pull("fleet/drift")
    one.set_status(SHA, "success", "applied")
    writes = [r.at for r in site.server.calls("POST")]
    assert len(writes) == 3
    # Seen where they arrive: a busy machine delays one arrival more than the next, so the gaps
    # are checked at two thirds of the interval (unpaced, the writes arrive milliseconds apart).
    assert all(later - earlier >= 0.2 for earlier, later in itertools.pairwise(writes)), writes


def test_the_pacer_hands_out_slots_in_order() -> None:
    now = [100.0]
    slept: list[float] = []
    pacer = WritePacer(clock=lambda: now[0], sleep=slept.append)
    assert [pacer.wait_turn(1.0) for _ in range(3)] == [0.0, 1.0, 2.0]
    now[0] = 110.0
    assert pacer.wait_turn(1.0) == 0.0
    assert slept == [1.0, 2.0]
