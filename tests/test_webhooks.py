"""The push webhook receivers, served by a real uvicorn on an ephemeral port and called with httpx
(and a raw socket where httpx would send the whole body), with payloads shaped as GitHub's and
GitLab's documentation shows them."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from reconciler.controller.webhooks import (
    MAX_BODY_BYTES,
    DeliveryLog,
    Followed,
    Forge,
    Push,
    RecentDeliveries,
    Result,
    StoredDeliveries,
    repository_key,
    webhook_router,
)
from reconciler.settings import Settings
from reconciler.state import open_store
from reconciler.vcs.context import PullRequestRef

GITHUB_SECRET = "canary-github-7f3a9c1e5b"
GITLAB_TOKEN = "canary-gitlab-2d8e4b6a0f"
CANARIES = (GITHUB_SECRET, GITLAB_TOKEN)

COMMIT = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
BEFORE = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
NO_COMMIT = "0" * 40
TOO_LARGE = 26 * 1024 * 1024

FOLLOWED = Followed(branch="main", repository="https://github.com/acme/fleet-infra.git")
GITLAB_FOLLOWED = Followed(branch="main", repository="git@gitlab.example.com:infra/sites/fleet.git")


def github_push(
    *,
    ref: str = "refs/heads/main",
    after: str = COMMIT,
    full_name: str = "acme/fleet-infra",
    forced: bool = False,
    commits: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A `push` event as GitHub's webhook documentation shows it (the fields fleet reads, and
    enough of the rest to be realistic)."""
    owner, name = full_name.split("/")
    if commits is None:
        commits = [
            _github_commit(BEFORE[:-1] + "a", added=["machines/nyc1/r03.yaml"], modified=["fleet.yaml"]),
            _github_commit(after, modified=["fleet.yaml"], removed=["machines/nyc1/r02.yaml"]),
        ]
    return {
        "ref": ref,
        "before": BEFORE,
        "after": after,
        "created": False,
        "deleted": after == NO_COMMIT,
        "forced": forced,
        "base_ref": None,
        "compare": f"https://github.com/{full_name}/compare/{BEFORE[:12]}...{after[:12]}",
        "commits": commits,
        "head_commit": commits[-1] if commits else None,
        "repository": {
            "id": 186853002,
            "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=",
            "name": name,
            "full_name": full_name,
            "private": True,
            "owner": {"name": owner, "login": owner, "id": 21031067, "type": "Organization"},
            "html_url": f"https://github.com/{full_name}",
            "url": f"https://github.com/{full_name}",
            "git_url": f"git://github.com/{full_name}.git",
            "ssh_url": f"git@github.com:{full_name}.git",
            "clone_url": f"https://github.com/{full_name}.git",
            "default_branch": "main",
            "master_branch": "main",
        },
        "pusher": {"name": "octocat", "email": "octocat@example.invalid"},
        "sender": {"login": "octocat", "id": 583231, "type": "User"},
    }


def _github_commit(
    sha: str, *, added: Sequence[str] = (), modified: Sequence[str] = (), removed: Sequence[str] = ()
) -> dict[str, Any]:
    return {
        "id": sha,
        "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
        "distinct": True,
        "message": "Change the fleet",
        "timestamp": "2026-12-07T13:01:56+00:00",
        "url": f"https://github.com/acme/fleet-infra/commit/{sha}",
        "author": {"name": "Octo Cat", "email": "octocat@example.invalid", "username": "octocat"},
        "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
        "added": list(added),
        "removed": list(removed),
        "modified": list(modified),
    }


def github_ping() -> dict[str, Any]:
    return {
        "zen": "Keep it logically awesome.",
        "hook_id": 109948940,
        "hook": {"type": "Repository", "id": 109948940, "active": True, "events": ["push"]},
        "repository": github_push()["repository"],
        "sender": {"login": "octocat", "id": 583231, "type": "User"},
    }


