"""Local forges for the tests: a GitHub REST API server and a GitLab API v4 server.

Each runs in a background thread on 127.0.0.1 (a random port), is started and stopped by a context
manager (`github_server()`, `gitlab_server()`), keeps its repository in memory, and records every
request (method, path, query, arrival time, credential kind, answer) so tests can count API calls.
Answers follow the forges' published REST shapes: the GitHub server names, for every answer, the
githubkit model it must parse as (`Recorded.schema`), so a test can check each one.

Failures are injected with `fail(...)`: primary and secondary rate limits, GitLab's 429, server
errors. `gate(...)` holds requests until several have arrived, to make races happen for sure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

Json = Any


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it, and what it answered."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    at: float
    credential: str
    status: int
    body: Json
    schema: str | None = None
    not_before: float | None = None
    """For a rate-limit answer: the earliest moment (time.time()) the forge welcomes a retry."""
    injected: bool = False
    """The answer was injected with `fail(...)`, not the forge's own."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: Json = None
    headers: Mapping[str, str] = field(default_factory=dict)
    schema: str | None = None
    not_before: float | None = None
    injected: bool = False


@dataclass
class _Injected:
    answer: Callable[[float], Answer]
    times: int
    method: str | None
    path: re.Pattern[str] | None


@dataclass
class _Gate:
    method: str | None
    path: re.Pattern[str] | None
    barrier: threading.Barrier
    left: int