def gitlab_push(
    *,
    ref: str = "refs/heads/main",
    after: str = COMMIT,
    path_with_namespace: str = "infra/sites/fleet",
    total_commits_count: int | None = None,
) -> dict[str, Any]:
    """A `Push Hook` as GitLab's webhook events documentation shows it."""
    commits = [
        {
            "id": after,
            "message": "Change the fleet\n",
            "title": "Change the fleet",
            "timestamp": "2026-12-07T13:01:56+00:00",
            "url": f"https://gitlab.example.com/{path_with_namespace}/-/commit/{after}",
            "author": {"name": "Jordi Mallach", "email": "jordi@example.invalid"},
            "added": ["virtual-machines/nyc1-services.yaml"],
            "modified": ["fleet.yaml"],
            "removed": [],
        }
    ]
    return {
        "object_kind": "push",
        "event_name": "push",
        "before": BEFORE,
        "after": after,
        "ref": ref,
        "ref_protected": True,
        "checkout_sha": None if after == NO_COMMIT else after,
        "user_id": 4,
        "user_name": "John Smith",
        "user_username": "jsmith",
        "project_id": 15,
        "project": {
            "id": 15,
            "name": path_with_namespace.rsplit("/", 1)[-1],
            "web_url": f"https://gitlab.example.com/{path_with_namespace}",
            "git_ssh_url": f"git@gitlab.example.com:{path_with_namespace}.git",
            "git_http_url": f"https://gitlab.example.com/{path_with_namespace}.git",
            "namespace": "Sites",
            "visibility_level": 0,
            "path_with_namespace": path_with_namespace,
            "default_branch": "main",
            "homepage": f"https://gitlab.example.com/{path_with_namespace}",
            "url": f"git@gitlab.example.com:{path_with_namespace}.git",
            "ssh_url": f"git@gitlab.example.com:{path_with_namespace}.git",
            "http_url": f"https://gitlab.example.com/{path_with_namespace}.git",
        },
        "commits": commits,
        "total_commits_count": len(commits) if total_commits_count is None else total_commits_count,
        "repository": {
            "name": path_with_namespace.rsplit("/", 1)[-1],
            "url": f"git@gitlab.example.com:{path_with_namespace}.git",
            "homepage": f"https://gitlab.example.com/{path_with_namespace}",
            "git_http_url": f"https://gitlab.example.com/{path_with_namespace}.git",
            "git_ssh_url": f"git@gitlab.example.com:{path_with_namespace}.git",
            "visibility_level": 0,
        },
    }


def sign(body: bytes, secret: str = GITHUB_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_headers(
    body: bytes, *, event: str = "push", delivery: str = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Hook-ID": "109948940",
        "X-Hub-Signature-256": sign(body),
    }


def gitlab_headers(
    *,
    token: str = GITLAB_TOKEN,
    event: str = "Push Hook",
    idempotency_key: str | None = "f5e5f430-f57b-4e6e-9fac-d9128cd7232f",
    event_uuid: str = "13792a34-cac6-4fda-95a8-c58e00a3954e",
) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitLab/17.6.0",
        "X-Gitlab-Event": event,
        "X-Gitlab-Instance": "https://gitlab.example.com",
        "X-Gitlab-Webhook-UUID": "02affd2d-2cba-4033-917d-ec22d5dc4b38",
        "X-Gitlab-Event-UUID": event_uuid,
        "X-Gitlab-Token": token,
    }
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


@dataclass
class Receiver:
    """A running receiver and what it handed on."""

    url: str
    host: str
    port: int
    client: httpx.Client
    secrets: dict[str, str | None]
    pushes: list[Push] = field(default_factory=list)
    results: list[tuple[Forge, Result]] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)

    def github(
        self, payload: Any, *, headers: dict[str, str] | None = None, **options: Any
    ) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else encode(payload)
        return self.client.post(
            "/webhooks/github", content=body, headers=headers or github_headers(body, **options)
        )

    def gitlab(self, payload: Any, **options: Any) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else encode(payload)
        return self.client.post("/webhooks/gitlab", content=body, headers=gitlab_headers(**options))


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the server runs in a thread, not the main one
        pass


@pytest.fixture()
def serve() -> Iterator[Callable[..., Receiver]]:
    """Starts receivers (`serve(followed=..., on_push=...)`), stops them after the test, and checks
    that no answer any of them gave quoted a secret."""
    running: list[tuple[_Server, threading.Thread, httpx.Client]] = []
    receivers: list[Receiver] = []

    def start(
        followed: Followed = FOLLOWED,
        on_push: Callable[[Push], None] | None = None,
        secrets: dict[str, str | None] | None = None,
        deliveries: DeliveryLog | None = None,
        on_pull_request: Callable[[PullRequestRef], None] | None = None,
    ) -> Receiver:
        configured: dict[str, str | None] = (
            {"github": GITHUB_SECRET, "gitlab": GITLAB_TOKEN} if secrets is None else secrets
        )
        pushes: list[Push] = []
        results: list[tuple[Forge, Result]] = []
        app = FastAPI()
        app.include_router(
            webhook_router(
                followed=followed,
                secrets=configured.get,
                on_push=on_push or pushes.append,
                on_result=lambda forge, result: results.append((forge, result)),
                deliveries=deliveries,
                on_pull_request=on_pull_request,
            )
        )
        server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        url = f"http://{host}:{port}"
        bodies: list[str] = []

        def keep_body(response: httpx.Response) -> None:
            response.read()
            bodies.append(response.text + str(response.headers))

        client = httpx.Client(base_url=url, timeout=60, event_hooks={"response": [keep_body]})
        running.append((server, thread, client))
        receivers.append(Receiver(url, host, port, client, configured, pushes, results, bodies))
        return receivers[-1]

    yield start
    for server, thread, client in running:
        client.close()
        server.should_exit = True
        thread.join(timeout=10)
    # Whatever the test did, no answer quoted a secret.
    for receiver in receivers:
        for body in receiver.bodies:
            assert not any(canary in body for canary in CANARIES), body


@pytest.fixture()
def receiver(serve: Callable[..., Receiver]) -> Receiver:
    """A receiver following acme/fleet-infra's main branch."""
    return serve()


def _result(response: httpx.Response) -> str:
    result = response.json()["result"]
    assert isinstance(result, str)
    return result


# GitHub


def test_a_github_push_is_accepted_and_handed_on_once(receiver: Receiver) -> None:
    response = receiver.github(github_push())
    assert (response.status_code, response.json()) == (202, {"result": "accepted"})
    assert receiver.pushes == [
        Push(
            forge="github",
            delivery_id="72d3162e-cc78-11e3-81ab-4c9367dc0958",
            repository="acme/fleet-infra",
            branch="main",
            commit=COMMIT,
            changed_paths=("fleet.yaml", "machines/nyc1/r02.yaml", "machines/nyc1/r03.yaml"),
        )
    ]
    assert receiver.results == [("github", Result.ACCEPTED)]


def _github_with(receiver: Receiver, signature: str | None, body: bytes) -> httpx.Response:
    headers = github_headers(body)
    if signature is None:
        del headers["X-Hub-Signature-256"]
    else:
        headers["X-Hub-Signature-256"] = signature
    return receiver.client.post(
        "/webhooks/github", content=body, headers={name: value.encode() for name, value in headers.items()}
    )


BODY = encode(github_push())


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(None, id="no-signature-header"),
        pytest.param("", id="empty-signature"),
        pytest.param(sign(BODY, "not-the-secret"), id="signed-with-another-secret"),
        pytest.param(sign(BODY + b" "), id="signature-of-another-body"),
        pytest.param(sign(BODY).upper(), id="signature-in-another-form"),
        pytest.param("sha1=" + hmac.new(GITHUB_SECRET.encode(), BODY, hashlib.sha1).hexdigest(), id="sha1"),
        pytest.param(sign(BODY)[len("sha256=") :], id="no-algorithm-prefix"),
        pytest.param("sha256=é", id="not-hex"),
    ],
)
def test_a_github_delivery_without_a_valid_signature_is_refused(
    receiver: Receiver, signature: str | None
) -> None:
    response = _github_with(receiver, signature, BODY)
    assert (response.status_code, response.json()) == (401, {"result": "unauthorized"})
    assert receiver.pushes == []
    assert receiver.results == [("github", Result.UNAUTHORIZED)]


@pytest.mark.parametrize("secret", [None, ""], ids=["no-secret", "empty-secret"])
def test_without_a_secret_every_github_delivery_is_refused(
    serve: Callable[..., Receiver], secret: str | None
) -> None:
    receiver = serve(secrets={"github": secret, "gitlab": GITLAB_TOKEN})
    # Signed with the empty key, which is what an unconfigured secret would otherwise check.
    body = encode(github_push())
    headers = github_headers(body)
    headers["X-Hub-Signature-256"] = sign(body, "")
    response = receiver.github(body, headers=headers)
    assert (response.status_code, _result(response)) == (401, "unauthorized")
    assert receiver.pushes == []


def test_a_changed_secret_applies_to_the_next_delivery(receiver: Receiver) -> None:
    receiver.secrets["github"] = "rotated-secret"
    assert receiver.github(github_push()).status_code == 401
    body = encode(github_push())
    headers = github_headers(body)
    headers["X-Hub-Signature-256"] = sign(body, "rotated-secret")
    assert receiver.github(body, headers=headers).status_code == 202
    assert len(receiver.pushes) == 1