@dataclass(frozen=True)
class Incoming:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: Json
    credential: str
    match: Mapping[str, str]

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _gitlab_time(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- failures to inject


def primary_rate_limit(reset_in: float = 1.0) -> Callable[[float], Answer]:
    """GitHub's primary rate limit: 403 with `x-ratelimit-remaining: 0` and the reset time."""

    def answer(now: float) -> Answer:
        reset = math.ceil(now + reset_in)
        return Answer(
            403,
            {
                "message": "API rate limit exceeded for user ID 1.",
                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                "status": "403",
            },
            {
                "x-ratelimit-limit": "5000",
                "x-ratelimit-remaining": "0",
                "x-ratelimit-used": "5000",
                "x-ratelimit-reset": str(reset),
                "x-ratelimit-resource": "core",
            },
            schema="BasicError",
            not_before=float(reset),
        )

    return answer


def secondary_rate_limit(retry_after: int = 1, status: int = 403) -> Callable[[float], Answer]:
    """GitHub's secondary rate limit: 403 or 429 with `Retry-After`."""

    def answer(now: float) -> Answer:
        return Answer(
            status,
            {
                "message": "You have exceeded a secondary rate limit and have been temporarily blocked "
                "from content creation. Please retry your request again later.",
                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
                "#about-secondary-rate-limits",
                "status": str(status),
            },
            {"retry-after": str(retry_after)},
            schema="BasicError",
            not_before=now + retry_after,
        )

    return answer


def server_error(status: int = 502) -> Callable[[float], Answer]:
    def answer(now: float) -> Answer:
        return Answer(status, {"message": "Server Error"})

    return answer


def gitlab_rate_limit(retry_after: int = 1) -> Callable[[float], Answer]:
    """GitLab's rate limit: 429 with `Retry-After` and the RateLimit-* headers, body as text."""

    def answer(now: float) -> Answer:
        return Answer(
            429,
            "Retry later\n",
            {
                "Retry-After": str(retry_after),
                "RateLimit-Limit": "600",
                "RateLimit-Observed": "601",
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(math.ceil(now + retry_after)),
                "RateLimit-ResetTime": datetime.fromtimestamp(now + retry_after, UTC).strftime(
                    "%a, %d %b %Y %H:%M:%S GMT"
                ),
            },
            not_before=now + retry_after,
        )

    return answer


# -- the server machinery both forges share


class _ForgeServer:
    """A threaded HTTP server with a route table, request recording, injected failures and gates."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._lock = threading.RLock()
        self._failures: list[_Injected] = []
        self._gates: list[_Gate] = []
        self._routes: list[tuple[str, re.Pattern[str], Callable[[Incoming], Answer]]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._connections: set[socket.socket] = set()

    # lifecycle

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server._connections.add(self.connection)

            def finish(self) -> None:
                with server._lock:
                    server._connections.discard(self.connection)
                super().finish()

            def _any(self) -> None:
                server._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="forge-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        with self._lock:
            # Kept-alive connections end with the server, as they would if it went away.
            for connection in list(self._connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._connections.clear()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # what tests use

    def fail(
        self,
        answer: Callable[[float], Answer],
        *,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next `times` requests that match (method, path regex) with `answer(now)`."""
        with self._lock:
            self._failures.append(_Injected(answer, times, method, re.compile(path) if path else None))

    def gate(self, parties: int, *, method: str | None = None, path: str | None = None) -> None:
        """Hold the next `parties` matching requests until all of them have arrived."""
        with self._lock:
            self._gates.append(
                _Gate(
                    method,
                    re.compile(path) if path else None,
                    threading.Barrier(parties, timeout=10),
                    parties,
                )
            )

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """The recorded requests, those matching `method` and the `path` regex when given."""
        pattern = re.compile(path) if path else None
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (pattern is None or pattern.search(r.path))
            ]

    def forget(self) -> None:
        """Drop the requests recorded so far (to count one call's requests)."""
        with self._lock:
            self.requests.clear()

    # serving

    def route(self, method: str, pattern: str, handler: Callable[[Incoming], Answer]) -> None:
        self._routes.append((method, re.compile(f"^{pattern}$"), handler))

    def credential(self, headers: Mapping[str, str], path: str) -> str:
        raise NotImplementedError

    def refused(self, incoming: Incoming) -> Answer | None:
        """The answer to a request whose credential does not do, or None."""
        raise NotImplementedError

    def decorate(self, answer: Answer, handler: BaseHTTPRequestHandler, incoming: Incoming) -> dict[str, str]:
        return {}

    def _matches(self, method: str | None, path: re.Pattern[str] | None, incoming: Incoming) -> bool:
        return (method is None or method == incoming.method) and (
            path is None or bool(path.search(incoming.path))
        )

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        arrived = time.time()
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = parse_qs(raw.decode())
        headers = {key.lower(): value for key, value in handler.headers.items()}
        query = parse_qs(split.query, keep_blank_values=True)
        incoming = Incoming(
            handler.command, split.path, query, headers, body, self.credential(headers, split.path), {}
        )
        gate = None
        with self._lock:
            for candidate in self._gates:
                if candidate.left > 0 and self._matches(candidate.method, candidate.path, incoming):
                    candidate.left -= 1
                    gate = candidate
                    break
        # Answered as things stand when the request arrives, then held at the gate: the requests a
        # gate holds all see the state from before any of them was answered.
        answer = self._answer(incoming, arrived)
        if gate is not None:
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.barrier.wait()
        self._send(handler, incoming, answer, arrived)

    def _answer(self, incoming: Incoming, arrived: float) -> Answer:
        with self._lock:
            for injected in self._failures:
                if injected.times > 0 and self._matches(injected.method, injected.path, incoming):
                    injected.times -= 1
                    return dataclasses.replace(injected.answer(arrived), injected=True)
        refused = self.refused(incoming)
        if refused is not None:
            return refused
        for method, pattern, handle in self._routes:
            found = pattern.match(incoming.path)
            if found and method == incoming.method:
                with self._lock:
                    return handle(
                        Incoming(
                            incoming.method,
                            incoming.path,
                            incoming.query,
                            incoming.headers,
                            incoming.body,
                            incoming.credential,
                            {k: unquote(v) for k, v in found.groupdict().items()},
                        )
                    )
        return self.not_found(incoming)

    def not_found(self, incoming: Incoming) -> Answer:
        raise NotImplementedError

    def _send(
        self, handler: BaseHTTPRequestHandler, incoming: Incoming, answer: Answer, arrived: float
    ) -> None:
        if isinstance(answer.body, str):
            payload, content_type = answer.body.encode(), "text/plain"
        elif answer.body is None:
            payload, content_type = b"", "application/json"
        else:
            payload, content_type = json.dumps(answer.body).encode(), "application/json; charset=utf-8"
        with self._lock:
            self.requests.append(
                Recorded(
                    incoming.method,
                    incoming.path,
                    incoming.query,
                    arrived,
                    incoming.credential,
                    answer.status,
                    answer.body,
                    answer.schema,
                    answer.not_before,
                    answer.injected,
                )
            )
        handler.send_response(answer.status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        for key, value in {**self.decorate(answer, handler, incoming), **answer.headers}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if payload and incoming.method != "HEAD":
            handler.wfile.write(payload)

    def next_id(self) -> int:
        return next(self._ids)


def _page(items: list[Json], incoming: Incoming, default: int) -> tuple[list[Json], int, int, int]:
    """The requested page of `items`: (items of the page, page, per_page, last page)."""
    try:
        per_page = max(1, min(100, int(incoming.arg("per_page") or default)))
        page = max(1, int(incoming.arg("page") or 1))
    except ValueError:
        per_page, page = default, 1
    last = max(1, math.ceil(len(items) / per_page))
    return items[(page - 1) * per_page : page * per_page], page, per_page, last


def _links(origin: str, incoming: Incoming, page: int, last: int) -> str:
    """An RFC 8288 Link header for a paginated list, as both forges send it."""

    def url(number: int) -> str:
        query = {key: values[-1] for key, values in incoming.query.items()}
        query["page"] = str(number)
        return f"{origin}{incoming.path}?{urlencode(query)}"

    parts = []
    if page < last:
        parts.append(f'<{url(page + 1)}>; rel="next"')
        parts.append(f'<{url(last)}>; rel="last"')
    if page > 1:
        parts.append(f'<{url(1)}>; rel="first"')
        parts.append(f'<{url(page - 1)}>; rel="prev"')
    return ", ".join(parts)


# -- GitHub


@dataclass(frozen=True)
class GitHubApp:
    """A GitHub App: its id, its installation on the repository, and its RSA key pair."""

    app_id: int
    installation_id: int
    private_key_pem: str
    public_key_pem: str


def make_github_app(app_id: int = 4242, installation_id: int = 777) -> GitHubApp:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return GitHubApp(app_id, installation_id, private, public)


_GITHUB_DOCS = "https://docs.github.com/rest"


class GitHubServer(_ForgeServer):
    """GitHub's REST API for one repository: issue comments, statuses, pulls, issues and the App
    installation-token exchange. Issues and pull requests share one number sequence, as on GitHub."""

    def __init__(self, owner: str, repo: str, token: str, app: GitHubApp | None) -> None:
        super().__init__()
        self.owner, self.repo, self.token, self.app = owner, repo, token, app
        self.installation_tokens: set[str] = set()
        self.comments: dict[int, dict[str, Any]] = {}
        self.issues: dict[int, dict[str, Any]] = {}
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self._numbers = itertools.count(1)
        repo_path = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
        self.route("POST", r"/app/installations/(?P<installation>\d+)/access_tokens", self._access_token)
        self.route("GET", repo_path + r"/issues/(?P<number>\d+)/comments", self._list_comments)
        self.route("POST", repo_path + r"/issues/(?P<number>\d+)/comments", self._create_comment)
        self.route("PATCH", repo_path + r"/issues/comments/(?P<id>\d+)", self._update_comment)
        self.route("DELETE", repo_path + r"/issues/comments/(?P<id>\d+)", self._delete_comment)
        self.route("POST", repo_path + r"/statuses/(?P<sha>[0-9a-fA-F]+)", self._create_status)
        self.route("GET", repo_path + r"/pulls", self._list_pulls)
        self.route("POST", repo_path + r"/pulls", self._create_pull)
        self.route("GET", repo_path + r"/pulls/(?P<number>\d+)", self._get_pull)
        self.route("PATCH", repo_path + r"/pulls/(?P<number>\d+)", self._update_pull)
        self.route("GET", repo_path + r"/issues", self._list_issues)
        self.route("POST", repo_path + r"/issues", self._create_issue)
        self.route("GET", repo_path + r"/issues/(?P<number>\d+)", self._get_issue)
        self.route("PATCH", repo_path + r"/issues/(?P<number>\d+)", self._update_issue)

    @property
    def url(self) -> str:
        """The API's base URL, to give a GitHub client."""
        return self.origin + "/"

    # seeding and reading, for tests

    def add_pull(
        self, head: str = "feature", base: str = "main", title: str = "A change", body: str = ""
    ) -> int:
        with self._lock:
            return self._new_issue(title, body, [], pull={"head": head, "base": base})["number"]

    def add_comment(self, number: int, body: str, login: str = "octocat") -> int:
        with self._lock:
            return self._new_comment(number, body, login)["id"]

    def comments_on(self, number: int) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self.comments.values() if c["issue"] == number]

    # credentials

    def credential(self, headers: Mapping[str, str], path: str) -> str:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if not value:
            return "none"
        if scheme.lower() == "token" or scheme.lower() == "bearer":
            if value == self.token:
                return "token"
            if value in self.installation_tokens:
                return "installation"
            if self.app is not None and scheme.lower() == "bearer":
                try:
                    claims = jwt.decode(
                        value,
                        self.app.public_key_pem,
                        algorithms=["RS256"],
                        options={"require": ["iat", "exp", "iss"]},
                        leeway=120,
                    )
                except jwt.PyJWTError:
                    return "bad"
                if str(claims["iss"]) == str(self.app.app_id):
                    return "jwt"
        return "bad"

    def refused(self, incoming: Incoming) -> Answer | None:
        wants_jwt = incoming.path.startswith("/app/")
        if wants_jwt and incoming.credential != "jwt":
            return Answer(
                401,
                {
                    "message": "A JSON web token could not be decoded",
                    "documentation_url": _GITHUB_DOCS,
                    "status": "401",
                },
                schema="BasicError",
            )
        if not wants_jwt and incoming.credential not in ("token", "installation"):
            return Answer(
                401,
                {"message": "Bad credentials", "documentation_url": _GITHUB_DOCS, "status": "401"},
                schema="BasicError",
            )
        repo = incoming.path.split("/")[2:4]
        if incoming.path.startswith("/repos/") and repo != [self.owner, self.repo]:
            return self.not_found(incoming)
        return None

    def not_found(self, incoming: Incoming) -> Answer:
        return Answer(
            404,
            {"message": "Not Found", "documentation_url": _GITHUB_DOCS, "status": "404"},
            schema="BasicError",
        )

    def decorate(self, answer: Answer, handler: BaseHTTPRequestHandler, incoming: Incoming) -> dict[str, str]:
        return {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "4999",
            "x-ratelimit-reset": str(int(time.time()) + 3600),
            "x-ratelimit-used": "1",
            "x-ratelimit-resource": "core",
            "x-github-api-version-selected": "2022-11-28",
        }

    @staticmethod
    def _invalid(resource: str, message: str, field_name: str | None = None) -> Answer:
        error: dict[str, Any] = {"resource": resource, "code": "custom", "message": message}
        if field_name:
            error["field"] = field_name
        return Answer(
            422,
            {
                "message": "Validation Failed",
                "errors": [error],
                "documentation_url": _GITHUB_DOCS,
                "status": "422",
            },
            schema="ValidationError",
        )

    # the App's installation token

    def _access_token(self, incoming: Incoming) -> Answer:
        assert self.app is not None
        if int(incoming.match["installation"]) != self.app.installation_id:
            return self.not_found(incoming)
        token = "ghs_" + secrets.token_hex(18)
        self.installation_tokens.add(token)
        return Answer(
            201,
            {
                "token": token,
                "expires_at": _iso(time.time() + 3600),
                "permissions": {"issues": "write", "pull_requests": "write", "statuses": "write"},
                "repository_selection": "selected",
            },
            schema="InstallationToken",
        )

    # JSON shapes

    def _api(self, path: str) -> str:
        return f"{self.origin}{path}"

    def _html(self, path: str) -> str:
        return f"{self.origin}/{self.owner}/{self.repo}{path}"

    def _user(self, login: str, kind: str = "User") -> dict[str, Any]:
        uid = sum(map(ord, login)) + 1000
        base = self._api(f"/users/{login}")
        return {
            "login": login,
            "id": uid,
            "node_id": f"U_{uid}",
            "avatar_url": f"{self.origin}/avatars/{uid}",
            "gravatar_id": "",
            "url": base,
            "html_url": f"{self.origin}/{login}",
            "followers_url": f"{base}/followers",
            "following_url": f"{base}/following{{/other_user}}",
            "gists_url": f"{base}/gists{{/gist_id}}",
            "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{base}/subscriptions",
            "organizations_url": f"{base}/orgs",
            "repos_url": f"{base}/repos",
            "events_url": f"{base}/events{{/privacy}}",
            "received_events_url": f"{base}/received_events",
            "type": kind,
            "user_view_type": "public",
            "site_admin": False,
        }

    def _actor(self, incoming: Incoming) -> str:
        return "fleet-app[bot]" if incoming.credential == "installation" else "fleet-bot"

    def _repository(self) -> dict[str, Any]:
        base = self._api(f"/repos/{self.owner}/{self.repo}")
        names = {
            "archive_url": "/{archive_format}{/ref}",
            "assignees_url": "/assignees{/user}",
            "blobs_url": "/git/blobs{/sha}",
            "branches_url": "/branches{/branch}",
            "collaborators_url": "/collaborators{/collaborator}",
            "comments_url": "/comments{/number}",
            "commits_url": "/commits{/sha}",
            "compare_url": "/compare/{base}...{head}",
            "contents_url": "/contents/{+path}",
            "contributors_url": "/contributors",
            "deployments_url": "/deployments",
            "downloads_url": "/downloads",
            "events_url": "/events",
            "forks_url": "/forks",
            "git_commits_url": "/git/commits{/sha}",
            "git_refs_url": "/git/refs{/sha}",
            "git_tags_url": "/git/tags{/sha}",
            "issue_comment_url": "/issues/comments{/number}",
            "issue_events_url": "/issues/events{/number}",
            "issues_url": "/issues{/number}",
            "keys_url": "/keys{/key_id}",
            "labels_url": "/labels{/name}",
            "languages_url": "/languages",
            "merges_url": "/merges",
            "milestones_url": "/milestones{/number}",
            "notifications_url": "/notifications{?since,all,participating}",
            "pulls_url": "/pulls{/number}",
            "releases_url": "/releases{/id}",
            "stargazers_url": "/stargazers",
            "statuses_url": "/statuses/{sha}",
            "subscribers_url": "/subscribers",
            "subscription_url": "/subscription",
            "tags_url": "/tags",
            "teams_url": "/teams",
            "trees_url": "/git/trees{/sha}",
            "hooks_url": "/hooks",
        }
        now = _iso(time.time())
        return {
            "id": 1296269,
            "node_id": "R_fleet",
            "name": self.repo,
            "full_name": f"{self.owner}/{self.repo}",
            "license": None,
            "forks": 0,
            "owner": self._user(self.owner, "Organization"),
            "private": True,
            "html_url": self._html(""),
            "description": "The fleet repo",
            "fork": False,
            "url": base,
            **{key: base + suffix for key, suffix in names.items()},
            "git_url": f"git://127.0.0.1/{self.owner}/{self.repo}.git",
            "ssh_url": f"git@127.0.0.1:{self.owner}/{self.repo}.git",
            "clone_url": self._html(".git"),
            "svn_url": self._html(""),
            "mirror_url": None,
            "homepage": None,
            "language": "YAML",
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "size": 1,
            "default_branch": "main",
            "open_issues_count": sum(1 for i in self.issues.values() if i["state"] == "open"),
            "has_pages": False,
            "disabled": False,
            "archived": False,
            "visibility": "private",
            "pushed_at": now,
            "created_at": now,
            "updated_at": now,
            "open_issues": sum(1 for i in self.issues.values() if i["state"] == "open"),
            "watchers": 0,
        }

    def _comment_json(self, comment: dict[str, Any]) -> dict[str, Any]:
        number, cid = comment["issue"], comment["id"]
        kind = "pull" if self.issues[number]["pull"] else "issues"
        return {
            "id": cid,
            "node_id": f"IC_{cid}",
            "url": self._api(f"/repos/{self.owner}/{self.repo}/issues/comments/{cid}"),
            "html_url": self._html(f"/{kind}/{number}#issuecomment-{cid}"),
            "body": comment["body"],
            "user": self._user(comment["login"], "Bot" if comment["login"].endswith("[bot]") else "User"),
            "created_at": _iso(comment["created"]),
            "updated_at": _iso(comment["updated"]),
            "issue_url": self._api(f"/repos/{self.owner}/{self.repo}/issues/{number}"),
            "author_association": "NONE",
        }

    def _label_json(self, name: str) -> dict[str, Any]:
        lid = sum(map(ord, name))
        return {
            "id": lid,
            "node_id": f"LA_{lid}",
            "url": self._api(f"/repos/{self.owner}/{self.repo}/labels/{quote(name)}"),
            "name": name,
            "description": None,
            "color": "ededed",
            "default": False,
        }

    def _issue_json(self, issue: dict[str, Any]) -> dict[str, Any]:
        number = issue["number"]
        api = self._api(f"/repos/{self.owner}/{self.repo}/issues/{number}")
        shown = {
            "id": 5000 + number,
            "node_id": f"I_{number}",
            "url": api,
            "repository_url": self._api(f"/repos/{self.owner}/{self.repo}"),
            "labels_url": api + "/labels{/name}",
            "comments_url": api + "/comments",
            "events_url": api + "/events",
            "html_url": self._html(f"/{'pull' if issue['pull'] else 'issues'}/{number}"),
            "number": number,
            "state": issue["state"],
            "state_reason": issue.get("state_reason"),
            "title": issue["title"],
            "body": issue["body"],
            "user": self._user(issue["login"]),
            "labels": [self._label_json(name) for name in issue["labels"]],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "locked": False,
            "active_lock_reason": None,
            "comments": sum(1 for c in self.comments.values() if c["issue"] == number),
            "closed_at": _iso(issue["closed"]) if issue["closed"] else None,
            "created_at": _iso(issue["created"]),
            "updated_at": _iso(issue["updated"]),
            "author_association": "MEMBER",
        }
        if issue["pull"]:
            pulls = self._api(f"/repos/{self.owner}/{self.repo}/pulls/{number}")
            shown["pull_request"] = {
                "url": pulls,
                "html_url": self._html(f"/pull/{number}"),
                "diff_url": self._html(f"/pull/{number}.diff"),
                "patch_url": self._html(f"/pull/{number}.patch"),
                "merged_at": None,
            }
        return shown

    def _pull_json(self, issue: dict[str, Any], *, full: bool) -> dict[str, Any]:
        number = issue["number"]
        api = self._api(f"/repos/{self.owner}/{self.repo}/pulls/{number}")
        issue_api = self._api(f"/repos/{self.owner}/{self.repo}/issues/{number}")
        user = self._user(issue["login"])
        pull = issue["pull"]

        def end(ref: str, sha: str) -> dict[str, Any]:
            return {
                "label": f"{self.owner}:{ref}",
                "ref": ref,
                "sha": sha,
                "user": self._user(self.owner, "Organization"),
                "repo": self._repository(),
            }

        shown: dict[str, Any] = {
            "url": api,
            "id": 9000 + number,
            "node_id": f"PR_{number}",
            "html_url": self._html(f"/pull/{number}"),
            "diff_url": self._html(f"/pull/{number}.diff"),
            "patch_url": self._html(f"/pull/{number}.patch"),
            "issue_url": issue_api,
            "commits_url": api + "/commits",
            "review_comments_url": api + "/comments",
            "review_comment_url": self._api(f"/repos/{self.owner}/{self.repo}/pulls/comments{{/number}}"),
            "comments_url": issue_api + "/comments",
            "statuses_url": self._api(f"/repos/{self.owner}/{self.repo}/statuses/{pull['sha']}"),
            "number": number,
            "state": issue["state"],
            "locked": False,
            "title": issue["title"],
            "user": user,
            "body": issue["body"],
            "labels": [self._label_json(name) for name in issue["labels"]],
            "milestone": None,
            "active_lock_reason": None,
            "created_at": _iso(issue["created"]),
            "updated_at": _iso(issue["updated"]),
            "closed_at": _iso(issue["closed"]) if issue["closed"] else None,
            "merged_at": None,
            "merge_commit_sha": None,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": end(pull["head"], pull["sha"]),
            "base": end(pull["base"], "0" * 40),
            "_links": {
                name: {"href": href}
                for name, href in {
                    "self": api,
                    "html": self._html(f"/pull/{number}"),
                    "issue": issue_api,
                    "comments": issue_api + "/comments",
                    "review_comments": api + "/comments",
                    "review_comment": self._api(f"/repos/{self.owner}/{self.repo}/pulls/comments{{/number}}"),
                    "commits": api + "/commits",
                    "statuses": self._api(f"/repos/{self.owner}/{self.repo}/statuses/{pull['sha']}"),
                }.items()
            },
            "author_association": "MEMBER",
            "auto_merge": None,
            "draft": False,
        }
        if full:
            shown.update(
                {
                    "merged": False,
                    "mergeable": True,
                    "rebaseable": True,
                    "mergeable_state": "clean",
                    "merged_by": None,
                    "comments": sum(1 for c in self.comments.values() if c["issue"] == number),
                    "review_comments": 0,
                    "maintainer_can_modify": False,
                    "commits": 1,
                    "additions": 1,
                    "deletions": 1,
                    "changed_files": 1,
                }
            )
        return shown

    # state changes

    def _new_issue(
        self,
        title: str,
        body: str | None,
        labels: list[str],
        pull: dict[str, str] | None,
        login: str = "someone",
    ) -> dict[str, Any]:
        now = time.time()
        number = next(self._numbers)
        issue = {
            "number": number,
            "title": title,
            "body": body,
            "labels": labels,
            "state": "open",
            "login": login,
            "created": now,
            "updated": now,
            "closed": None,
            "pull": None if pull is None else {**pull, "sha": secrets.token_hex(20)},
        }
        self.issues[number] = issue
        return issue

    def _new_comment(self, number: int, body: str, login: str) -> dict[str, Any]:
        now = time.time()
        comment = {
            "id": self.next_id(),
            "issue": number,
            "body": body,
            "login": login,
            "created": now,
            "updated": now,
        }
        self.comments[comment["id"]] = comment
        return comment

    # handlers

    def _list_comments(self, incoming: Incoming) -> Answer:
        number = int(incoming.match["number"])
        if number not in self.issues:
            return self.not_found(incoming)
        every = sorted((c for c in self.comments.values() if c["issue"] == number), key=lambda c: c["id"])
        page, at, _, last = _page(every, incoming, 30)
        return Answer(
            200,
            [self._comment_json(c) for c in page],
            {"Link": _links(self.origin, incoming, at, last)} if last > 1 else {},
            schema="list[IssueComment]",
        )

    def _create_comment(self, incoming: Incoming) -> Answer:
        number = int(incoming.match["number"])
        if number not in self.issues:
            return self.not_found(incoming)
        body = (incoming.body or {}).get("body")
        if not isinstance(body, str) or not body:
            return self._invalid("IssueComment", "body can't be blank", "body")
        if len(body) > 65536:
            return self._invalid("IssueComment", "body is too long (maximum is 65536 characters)", "body")
        comment = self._new_comment(number, body, self._actor(incoming))
        return Answer(
            201,
            self._comment_json(comment),
            {"Location": self._api(f"/repos/{self.owner}/{self.repo}/issues/comments/{comment['id']}")},
            schema="IssueComment",
        )

    def _update_comment(self, incoming: Incoming) -> Answer:
        comment = self.comments.get(int(incoming.match["id"]))
        if comment is None:
            return self.not_found(incoming)
        body = (incoming.body or {}).get("body")
        if not isinstance(body, str) or not body:
            return self._invalid("IssueComment", "body can't be blank", "body")
        if len(body) > 65536:
            return self._invalid("IssueComment", "body is too long (maximum is 65536 characters)", "body")
        comment["body"] = body
        comment["updated"] = time.time()
        return Answer(200, self._comment_json(comment), schema="IssueComment")

    def _delete_comment(self, incoming: Incoming) -> Answer:
        if self.comments.pop(int(incoming.match["id"]), None) is None:
            return self.not_found(incoming)
        return Answer(204)

    def _create_status(self, incoming: Incoming) -> Answer:
        data = incoming.body or {}
        state = data.get("state")
        if state not in ("error", "failure", "pending", "success"):
            return self._invalid("Status", f"state is not included in the list: {state!r}", "state")
        description = data.get("description")
        if description is not None and len(description) > 140:
            return self._invalid(
                "Status", "description is too long (maximum is 140 characters)", "description"
            )
        sha = incoming.match["sha"]
        now = _iso(time.time())
        sid = self.next_id()
        status = {
            "url": self._api(f"/repos/{self.owner}/{self.repo}/statuses/{sha}"),
            "avatar_url": f"{self.origin}/avatars/fleet",
            "id": sid,
            "node_id": f"SC_{sid}",
            "state": state,
            "description": description,
            "target_url": data.get("target_url"),
            "context": data.get("context") or "default",
            "created_at": now,
            "updated_at": now,
            "creator": self._user(self._actor(incoming)),
        }
        self.statuses.setdefault(sha, []).append(status)
        return Answer(201, status, schema="Status")

    def _pulls(self, state: str) -> list[dict[str, Any]]:
        return [i for i in self.issues.values() if i["pull"] and (state == "all" or i["state"] == state)]

    def _list_pulls(self, incoming: Incoming) -> Answer:
        found = self._pulls(incoming.arg("state", "open") or "open")
        head = incoming.arg("head")
        if head:
            owner, _, branch = head.partition(":")
            found = [i for i in found if owner == self.owner and i["pull"]["head"] == branch]
        base = incoming.arg("base")
        if base:
            found = [i for i in found if i["pull"]["base"] == base]
        found.sort(key=lambda i: i["number"], reverse=incoming.arg("direction", "desc") == "desc")
        page, at, _, last = _page(found, incoming, 30)
        return Answer(
            200,
            [self._pull_json(i, full=False) for i in page],
            {"Link": _links(self.origin, incoming, at, last)} if last > 1 else {},
            schema="list[PullRequestSimple]",
        )

    def _create_pull(self, incoming: Incoming) -> Answer:
        data = incoming.body or {}
        head, base, title = data.get("head"), data.get("base"), data.get("title")
        if not head or not base or not title:
            return self._invalid("PullRequest", "head, base and title are required")
        branch = head.partition(":")[2] if ":" in head else head
        if branch == base:
            return self._invalid("PullRequest", f"No commits between {base} and {branch}")
        if any(i["pull"]["head"] == branch and i["pull"]["base"] == base for i in self._pulls("open")):
            return self._invalid("PullRequest", f"A pull request already exists for {self.owner}:{branch}.")
        issue = self._new_issue(
            title, data.get("body"), [], {"head": branch, "base": base}, self._actor(incoming)
        )
        return Answer(201, self._pull_json(issue, full=True), schema="PullRequest")

    def _get_pull(self, incoming: Incoming) -> Answer:
        issue = self.issues.get(int(incoming.match["number"]))
        if issue is None or not issue["pull"]:
            return self.not_found(incoming)
        return Answer(200, self._pull_json(issue, full=True), schema="PullRequest")

    def _update_pull(self, incoming: Incoming) -> Answer:
        issue = self.issues.get(int(incoming.match["number"]))
        if issue is None or not issue["pull"]:
            return self.not_found(incoming)
        data = incoming.body or {}
        if "state" in data and data["state"] not in ("open", "closed"):
            return self._invalid("PullRequest", "state is not included in the list", "state")
        self._change(issue, data)
        if "base" in data:
            issue["pull"]["base"] = data["base"]
        return Answer(200, self._pull_json(issue, full=True), schema="PullRequest")

    def _change(self, issue: dict[str, Any], data: Mapping[str, Any]) -> None:
        for key in ("title", "body"):
            if key in data:
                issue[key] = data[key]
        if "labels" in data:
            issue["labels"] = list(data["labels"])
        if "state" in data:
            issue["state"] = data["state"]
            issue["closed"] = time.time() if data["state"] == "closed" else None
            issue["state_reason"] = data.get(
                "state_reason", "completed" if data["state"] == "closed" else None
            )
        issue["updated"] = time.time()

    def _list_issues(self, incoming: Incoming) -> Answer:
        state = incoming.arg("state", "open") or "open"
        found = [i for i in self.issues.values() if state == "all" or i["state"] == state]
        labels = [name for name in (incoming.arg("labels") or "").split(",") if name]
        found = [i for i in found if all(name in i["labels"] for name in labels)]
        found.sort(key=lambda i: i["number"], reverse=incoming.arg("direction", "desc") == "desc")
        page, at, _, last = _page(found, incoming, 30)
        return Answer(
            200,
            [self._issue_json(i) for i in page],
            {"Link": _links(self.origin, incoming, at, last)} if last > 1 else {},
            schema="list[Issue]",
        )

    def _create_issue(self, incoming: Incoming) -> Answer:
        data = incoming.body or {}
        if not data.get("title"):
            return self._invalid("Issue", "title can't be blank", "title")
        labels = [label if isinstance(label, str) else label["name"] for label in data.get("labels") or []]
        issue = self._new_issue(data["title"], data.get("body"), labels, None, self._actor(incoming))
        return Answer(201, self._issue_json(issue), schema="Issue")

    def _get_issue(self, incoming: Incoming) -> Answer:
        issue = self.issues.get(int(incoming.match["number"]))
        if issue is None:
            return self.not_found(incoming)
        return Answer(200, self._issue_json(issue), schema="Issue")

    def _update_issue(self, incoming: Incoming) -> Answer:
        issue = self.issues.get(int(incoming.match["number"]))
        if issue is None:
            return self.not_found(incoming)
        self._change(issue, incoming.body or {})
        return Answer(200, self._issue_json(issue), schema="ReposOwnerRepoIssuesIssueNumberPatchResponse200")