def test_replicas_sharing_a_store_hand_a_redelivery_on_once(
    serve: Callable[..., Receiver], tmp_path: Path
) -> None:
    """A forge may redeliver to another replica: the delivery log in the state store is shared."""
    with open_store(str(tmp_path / "state.db")) as store:
        one, other = serve(deliveries=StoredDeliveries(store)), serve(deliveries=StoredDeliveries(store))
        assert _result(one.github(github_push())) == "accepted"
        assert (_result(other.github(github_push())), len(other.pushes)) == ("duplicate", 0)
        # Another forge's delivery with the same id is another delivery.
        first = serve(GITLAB_FOLLOWED, deliveries=StoredDeliveries(store))
        second = serve(GITLAB_FOLLOWED, deliveries=StoredDeliveries(store))
        delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
        assert _result(first.gitlab(gitlab_push(), idempotency_key=delivery)) == "accepted"
        assert _result(second.gitlab(gitlab_push(), idempotency_key=delivery)) == "duplicate"


def test_github_ping_is_answered(receiver: Receiver) -> None:
    response = receiver.github(github_ping(), event="ping")
    assert (response.status_code, response.json()) == (200, {"result": "pong"})
    assert receiver.pushes == []


def test_other_github_events_are_acknowledged_and_ignored(receiver: Receiver) -> None:
    response = receiver.github({"action": "opened", "issue": {"number": 1}}, event="issues")
    assert (response.status_code, _result(response)) == (200, "ignored: not a push")
    assert receiver.pushes == []


def test_a_repeated_github_delivery_is_acknowledged_but_not_handed_on_again(receiver: Receiver) -> None:
    first = receiver.github(github_push())
    again = receiver.github(github_push())
    assert (first.status_code, _result(first)) == (202, "accepted")
    assert (again.status_code, _result(again)) == (200, "duplicate")
    assert len(receiver.pushes) == 1
    # Another delivery of the same commit is another delivery: a push only says "look again".
    other = receiver.github(github_push(), delivery="a6a5c3e0-cc78-11e3-81ab-4c9367dc0958")
    assert _result(other) == "accepted"
    assert [push.delivery_id for push in receiver.pushes] == [
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "a6a5c3e0-cc78-11e3-81ab-4c9367dc0958",
    ]


@pytest.mark.parametrize(
    "payload, result",
    [
        pytest.param(
            github_push(full_name="acme/other-repo"), "ignored: other repository", id="other-repository"
        ),
        pytest.param(
            github_push(full_name="evil/fleet-infra"), "ignored: other repository", id="other-owner"
        ),
        pytest.param(github_push(ref="refs/heads/develop"), "ignored: other branch", id="other-branch"),
        pytest.param(
            github_push(ref="refs/heads/main-2"), "ignored: other branch", id="branch-with-same-prefix"
        ),
        pytest.param(github_push(ref="refs/tags/v1.2.0"), "ignored: tag", id="tag-push"),
        pytest.param(github_push(ref="refs/tags/main"), "ignored: tag", id="tag-named-like-the-branch"),
        pytest.param(
            github_push(after=NO_COMMIT, commits=[]), "ignored: branch deleted", id="branch-deletion"
        ),
    ],
)
def test_pushes_to_anything_but_the_followed_branch_are_ignored(
    receiver: Receiver, payload: dict[str, Any], result: str
) -> None:
    response = receiver.github(payload)
    assert (response.status_code, _result(response)) == (200, result)
    assert receiver.pushes == []


@pytest.mark.parametrize(
    "followed",
    [
        pytest.param(Followed("main", repository="git@github.com:acme/fleet-infra.git"), id="scp-like-ssh"),
        pytest.param(
            Followed("main", repository="ssh://git@github.com:22/acme/fleet-infra"), id="ssh-url-port"
        ),
        pytest.param(
            Followed("main", repository="https://GitHub.com/Acme/Fleet-Infra/"), id="case-trailing-slash"
        ),
        pytest.param(
            Followed("main", repository="https://token@github.com/acme/fleet-infra"), id="user-in-url"
        ),
        pytest.param(Followed("refs/heads/main", full_name="acme/fleet-infra"), id="full-name-and-ref"),
        pytest.param(
            Followed("main", repository="/srv/git/fleet.git", full_name="acme/fleet-infra"), id="local-path"
        ),
    ],
)
def test_the_followed_repository_is_recognised_however_it_is_written(
    serve: Callable[..., Receiver], followed: Followed
) -> None:
    receiver = serve(followed=followed)
    assert _result(receiver.github(github_push())) == "accepted"
    assert [(push.repository, push.branch) for push in receiver.pushes] == [("acme/fleet-infra", "main")]


def test_a_local_path_alone_follows_no_forge_repository(serve: Callable[..., Receiver]) -> None:
    followed = Followed("main", repository="/srv/git/acme/fleet-infra.git")
    assert not followed.identifiable
    receiver = serve(followed=followed)
    assert _result(receiver.github(github_push())) == "ignored: other repository"
    assert receiver.pushes == []


@pytest.mark.parametrize(
    "location, key",
    [
        ("https://github.com/acme/fleet.git", "github.com/acme/fleet"),
        ("git@github.com:acme/fleet.git", "github.com/acme/fleet"),
        ("ssh://git@GITLAB.example.com:2222/Infra/Sites/Fleet.git/", "gitlab.example.com/infra/sites/fleet"),
        ("git://github.com/acme/fleet.git", "github.com/acme/fleet"),
        ("https://gitlab.example.com/infra/sites/fleet", "gitlab.example.com/infra/sites/fleet"),
        ("/srv/git/fleet.git", None),
        ("./fleet", None),
        ("file:///srv/git/fleet.git", None),
        ("https://github.com/", None),
    ],
)
def test_repository_keys(location: str, key: str | None) -> None:
    assert repository_key(location) == key


def test_changed_paths_are_unknown_when_the_payload_cannot_tell(receiver: Receiver) -> None:
    receiver.github(github_push(forced=True), delivery="1")
    new_branch = github_push(commits=[]) | {"before": NO_COMMIT, "created": True}
    receiver.github(new_branch, delivery="2")
    receiver.github(github_push(commits=[]), delivery="3")
    assert [push.changed_paths for push in receiver.pushes] == [None, None, ()]


# GitLab


def test_a_gitlab_push_is_accepted_and_handed_on_once(serve: Callable[..., Receiver]) -> None:
    receiver = serve(followed=GITLAB_FOLLOWED)
    response = receiver.gitlab(gitlab_push())
    assert (response.status_code, response.json()) == (202, {"result": "accepted"})
    assert receiver.pushes == [
        Push(
            forge="gitlab",
            delivery_id="f5e5f430-f57b-4e6e-9fac-d9128cd7232f",
            repository="infra/sites/fleet",
            branch="main",
            commit=COMMIT,
            changed_paths=("fleet.yaml", "virtual-machines/nyc1-services.yaml"),
        )
    ]
    assert receiver.results == [("gitlab", Result.ACCEPTED)]


@pytest.mark.parametrize(
    "token, configured",
    [
        pytest.param("wrong-token", GITLAB_TOKEN, id="wrong-token"),
        pytest.param("", GITLAB_TOKEN, id="empty-token"),
        pytest.param(GITLAB_TOKEN + "x", GITLAB_TOKEN, id="longer-token"),
        pytest.param("jetée", GITLAB_TOKEN, id="non-ascii-token"),
        pytest.param("", None, id="no-token-configured"),
        pytest.param("", "", id="empty-token-configured"),
    ],
)
def test_a_gitlab_delivery_without_the_token_is_refused(
    serve: Callable[..., Receiver], token: str, configured: str | None
) -> None:
    receiver = serve(followed=GITLAB_FOLLOWED, secrets={"github": GITHUB_SECRET, "gitlab": configured})
    body = encode(gitlab_push())
    headers = gitlab_headers()
    headers["X-Gitlab-Token"] = token
    response = receiver.client.post(
        "/webhooks/gitlab", content=body, headers={k: v.encode() for k, v in headers.items()}
    )
    assert (response.status_code, response.json()) == (401, {"result": "unauthorized"})
    assert receiver.pushes == []


def test_gitlab_tokens_do_not_open_the_github_receiver(serve: Callable[..., Receiver]) -> None:
    receiver = serve(secrets={"github": None, "gitlab": GITLAB_TOKEN})
    body = encode(github_push())
    headers = github_headers(body)
    headers["X-Hub-Signature-256"] = sign(body, GITLAB_TOKEN)
    headers["X-Gitlab-Token"] = GITLAB_TOKEN
    assert receiver.github(body, headers=headers).status_code == 401


def test_a_repeated_gitlab_delivery_is_acknowledged_but_not_handed_on_again(
    serve: Callable[..., Receiver],
) -> None:
    receiver = serve(followed=GITLAB_FOLLOWED)
    first = receiver.gitlab(gitlab_push())
    # A retry: same Idempotency-Key, but GitLab makes a new X-Gitlab-Event-UUID for each request.
    retry = receiver.gitlab(gitlab_push(), event_uuid="ad21c2b4-1b49-4f1e-9e3f-6e0ec3c1e0aa")
    assert [_result(first), _result(retry)] == ["accepted", "duplicate"]
    assert retry.status_code == 200
    assert len(receiver.pushes) == 1