@contextlib.contextmanager
def github_server(
    owner: str = "acme",
    repo: str = "fleet",
    token: str = "ghp_test0000000000000000000000000000000000",
    app: GitHubApp | None = None,
) -> Iterator[GitHubServer]:
    """A GitHub REST API server for `owner/repo`, accepting `token` (and `app`'s JWTs and the
    installation tokens it hands out)."""
    server = GitHubServer(owner, repo, token, app)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- GitLab


class GitLabServer(_ForgeServer):
    """GitLab's REST API v4 for one project: merge request and issue notes, commit statuses, merge
    requests and issues. The project is reached by its id or its URL-encoded path."""

    def __init__(self, path: str, project_id: int, token: str) -> None:
        super().__init__()
        self.path, self.project_id, self.token = path, project_id, token
        self.notes: dict[int, dict[str, Any]] = {}
        self.merge_requests: dict[int, dict[str, Any]] = {}
        self.issues: dict[int, dict[str, Any]] = {}
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self._mr_iids = itertools.count(1)
        self._issue_iids = itertools.count(1)
        project = r"/api/v4/projects/(?P<project>[^/]+)"
        for kind in ("merge_requests", "issues"):
            notes = project + rf"/{kind}/(?P<iid>\d+)/notes"
            self.route("GET", notes, self._list_notes)
            self.route("POST", notes, self._create_note)
            self.route("PUT", notes + r"/(?P<note>\d+)", self._update_note)
            self.route("DELETE", notes + r"/(?P<note>\d+)", self._delete_note)
        self.route("POST", project + r"/statuses/(?P<sha>[0-9a-fA-F]+)", self._create_status)
        self.route("GET", project + r"/merge_requests", self._list_merge_requests)
        self.route("POST", project + r"/merge_requests", self._create_merge_request)
        self.route("GET", project + r"/merge_requests/(?P<iid>\d+)", self._get_merge_request)
        self.route("PUT", project + r"/merge_requests/(?P<iid>\d+)", self._update_merge_request)
        self.route("GET", project + r"/issues", self._list_issues)
        self.route("POST", project + r"/issues", self._create_issue)
        self.route("GET", project + r"/issues/(?P<iid>\d+)", self._get_issue)
        self.route("PUT", project + r"/issues/(?P<iid>\d+)", self._update_issue)

    @property
    def url(self) -> str:
        """The instance's URL, to give a GitLab client."""
        return self.origin

    # seeding and reading, for tests

    def add_merge_request(
        self, source: str = "feature", target: str = "main", title: str = "A change"
    ) -> int:
        with self._lock:
            return self._new_merge_request(source, target, title, "", "someone")["iid"]

    def add_note(self, iid: int, body: str, username: str = "someone", system: bool = False) -> int:
        with self._lock:
            return self._new_note("MergeRequest", iid, body, username, system)["id"]

    def notes_on(self, iid: int, kind: str = "MergeRequest") -> list[dict[str, Any]]:
        with self._lock:
            return [dict(n) for n in self.notes.values() if n["noteable_type"] == kind and n["iid"] == iid]

    # credentials

    def credential(self, headers: Mapping[str, str], path: str) -> str:
        value = headers.get("private-token") or headers.get("authorization", "").removeprefix("Bearer ")
        if not value:
            return "none"
        return "token" if value == self.token else "bad"

    def refused(self, incoming: Incoming) -> Answer | None:
        if incoming.credential != "token":
            return Answer(401, {"message": "401 Unauthorized"})
        parts = incoming.path.split("/")
        if (
            len(parts) > 4
            and parts[3] == "projects"
            and unquote(parts[4]) not in (self.path, str(self.project_id))
        ):
            return Answer(404, {"message": "404 Project Not Found"})
        return None

    def not_found(self, incoming: Incoming) -> Answer:
        return Answer(404, {"message": "404 Not found"})

    # JSON shapes

    def _user(self, username: str) -> dict[str, Any]:
        uid = sum(map(ord, username))
        return {
            "id": uid,
            "username": username,
            "public_email": None,
            "name": username.replace("-", " ").title(),
            "state": "active",
            "locked": False,
            "avatar_url": f"{self.origin}/uploads/-/system/user/avatar/{uid}/avatar.png",
            "web_url": f"{self.origin}/{username}",
        }

    def _web(self, suffix: str) -> str:
        return f"{self.origin}/{self.path}/-/{suffix}"

    def _note_json(self, note: dict[str, Any]) -> dict[str, Any]:
        owner = (self.merge_requests if note["noteable_type"] == "MergeRequest" else self.issues)[note["iid"]]
        return {
            "id": note["id"],
            "type": None,
            "body": note["body"],
            "author": self._user(note["username"]),
            "created_at": _gitlab_time(note["created"]),
            "updated_at": _gitlab_time(note["updated"]),
            "system": note["system"],
            "noteable_id": owner["id"],
            "noteable_type": note["noteable_type"],
            "project_id": self.project_id,
            "resolvable": False,
            "confidential": False,
            "internal": False,
            "imported": False,
            "imported_from": "none",
            "noteable_iid": note["iid"],
            "commands_changes": {},
        }

    def _references(self, mark: str, iid: int) -> dict[str, str]:
        return {"short": f"{mark}{iid}", "relative": f"{mark}{iid}", "full": f"{self.path}{mark}{iid}"}

    def _merge_request_json(self, mr: dict[str, Any]) -> dict[str, Any]:
        iid = mr["iid"]
        return {
            "id": mr["id"],
            "iid": iid,
            "project_id": self.project_id,
            "title": mr["title"],
            "description": mr["description"],
            "state": mr["state"],
            "created_at": _gitlab_time(mr["created"]),
            "updated_at": _gitlab_time(mr["updated"]),
            "merged_by": None,
            "merge_user": None,
            "merged_at": None,
            "closed_by": self._user(mr["closed_by"]) if mr["closed_by"] else None,
            "closed_at": _gitlab_time(mr["closed"]) if mr["closed"] else None,
            "target_branch": mr["target"],
            "source_branch": mr["source"],
            "user_notes_count": sum(
                1 for n in self.notes.values() if n["noteable_type"] == "MergeRequest" and n["iid"] == iid
            ),
            "upvotes": 0,
            "downvotes": 0,
            "author": self._user(mr["username"]),
            "assignees": [],
            "assignee": None,
            "reviewers": [],
            "source_project_id": self.project_id,
            "target_project_id": self.project_id,
            "labels": [],
            "draft": False,
            "work_in_progress": False,
            "milestone": None,
            "merge_when_pipeline_succeeds": False,
            "merge_status": "can_be_merged",
            "detailed_merge_status": "mergeable",
            "sha": mr["sha"],
            "merge_commit_sha": None,
            "squash_commit_sha": None,
            "discussion_locked": None,
            "should_remove_source_branch": None,
            "force_remove_source_branch": False,
            "prepared_at": _gitlab_time(mr["created"]),
            "reference": f"!{iid}",
            "references": self._references("!", iid),
            "web_url": self._web(f"merge_requests/{iid}"),
            "time_stats": {
                "time_estimate": 0,
                "total_time_spent": 0,
                "human_time_estimate": None,
                "human_total_time_spent": None,
            },
            "squash": False,
            "squash_on_merge": False,
            "task_completion_status": {"count": 0, "completed_count": 0},
            "has_conflicts": False,
            "blocking_discussions_resolved": True,
        }

    def _issue_json(self, issue: dict[str, Any]) -> dict[str, Any]:
        iid = issue["iid"]
        api = f"{self.origin}/api/v4/projects/{self.project_id}/issues/{iid}"
        return {
            "id": issue["id"],
            "iid": iid,
            "project_id": self.project_id,
            "title": issue["title"],
            "description": issue["description"],
            "state": issue["state"],
            "created_at": _gitlab_time(issue["created"]),
            "updated_at": _gitlab_time(issue["updated"]),
            "closed_at": _gitlab_time(issue["closed"]) if issue["closed"] else None,
            "closed_by": self._user(issue["closed_by"]) if issue["closed_by"] else None,
            "labels": list(issue["labels"]),
            "milestone": None,
            "assignees": [],
            "author": self._user(issue["username"]),
            "type": "ISSUE",
            "assignee": None,
            "user_notes_count": sum(
                1 for n in self.notes.values() if n["noteable_type"] == "Issue" and n["iid"] == iid
            ),
            "merge_requests_count": 0,
            "upvotes": 0,
            "downvotes": 0,
            "due_date": None,
            "confidential": False,
            "discussion_locked": None,
            "issue_type": "issue",
            "web_url": self._web(f"issues/{iid}"),
            "time_stats": {
                "time_estimate": 0,
                "total_time_spent": 0,
                "human_time_estimate": None,
                "human_total_time_spent": None,
            },
            "task_completion_status": {"count": 0, "completed_count": 0},
            "references": self._references("#", iid),
            "severity": "UNKNOWN",
            "_links": {
                "self": api,
                "notes": api + "/notes",
                "award_emoji": api + "/award_emoji",
                "project": f"{self.origin}/api/v4/projects/{self.project_id}",
                "closed_as_duplicate_of": None,
            },
        }

    # state changes

    def _new_merge_request(
        self, source: str, target: str, title: str, description: str, user: str
    ) -> dict[str, Any]:
        now = time.time()
        iid = next(self._mr_iids)
        mr = {
            "id": 70000 + iid,
            "iid": iid,
            "title": title,
            "description": description,
            "state": "opened",
            "source": source,
            "target": target,
            "username": user,
            "sha": secrets.token_hex(20),
            "created": now,
            "updated": now,
            "closed": None,
            "closed_by": None,
        }
        self.merge_requests[iid] = mr
        return mr

    def _new_note(
        self, kind: str, iid: int, body: str, username: str, system: bool = False
    ) -> dict[str, Any]:
        now = time.time()
        note = {
            "id": self.next_id(),
            "noteable_type": kind,
            "iid": iid,
            "body": body,
            "username": username,
            "system": system,
            "created": now,
            "updated": now,
        }
        self.notes[note["id"]] = note
        return note

    # handlers

    def _paged(self, items: list[Json], incoming: Incoming) -> Answer:
        page, at, per_page, last = _page(items, incoming, 20)
        headers = {
            "x-page": str(at),
            "x-per-page": str(per_page),
            "x-next-page": str(at + 1) if at < last else "",
            "x-prev-page": str(at - 1) if at > 1 else "",
            "x-total": str(len(items)),
            "x-total-pages": str(last),
        }
        links = _links(self.origin, incoming, at, last)
        if links:
            headers["Link"] = links
        return Answer(200, page, headers)

    @staticmethod
    def _sorted(items: list[dict[str, Any]], incoming: Incoming) -> list[dict[str, Any]]:
        order = incoming.arg("order_by", "created_at")
        key = "updated" if order == "updated_at" else "created"
        return sorted(items, key=lambda i: (i[key], i["id"]), reverse=incoming.arg("sort", "desc") != "asc")

    def _owner(self, incoming: Incoming) -> tuple[str, dict[str, Any] | None]:
        kind = "MergeRequest" if "/merge_requests/" in incoming.path else "Issue"
        table = self.merge_requests if kind == "MergeRequest" else self.issues
        return kind, table.get(int(incoming.match["iid"]))

    def _list_notes(self, incoming: Incoming) -> Answer:
        kind, owner = self._owner(incoming)
        if owner is None:
            return self.not_found(incoming)
        found = [n for n in self.notes.values() if n["noteable_type"] == kind and n["iid"] == owner["iid"]]
        answer = self._paged([self._note_json(n) for n in self._sorted(found, incoming)], incoming)
        return answer

    def _create_note(self, incoming: Incoming) -> Answer:
        kind, owner = self._owner(incoming)
        if owner is None:
            return self.not_found(incoming)
        body = (incoming.body or {}).get("body")
        if not isinstance(body, str) or not body.strip():
            return Answer(400, {"message": '400 Bad request - Note {:note=>["can\'t be blank"]}'})
        if len(body) > 1_000_000:
            return Answer(400, {"message": {"note": ["is too long (maximum is 1000000 characters)"]}})
        return Answer(201, self._note_json(self._new_note(kind, owner["iid"], body, "fleet-bot")))

    def _note(self, incoming: Incoming) -> dict[str, Any] | None:
        kind, owner = self._owner(incoming)
        note = self.notes.get(int(incoming.match["note"]))
        if owner is None or note is None or note["noteable_type"] != kind or note["iid"] != owner["iid"]:
            return None
        return note

    def _update_note(self, incoming: Incoming) -> Answer:
        note = self._note(incoming)
        if note is None:
            return self.not_found(incoming)
        body = (incoming.body or {}).get("body")
        if not isinstance(body, str) or not body.strip():
            return Answer(400, {"message": '400 Bad request - Note {:note=>["can\'t be blank"]}'})
        note["body"] = body
        note["updated"] = time.time()
        return Answer(200, self._note_json(note))

    def _delete_note(self, incoming: Incoming) -> Answer:
        note = self._note(incoming)
        if note is None:
            return self.not_found(incoming)
        del self.notes[note["id"]]
        return Answer(204)

    def _create_status(self, incoming: Incoming) -> Answer:
        data = incoming.body or {}
        state = data.get("state")
        if state not in ("pending", "running", "success", "failed", "canceled", "skipped"):
            return Answer(400, {"message": "state does not have a valid value"})
        sha = incoming.match["sha"]
        now = _gitlab_time(time.time())
        status = {
            "id": self.next_id(),
            "sha": sha,
            "ref": data.get("ref") or "main",
            "status": state,
            "name": data.get("name") or data.get("context") or "default",
            "target_url": data.get("target_url"),
            "description": data.get("description"),
            "created_at": now,
            "started_at": now if state != "pending" else None,
            "finished_at": now if state in ("success", "failed", "canceled", "skipped") else None,
            "allow_failure": False,
            "coverage": None,
            "pipeline_id": 1,
            "author": self._user("fleet-bot"),
        }
        self.statuses.setdefault(sha, []).append(status)
        return Answer(201, status)

    def _list_merge_requests(self, incoming: Incoming) -> Answer:
        state = incoming.arg("state", "all") or "all"
        found = [m for m in self.merge_requests.values() if state == "all" or m["state"] == state]
        for param, key in (("source_branch", "source"), ("target_branch", "target")):
            wanted = incoming.arg(param)
            if wanted:
                found = [m for m in found if m[key] == wanted]
        return self._paged([self._merge_request_json(m) for m in self._sorted(found, incoming)], incoming)

    def _create_merge_request(self, incoming: Incoming) -> Answer:
        data = incoming.body or {}
        source, target, title = data.get("source_branch"), data.get("target_branch"), data.get("title")
        if not source or not target or not title:
            return Answer(400, {"message": "source_branch, target_branch, title are missing"})
        clash = [m for m in self.merge_requests.values() if m["state"] == "opened" and m["source"] == source]
        if clash:
            iid = clash[0]["iid"]
            return Answer(
                409,
                {"message": [f"Another open merge request already exists for this source branch: !{iid}"]},
            )
        mr = self._new_merge_request(source, target, title, data.get("description") or "", "fleet-bot")
        return Answer(201, self._merge_request_json(mr))

    def _get_merge_request(self, incoming: Incoming) -> Answer:
        mr = self.merge_requests.get(int(incoming.match["iid"]))
        return self.not_found(incoming) if mr is None else Answer(200, self._merge_request_json(mr))

    def _state_event(self, item: dict[str, Any], data: Mapping[str, Any]) -> None:
        event = data.get("state_event")
        if event == "close":
            item["state"], item["closed"], item["closed_by"] = "closed", time.time(), "fleet-bot"
        elif event == "reopen":
            item["state"], item["closed"], item["closed_by"] = "opened", None, None
        item["updated"] = time.time()

    def _update_merge_request(self, incoming: Incoming) -> Answer:
        mr = self.merge_requests.get(int(incoming.match["iid"]))
        if mr is None:
            return self.not_found(incoming)
        data = incoming.body or {}
        for param, key in (("title", "title"), ("description", "description"), ("target_branch", "target")):
            if param in data:
                mr[key] = data[param]
        self._state_event(mr, data)
        return Answer(200, self._merge_request_json(mr))

    def _list_issues(self, incoming: Incoming) -> Answer:
        state = incoming.arg("state", "all") or "all"
        found = [i for i in self.issues.values() if state == "all" or i["state"] == state]
        labels = [name for name in (incoming.arg("labels") or "").split(",") if name]
        found = [i for i in found if all(name in i["labels"] for name in labels)]
        return self._paged([self._issue_json(i) for i in self._sorted(found, incoming)], incoming)

    def _create_issue(self, incoming: Incoming) -> Answer:
        data = incoming.body or {}
        if not data.get("title"):
            return Answer(400, {"message": "title is missing"})
        labels = data.get("labels") or ""
        names = labels if isinstance(labels, list) else [name for name in labels.split(",") if name]
        now = time.time()
        iid = next(self._issue_iids)
        issue = {
            "id": 90000 + iid,
            "iid": iid,
            "title": data["title"],
            "description": data.get("description") or "",
            "labels": names,
            "state": "opened",
            "username": "fleet-bot",
            "created": now,
            "updated": now,
            "closed": None,
            "closed_by": None,
        }
        self.issues[iid] = issue
        return Answer(201, self._issue_json(issue))

    def _get_issue(self, incoming: Incoming) -> Answer:
        issue = self.issues.get(int(incoming.match["iid"]))
        return self.not_found(incoming) if issue is None else Answer(200, self._issue_json(issue))

    def _update_issue(self, incoming: Incoming) -> Answer:
        issue = self.issues.get(int(incoming.match["iid"]))
        if issue is None:
            return self.not_found(incoming)
        data = incoming.body or {}
        for key in ("title", "description"):
            if key in data:
                issue[key] = data[key]
        self._state_event(issue, data)
        return Answer(200, self._issue_json(issue))


@contextlib.contextmanager
def gitlab_server(
    path: str = "acme/fleet", project_id: int = 42, token: str = "glpat-test00000000000000"
) -> Iterator[GitLabServer]:
    """A GitLab API v4 server for one project, reached as `path` or `project_id`, accepting `token`."""
    server = GitLabServer(path, project_id, token)
    server.start()
    try:
        yield server
    finally:
        server.stop()