def test_without_an_idempotency_key_gitlab_deliveries_are_told_apart_by_event_uuid(
    serve: Callable[..., Receiver],
) -> None:
    receiver = serve(followed=GITLAB_FOLLOWED)
    # Both carry the same X-Gitlab-Webhook-UUID (it names the hook, not the delivery).
    results = [
        _result(receiver.gitlab(gitlab_push(), idempotency_key=None, event_uuid=uuid))
        for uuid in ("13792a34-cac6-4fda-95a8-c58e00a3954e", "5c3f5a9e-2f7e-4a4a-8c0e-1d1f7f0e9b21")
    ]
    again = _result(receiver.gitlab(gitlab_push(), idempotency_key=None))
    assert [*results, again] == ["accepted", "accepted", "duplicate"]
    assert [push.delivery_id for push in receiver.pushes] == [
        "13792a34-cac6-4fda-95a8-c58e00a3954e",
        "5c3f5a9e-2f7e-4a4a-8c0e-1d1f7f0e9b21",
    ]


@pytest.mark.parametrize(
    "payload, event, result",
    [
        pytest.param(
            gitlab_push(path_with_namespace="infra/other"),
            "Push Hook",
            "ignored: other repository",
            id="repo",
        ),
        pytest.param(
            gitlab_push(path_with_namespace="infra/sites/fleet/sub"),
            "Push Hook",
            "ignored: other repository",
            id="subproject",
        ),
        pytest.param(
            gitlab_push(ref="refs/heads/develop"), "Push Hook", "ignored: other branch", id="branch"
        ),
        pytest.param(
            gitlab_push(ref="refs/tags/v1", after=COMMIT),
            "Tag Push Hook",
            "ignored: not a push",
            id="tag-hook",
        ),
        pytest.param(gitlab_push(after=NO_COMMIT), "Push Hook", "ignored: branch deleted", id="deletion"),
        pytest.param({"object_kind": "note"}, "Note Hook", "ignored: not a push", id="note"),
        pytest.param(gitlab_push(), "System Hook", "accepted", id="system-hook-push"),
    ],
)
def test_gitlab_deliveries_that_are_not_pushes_to_the_branch_are_ignored(
    serve: Callable[..., Receiver], payload: dict[str, Any], event: str, result: str
) -> None:
    receiver = serve(followed=GITLAB_FOLLOWED)
    response = receiver.gitlab(payload, event=event)
    assert _result(response) == result
    assert response.status_code == (202 if result == "accepted" else 200)
    assert len(receiver.pushes) == (result == "accepted")


def test_gitlab_changed_paths_are_unknown_when_gitlab_cut_the_commits(serve: Callable[..., Receiver]) -> None:
    receiver = serve(followed=GITLAB_FOLLOWED)
    receiver.gitlab(gitlab_push(total_commits_count=40))
    assert [push.changed_paths for push in receiver.pushes] == [None]


# Bodies


def _too_large() -> Iterator[bytes]:
    chunk = b" " * (1024 * 1024)
    for _ in range(TOO_LARGE // len(chunk)):
        yield chunk


@pytest.mark.parametrize("forge", ["github", "gitlab"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_25_mb_is_refused(receiver: Receiver, forge: str, chunked: bool) -> None:
    body: bytes | Iterator[bytes] = _too_large() if chunked else b" " * TOO_LARGE
    headers = gitlab_headers() if forge == "gitlab" else github_headers(b"")
    response = receiver.client.post(f"/webhooks/{forge}", content=body, headers=headers)
    assert (response.status_code, response.json()) == (413, {"result": "too large"})
    if chunked:
        assert "content-length" not in response.request.headers
    assert receiver.pushes == []
    assert receiver.results == [(forge, Result.TOO_LARGE)]


def _http_head(receiver: Receiver, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {receiver.host}:{receiver.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_answer(connection: socket.socket) -> bytes:
    """One HTTP response with a Content-Length, read from a raw connection."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += connection.recv(4096) or pytest.fail(f"connection closed after {answer!r}")
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(4096) or pytest.fail(f"connection closed after {answer!r}")
    return head + b"\r\n\r\n" + body


def test_a_declared_length_over_the_limit_is_refused_before_any_body_is_sent(receiver: Receiver) -> None:
    headers = github_headers(b"") | {"Content-Length": str(TOO_LARGE)}
    with socket.create_connection((receiver.host, receiver.port), timeout=30) as connection:
        connection.sendall(_http_head(receiver, "/webhooks/github", headers))
        answer = _read_answer(connection)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert answer.endswith(b'\r\n\r\n{"result":"too large"}')


def test_a_chunked_body_is_refused_once_it_passes_the_limit_not_at_its_end(receiver: Receiver) -> None:
    headers = gitlab_headers() | {"Transfer-Encoding": "chunked"}
    chunk = b" " * (256 * 1024)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    with socket.create_connection((receiver.host, receiver.port), timeout=30) as connection:
        connection.sendall(_http_head(receiver, "/webhooks/gitlab", headers))
        connection.settimeout(0.0)
        answer = b""
        # An endless body: the answer must come while it is still being sent.
        while not answer and sent < 3 * MAX_BODY_BYTES:
            try:
                answer = connection.recv(4096)
            except BlockingIOError:
                connection.settimeout(30)
                connection.sendall(framed)
                connection.settimeout(0.0)
                sent += len(chunk)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert sent > MAX_BODY_BYTES
    assert receiver.results == [("gitlab", Result.TOO_LARGE)]


def test_a_body_of_exactly_the_limit_is_read(receiver: Receiver) -> None:
    payload = encode(github_push())
    body = payload[:-1] + b"," + b'"padding":"' + b"x" * (MAX_BODY_BYTES - len(payload) - 13) + b'"}'
    assert len(body) == MAX_BODY_BYTES
    response = receiver.github(body)
    assert (response.status_code, _result(response)) == (202, "accepted")


# Broken payloads and failures


@pytest.mark.parametrize(
    "body, result",
    [
        pytest.param(b"{not json", "invalid json", id="not-json"),
        pytest.param(b'{"ref": "\xff"}', "invalid json", id="not-utf-8"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "invalid json", id="nested-too-deep"),
        pytest.param(b'["a list"]', "invalid json", id="not-an-object"),
        pytest.param(encode({"ref": "refs/heads/main"}), "invalid payload", id="push-without-after"),
        pytest.param(
            encode({**github_push(), "repository": "acme/fleet-infra"}), "invalid payload", id="bad-repo"
        ),
    ],
)
def test_a_signed_body_that_is_not_a_push_payload_is_a_bad_request(
    receiver: Receiver, body: bytes, result: str
) -> None:
    response = receiver.github(body)
    assert (response.status_code, response.json()) == (400, {"result": result})
    assert receiver.pushes == []


def test_an_unsigned_body_that_is_not_json_is_unauthorized_not_a_bad_request(receiver: Receiver) -> None:
    headers = github_headers(b"{not json")
    headers["X-Hub-Signature-256"] = sign(b"{not json", "guess")
    assert receiver.github(b"{not json", headers=headers).status_code == 401


def test_a_failed_hand_on_is_a_server_error_without_detail_and_the_retry_is_taken(
    serve: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    handed: list[Push] = []

    def on_push(push: Push) -> None:
        if not handed:
            handed.append(push)
            raise RuntimeError(f"queue full while handling {GITHUB_SECRET}")
        handed.append(push)

    receiver = serve(on_push=on_push)
    with caplog.at_level(logging.DEBUG):
        failed = receiver.github(github_push())
    assert (failed.status_code, failed.json()) == (500, {"result": "error"})
    retried = receiver.github(github_push())
    assert (retried.status_code, _result(retried)) == (202, "accepted")
    assert len(handed) == 2
    assert "RuntimeError" in caplog.text
    assert not any(canary in caplog.text for canary in CANARIES)
    assert not any("Traceback" in body or "queue full" in body for body in receiver.bodies)


def test_every_answer_is_counted_by_result(receiver: Receiver) -> None:
    receiver.github(github_push())
    receiver.github(github_push())
    receiver.github(github_ping(), event="ping")
    receiver.github(b"{}", headers={"X-GitHub-Event": "push"})
    receiver.gitlab(gitlab_push(), token="nope")
    assert receiver.results == [
        ("github", Result.ACCEPTED),
        ("github", Result.DUPLICATE),
        ("github", Result.PONG),
        ("github", Result.UNAUTHORIZED),
        ("gitlab", Result.UNAUTHORIZED),
    ]


# The parts alone


def test_recent_deliveries_forget_the_least_recently_seen_first() -> None:
    deliveries = RecentDeliveries(capacity=2)
    assert [deliveries.first_time("github", d) for d in ("a", "b", "a", "c")] == [True, True, False, True]
    # "b" was the least recently seen when "c" came: it was forgotten, "a" was not.
    assert deliveries.first_time("github", "a") is False
    assert deliveries.first_time("github", "b") is True
    assert len(deliveries) == 2
    assert deliveries.first_time("gitlab", "b") is True


def test_webhook_secrets_come_from_the_environment_and_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_GITHUB_WEBHOOK_SECRET", GITHUB_SECRET)
    monkeypatch.setenv("FLEET_GITLAB_WEBHOOK_TOKEN", GITLAB_TOKEN)
    settings = Settings()
    assert (settings.webhook_secret("github"), settings.webhook_secret("gitlab")) == (
        GITHUB_SECRET,
        GITLAB_TOKEN,
    )
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert not any(canary in shown for canary in CANARIES)
    monkeypatch.setenv("FLEET_GITLAB_WEBHOOK_TOKEN", " ")
    monkeypatch.delenv("FLEET_GITHUB_WEBHOOK_SECRET")
    assert (Settings().webhook_secret("github"), Settings().webhook_secret("gitlab")) == (None, None)


# Pull requests


def github_pull_request(action: str = "synchronize", base: str = "main", number: int = 42) -> dict[str, Any]:
    """A `pull_request` event as GitHub's webhook events documentation shows it (abridged)."""
    return {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "state": "open",
            "title": "Turn nyc1-r02-05 off",
            "user": {"login": "octocat", "id": 1},
            "labels": [{"name": "fleet/trusted", "id": 7}],
            "base": {"ref": base, "sha": BEFORE, "repo": github_push()["repository"]},
            "head": {"ref": "turn-off", "sha": COMMIT, "repo": github_push()["repository"]},
        },
        "repository": github_push()["repository"],
        "sender": {"login": "octocat", "id": 1},
    }


def gitlab_merge_request(action: str = "update", target: str = "main", iid: int = 7) -> dict[str, Any]:
    """A `Merge Request Hook` as GitLab's webhook events documentation shows it (abridged)."""
    push = gitlab_push()
    return {
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": {"id": 1, "name": "John Smith", "username": "jsmith"},
        "project": push["project"],
        "object_attributes": {
            "iid": iid,
            "action": action,
            "state": "opened",
            "target_branch": target,
            "source_branch": "turn-off",
            "last_commit": {"id": COMMIT, "message": "Turn it off"},
            "oldrev": BEFORE,
        },
        "labels": [{"id": 3, "title": "fleet/trusted"}],
        "repository": push["repository"],
    }


def test_a_pull_request_into_the_followed_branch_is_handed_on_for_a_plan(
    serve: Callable[..., Receiver],
) -> None:
    pulls: list[PullRequestRef] = []
    receiver = serve(on_pull_request=pulls.append)
    answer = receiver.github(github_pull_request(), event="pull_request")
    assert (answer.status_code, _result(answer)) == (202, "accepted")
    [pull] = pulls
    assert (pull.vcs, pull.project, pull.number, pull.head, pull.base, pull.author, pull.labels) == (
        "github",
        "acme/fleet-infra",
        42,
        COMMIT,
        "main",
        "octocat",
        (),  # a push keeps the forge's labels: a trust label counts only when it is set
    )
    labelled = receiver.github(
        github_pull_request(action="labeled"), event="pull_request", delivery="d-label"
    )
    assert _result(labelled) == "accepted" and pulls[-1].labels == ("fleet/trusted",)
    pulls[1:] = []
    assert (
        pull.link("machines/a.yaml", 3)
        == f"https://github.com/acme/fleet-infra/blob/{COMMIT}/machines/a.yaml#L3"
    )
    again = receiver.github(github_pull_request(), event="pull_request")
    assert _result(again) == "duplicate" and len(pulls) == 1
    for payload, result in (
        (github_pull_request(action="closed"), "ignored: pull request action"),
        (github_pull_request(base="release"), "ignored: other branch"),
    ):
        answer = receiver.github(payload, event="pull_request", delivery=f"d-{result}")
        assert _result(answer) == result
    assert len(pulls) == 1


def test_a_gitlab_merge_request_is_handed_on_and_without_a_handler_pull_requests_are_ignored(
    serve: Callable[..., Receiver],
) -> None:
    pulls: list[PullRequestRef] = []
    receiver = serve(GITLAB_FOLLOWED, on_pull_request=pulls.append)
    answer = receiver.gitlab(gitlab_merge_request(), event="Merge Request Hook")
    assert _result(answer) == "accepted"
    assert [(p.vcs, p.project, p.number, p.head) for p in pulls] == [
        ("gitlab", "infra/sites/fleet", 7, COMMIT)
    ]
    plain = serve()
    answer = plain.github(github_pull_request(), event="pull_request")
    assert _result(answer) == "ignored: not a push"
