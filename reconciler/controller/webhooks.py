"""Push webhooks from GitHub and GitLab: authenticate a delivery, decide whether it is a push to the
branch `fleet serve` follows, and hand it on as a `Push` without doing any work in the request.

A push only says "look again": the controller reads the repository itself, so a delivery that is
ignored, lost or repeated costs at most a poll interval, never a wrong run. This module must never
accept a delivery it cannot authenticate (no secret configured means every delivery is refused),
never read more of a body than the limit, and never log or answer with a secret, a signature or a
token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from reconciler.state import StateStore
from reconciler.vcs.context import PullRequestRef

Forge = Literal["github", "gitlab"]

MAX_BODY_BYTES = 25 * 1024 * 1024
"""GitHub caps webhook payloads at 25 MB; a larger body is refused with 413 before it is read."""

MAX_DELIVERY_ID_LENGTH = 200
"""The longest delivery id remembered; forges send UUIDs (36 characters)."""

_REPOSITORY_URLS: Mapping[Forge, tuple[str, ...]] = {
    "github": ("clone_url", "ssh_url", "html_url", "git_url"),
    "gitlab": ("git_http_url", "git_ssh_url", "web_url"),
}
_NO_COMMIT = re.compile(r"0+")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_DIGITS = re.compile(r"[0-9]+")
_LOG = logging.getLogger(__name__)


class Result(StrEnum):
    """What became of a delivery: the `result` of every answer, and a small fixed set of labels
    (never anything taken from the request) for counting deliveries."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    PONG = "pong"
    IGNORED_EVENT = "ignored: not a push"
    IGNORED_REPOSITORY = "ignored: other repository"
    IGNORED_BRANCH = "ignored: other branch"
    IGNORED_TAG = "ignored: tag"
    IGNORED_DELETION = "ignored: branch deleted"
    IGNORED_ACTION = "ignored: pull request action"
    UNAUTHORIZED = "unauthorized"
    TOO_LARGE = "too large"
    INVALID_JSON = "invalid json"
    INVALID_PAYLOAD = "invalid payload"
    ERROR = "error"


_STATUS: Mapping[Result, int] = {
    Result.ACCEPTED: 202,
    Result.UNAUTHORIZED: 401,
    Result.TOO_LARGE: 413,
    Result.INVALID_JSON: 400,
    Result.INVALID_PAYLOAD: 400,
    Result.ERROR: 500,
}
"""Every other result is an acknowledgement (200): the forge has nothing to retry."""


class DeliveryAnswer(BaseModel):
    """The answer to every delivery: what became of it, and nothing from the request."""

    model_config = ConfigDict(extra="forbid")

    result: Result


def _answer(description: str) -> dict[str, Any]:
    return {"model": DeliveryAnswer, "description": description}


_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: _answer(
        "Acknowledged, nothing to do: a duplicate, a ping, or a push that is not to the followed branch."
    ),
    400: _answer("The body is not JSON, or not a push payload."),
    401: _answer("Not signed with the secret (GitHub), or not the token (GitLab); or none is configured."),
    413: _answer(f"The body is over {MAX_BODY_BYTES // (1024 * 1024)} MB."),
}


def _header(name: str, description: str, *, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


def _push_payload(owner: str, fields: tuple[str, ...]) -> dict[str, Any]:
    """What fleet reads of a push payload; the forges send much more, all of it allowed."""
    text = {"type": "string"}
    paths = {"type": "array", "items": text}
    commit = {"type": "object", "properties": {"added": paths, "modified": paths, "removed": paths}}
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "ref": text,
                        "before": text,
                        "after": text,
                        "deleted": {"type": "boolean"},
                        "forced": {"type": "boolean"},
                        owner: {"type": "object", "properties": {field: text for field in fields}},
                        "commits": {"type": "array", "items": commit},
                    },
                }
            }
        },
    }


_GITHUB = {
    "parameters": [
        _header(
            "X-Hub-Signature-256", "`sha256=` and the HMAC-SHA256 of the body with the secret.", required=True
        ),
        _header("X-GitHub-Event", "`push` is acted on, `ping` answered; others are acknowledged."),
        _header("X-GitHub-Delivery", "The delivery's id: a redelivery is acknowledged as a duplicate."),
    ],
    "requestBody": _push_payload("repository", ("full_name", *_REPOSITORY_URLS["github"])),
}
_GITLAB = {
    "parameters": [
        _header("X-Gitlab-Token", "The webhook's secret token.", required=True),
        _header("X-Gitlab-Event", "`Push Hook` (or a `System Hook` push) is acted on; others acknowledged."),
        _header("Idempotency-Key", "The delivery's id across GitLab's retries (GitLab 17.4 and later)."),
        _header("X-Gitlab-Event-UUID", "The delivery's id before GitLab 17.4."),
    ],
    "requestBody": _push_payload("project", ("path_with_namespace", *_REPOSITORY_URLS["gitlab"])),
}


@dataclass(frozen=True)
class Push:
    """A push to the followed branch. `changed_paths` (relative to the repository's root) is a hint
    only, None when the payload cannot tell (a forced push, a list of commits the forge cut)."""

    forge: Forge
    delivery_id: str | None
    repository: str
    branch: str
    commit: str
    changed_paths: tuple[str, ...] | None


class DeliveryLog(Protocol):
    """Remembers which deliveries were already handed on, so a forge's retry or redelivery is not
    processed twice. A store-backed implementation lets replicas share it; it must answer quickly,
    as it is asked while the forge waits."""

    def first_time(self, forge: str, delivery_id: str) -> bool:
        """Record the delivery; True if it was not recorded before."""
        ...

    def forget(self, forge: str, delivery_id: str) -> None:
        """Drop the record of a delivery that could not be handed on, so the forge's retry is."""
        ...


class RecentDeliveries:
    """A `DeliveryLog` in memory that remembers the last `capacity` deliveries (least recently seen
    forgotten first): enough for a forge's retries, which come within hours."""

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, forge: str, delivery_id: str) -> bool:
        key = (forge, delivery_id)
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return True

    def forget(self, forge: str, delivery_id: str) -> None:
        with self._lock:
            self._seen.pop((forge, delivery_id), None)

    def __len__(self) -> int:
        return len(self._seen)


class StoredDeliveries:
    """A `DeliveryLog` in the state store, shared by every replica on it (a forge may redeliver
    to another one); deliveries older than a week are forgotten."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def first_time(self, forge: str, delivery_id: str) -> bool:
        return self._store.record_delivery(forge, delivery_id)

    def forget(self, forge: str, delivery_id: str) -> None:
        self._store.forget_delivery(forge, delivery_id)


def repository_key(location: str) -> str | None:
    """`host/path` of a repository's URL, the same for every way to write it: `https://`,
    `ssh://`, `git://`, scp-like `git@host:path`, with or without `.git`, a trailing slash, a user
    or a port, in any case (GitHub and GitLab treat names case-insensitively). None for a local
    path or a `file://` URL, which no forge names."""
    text = location.strip()
    if "://" in text:
        parts = urlsplit(text)
        host = parts.hostname
        if parts.scheme.lower() == "file" or not host:
            return None
        path = parts.path
    else:
        # Git's own rule: a colon before any slash makes it scp-like, else it is a local path.
        user_host, colon, path = text.partition(":")
        if not colon or "/" in user_host:
            return None
        host = user_host.rpartition("@")[2]
    name = repository_name(path)
    return f"{host.lower()}/{name}" if host and name else None


def repository_name(name: str) -> str:
    """`owner/name` (GitHub) or `group/subgroup/project` (GitLab) as compared: lower case,
    without surrounding slashes or a `.git` suffix."""
    cleaned = name.strip().strip("/")
    if cleaned.lower().endswith(".git"):
        cleaned = cleaned[: -len(".git")].rstrip("/")
    return cleaned.lower()


@dataclass(frozen=True)
class Followed:
    """What `fleet serve` follows: a branch of a repository named by its URL (as given to
    `--repo`), by its `owner/name`, or both. A local path names no forge's repository: give
    `full_name` too, or every push is ignored as another repository's."""

    branch: str
    repository: str | None = None
    full_name: str | None = None

    def __post_init__(self) -> None:
        branch = self.branch.removeprefix("refs/heads/")
        if not branch:
            raise ValueError("the followed branch is empty")
        object.__setattr__(self, "branch", branch)

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"

    @property
    def identifiable(self) -> bool:
        """Whether any forge's push can match: a URL with a host, or a full name."""
        return self._url_key() is not None or bool(self._name())

    def matches(self, *, names: Iterable[str], urls: Iterable[str]) -> bool:
        """Whether a payload that names its repository `names` (full names) and `urls` is this one."""
        wanted_name = self._name()
        if wanted_name and any(repository_name(name) == wanted_name for name in names):
            return True
        wanted_url = self._url_key()
        return wanted_url is not None and any(repository_key(url) == wanted_url for url in urls)

    def _name(self) -> str:
        return repository_name(self.full_name) if self.full_name else ""

    def _url_key(self) -> str | None:
        return repository_key(self.repository) if self.repository else None


def _ignore_result(forge: Forge, result: Result) -> None:
    return None


class _Refused(Exception):
    """Ends the handling of a delivery with `result`; never carries text from the request."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.value)
        self.result = result


def webhook_router(
    *,
    followed: Followed,
    secrets: Callable[[Forge], str | None],
    on_push: Callable[[Push], None],
    on_pull_request: Callable[[PullRequestRef], None] | None = None,
    deliveries: DeliveryLog | None = None,
    on_result: Callable[[Forge, Result], None] = _ignore_result,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> APIRouter:
    """The routes `POST /webhooks/github` and `POST /webhooks/gitlab`.

    `secrets(forge)` gives the current secret (GitHub) or token (GitLab), None or empty when there
    is none, and is asked on every delivery, so a changed secret applies at once. `on_push` is
    called once per accepted delivery, in the request, and must not block (queue the push and
    return). `on_pull_request`, when given, is called the same way for a pull (merge) request
    into the followed branch opened, reopened, pushed to or labelled; without it those events are
    ignored. `on_result` is told the result of every delivery. `deliveries` defaults to a
    `RecentDeliveries` of 10,000.
    """
    log: DeliveryLog = deliveries if deliveries is not None else RecentDeliveries()
    router = APIRouter()

    async def answer(forge: Forge, request: Request) -> JSONResponse:
        try:
            result = await receive(forge, request)
        except _Refused as refused:
            result = refused.result
        except ClientDisconnect:
            result = Result.INVALID_PAYLOAD
        except Exception as error:
            # The type alone: an exception's text may quote the payload.
            _LOG.error("%s webhook: delivery failed with %s", forge, type(error).__name__)
            result = Result.ERROR
        on_result(forge, result)
        return JSONResponse({"result": result.value}, status_code=_STATUS.get(result, 200))

    async def receive(forge: Forge, request: Request) -> Result:
        secret = (secrets(forge) or "").encode("utf-8")
        if not secret:
            raise _Refused(Result.UNAUTHORIZED)
        authenticate = _authenticate_github if forge == "github" else _authenticate_gitlab
        delivery = await authenticate(request, secret, max_body_bytes)
        payload = _parse_json(delivery.body)
        if forge == "github" and delivery.event == "ping":
            return Result.PONG
        if on_pull_request is not None and _is_pull_request(forge, delivery.event, payload):
            pull = _read_pull_request(forge, payload, followed)
            if isinstance(pull, Result):
                return pull
            return await run_in_threadpool(
                hand_on, forge, delivery.delivery_id, lambda: on_pull_request(pull)
            )
        if not _is_push(forge, delivery.event, payload):
            return Result.IGNORED_EVENT
        push = _read_push(forge, payload, delivery.delivery_id, followed)
        if isinstance(push, Result):
            return push
        # The delivery log may be a database: off the event loop.
        return await run_in_threadpool(hand_on, forge, push.delivery_id, lambda: on_push(push))

    def hand_on(forge: Forge, delivery_id: str | None, handle: Callable[[], None]) -> Result:
        if delivery_id is not None:
            if len(delivery_id) > MAX_DELIVERY_ID_LENGTH:
                raise _Refused(Result.INVALID_PAYLOAD)
            if not log.first_time(forge, delivery_id):
                return Result.DUPLICATE
        try:
            handle()
        except Exception:
            if delivery_id is not None:
                log.forget(forge, delivery_id)
            raise
        return Result.ACCEPTED

    @router.post(
        "/webhooks/github",
        summary="A GitHub push: the followed branch is polled at once.",
        status_code=202,
        response_model=DeliveryAnswer,
        responses=_ANSWERS,
        openapi_extra=_GITHUB,
    )
    async def github(request: Request) -> JSONResponse:
        return await answer("github", request)

    @router.post(
        "/webhooks/gitlab",
        summary="A GitLab push: the followed branch is polled at once.",
        status_code=202,
        response_model=DeliveryAnswer,
        responses=_ANSWERS,
        openapi_extra=_GITLAB,
    )
    async def gitlab(request: Request) -> JSONResponse:
        return await answer("gitlab", request)

    return router


@dataclass(frozen=True)
class _Delivery:
    body: bytes
    event: str
    delivery_id: str | None


async def _authenticate_github(request: Request, secret: bytes, limit: int) -> _Delivery:
    """A delivery whose X-Hub-Signature-256 is the HMAC-SHA256 of its raw body with `secret`."""
    signature = request.headers.get("x-hub-signature-256")
    if not signature:
        raise _Refused(Result.UNAUTHORIZED)
    body = await _read_body(request, limit)
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature.encode("latin-1"), expected.encode("ascii")):
        raise _Refused(Result.UNAUTHORIZED)
    return _Delivery(
        body, request.headers.get("x-github-event", ""), request.headers.get("x-github-delivery")
    )


async def _authenticate_gitlab(request: Request, secret: bytes, limit: int) -> _Delivery:
    """A delivery whose X-Gitlab-Token is `secret`, checked before its body is read."""
    # Starlette decodes headers as latin-1: encoding back gives the bytes GitLab sent.
    token = request.headers.get("x-gitlab-token", "").encode("latin-1")
    if not hmac.compare_digest(token, secret):
        raise _Refused(Result.UNAUTHORIZED)
    body = await _read_body(request, limit)
    # Idempotency-Key stays the same across GitLab's retries (GitLab 17.4+); before it,
    # X-Gitlab-Event-UUID is the closest. X-Gitlab-Webhook-UUID is not a delivery's id.
    delivery_id = request.headers.get("idempotency-key") or request.headers.get("x-gitlab-event-uuid")
    return _Delivery(body, request.headers.get("x-gitlab-event", ""), delivery_id)


def _is_push(forge: Forge, event: str, payload: Mapping[str, Any]) -> bool:
    if forge == "github":
        return event == "push"
    # A system hook sends pushes of every project, marked as such in the payload.
    return event == "Push Hook" or (event == "System Hook" and payload.get("object_kind") == "push")


_PULL_ACTIONS: Mapping[Forge, frozenset[str]] = {
    # `labeled`: a maintainer's trust label may make a new plan possible.
    "github": frozenset({"opened", "synchronize", "reopened", "labeled"}),
    "gitlab": frozenset({"open", "reopen", "update"}),
}


def _is_pull_request(forge: Forge, event: str, payload: Mapping[str, Any]) -> bool:
    if forge == "github":
        return event == "pull_request"
    return event == "Merge Request Hook" or (
        event == "System Hook" and payload.get("object_kind") == "merge_request"
    )


def _read_pull_request(
    forge: Forge, payload: Mapping[str, Any], followed: Followed
) -> PullRequestRef | Result:
    """The pull (merge) request into the followed branch a payload describes, or why it is
    ignored. Its base is the followed branch: the plan is made on its merge base with the head."""
    if forge == "github":
        pull, owner = payload.get("pull_request"), payload.get("repository")
        action = payload.get("action")
        if not isinstance(pull, dict) or not isinstance(owner, dict) or not isinstance(action, str):
            return Result.INVALID_PAYLOAD
        base, head = pull.get("base"), pull.get("head")
        if not isinstance(base, dict) or not isinstance(head, dict):
            return Result.INVALID_PAYLOAD
        number, target, commit = pull.get("number"), base.get("ref"), head.get("sha")
        author = (pull.get("user") or {}).get("login")
        # A trust label vouches for the commits it was set on: only the `labeled` event counts it.
        labels = [label.get("name") for label in pull.get("labels") or [] if isinstance(label, dict)]
        labels = labels if action == "labeled" else []
        web = owner.get("html_url")
    else:
        attributes, owner = payload.get("object_attributes"), payload.get("project")
        if not isinstance(attributes, dict) or not isinstance(owner, dict):
            return Result.INVALID_PAYLOAD
        action = attributes.get("action")
        number, target = attributes.get("iid"), attributes.get("target_branch")
        commit = (attributes.get("last_commit") or {}).get("id")
        author = (payload.get("user") or {}).get("username")
        # Labels count only on an update that changed them without a push (no `oldrev`).
        labelled = isinstance(payload.get("changes"), dict) and "labels" in payload["changes"]
        labels = [label.get("title") for label in payload.get("labels") or [] if isinstance(label, dict)]
        labels = labels if labelled and not attributes.get("oldrev") else []
        web = owner.get("web_url")
    if not isinstance(number, int) or not isinstance(target, str) or not isinstance(commit, str):
        return Result.INVALID_PAYLOAD
    name_fields, url_fields = _REPOSITORY_FIELDS[forge]
    names = [value for field in name_fields if isinstance(value := owner.get(field), str)]
    urls = [value for field in url_fields if isinstance(value := owner.get(field), str)]
    if not followed.matches(names=names, urls=urls):
        return Result.IGNORED_REPOSITORY
    if action not in _PULL_ACTIONS[forge]:
        return Result.IGNORED_ACTION
    if target != followed.branch:
        return Result.IGNORED_BRANCH
    if not _COMMIT.fullmatch(commit):
        return Result.INVALID_PAYLOAD
    return PullRequestRef(
        vcs=forge,
        project=names[0] if names else "",
        number=number,
        base=followed.branch,
        head=commit,
        base_branch=followed.branch,
        author=author if isinstance(author, str) else None,
        labels=tuple(str(label) for label in labels if isinstance(label, str))[:100],
        web_url=web if isinstance(web, str) else None,
    )


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (413) on a declared length over `limit` before reading any of it, and
    while streaming one without a length as soon as it would pass `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not _DIGITS.fullmatch(declared):
            raise _Refused(Result.INVALID_PAYLOAD)
        if int(declared) > limit:
            raise _Refused(Result.TOO_LARGE)
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:
            raise _Refused(Result.TOO_LARGE)
        body += chunk
    return bytes(body)


def _parse_json(body: bytes) -> Mapping[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise _Refused(Result.INVALID_JSON) from None
    if not isinstance(payload, dict):
        raise _Refused(Result.INVALID_JSON)
    return payload


_REPOSITORY_FIELDS: Mapping[Forge, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "github": (("full_name",), _REPOSITORY_URLS["github"]),
    "gitlab": (("path_with_namespace",), _REPOSITORY_URLS["gitlab"]),
}
"""Where a push payload names its repository (`repository` on GitHub, `project` on GitLab):
full names, then URLs."""


def _read_push(
    forge: Forge, payload: Mapping[str, Any], delivery_id: str | None, followed: Followed
) -> Push | Result:
    """The push a payload describes, or why it is ignored."""
    ref = payload.get("ref")
    after = payload.get("after")
    if not isinstance(ref, str) or not isinstance(after, str):
        return Result.INVALID_PAYLOAD
    owner = payload.get("repository" if forge == "github" else "project")
    if not isinstance(owner, dict):
        return Result.INVALID_PAYLOAD
    name_fields, url_fields = _REPOSITORY_FIELDS[forge]
    names = [value for field in name_fields if isinstance(value := owner.get(field), str)]
    urls = [value for field in url_fields if isinstance(value := owner.get(field), str)]
    if not followed.matches(names=names, urls=urls):
        return Result.IGNORED_REPOSITORY
    if ref.startswith("refs/tags/"):
        return Result.IGNORED_TAG
    if ref != followed.ref:
        return Result.IGNORED_BRANCH
    if _NO_COMMIT.fullmatch(after) or payload.get("deleted") is True:
        return Result.IGNORED_DELETION
    return Push(
        forge=forge,
        delivery_id=delivery_id,
        repository=names[0] if names else (urls[0] if urls else ""),
        branch=followed.branch,
        commit=after,
        changed_paths=_changed_paths(forge, payload),
    )


_GITHUB_COMMITS_LIMIT = 2048
"""GitHub lists at most this many commits of a push."""


def _changed_paths(forge: Forge, payload: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Every path the listed commits added, modified or removed; None when the list may be short
    of the push: a new branch (only commits new to the repository are listed), a forced push (its
    lost commits are not), or a list the forge cut."""
    commits = payload.get("commits")
    before = payload.get("before")
    if not isinstance(commits, list) or not isinstance(before, str) or _NO_COMMIT.fullmatch(before):
        return None
    if payload.get("forced") is True:
        return None
    if forge == "github" and len(commits) >= _GITHUB_COMMITS_LIMIT:
        return None
    total = payload.get("total_commits_count")
    if forge == "gitlab" and (not isinstance(total, int) or total > len(commits)):
        return None
    paths: set[str] = set()
    for commit in commits:
        if not isinstance(commit, dict):
            return None
        for field in ("added", "modified", "removed"):
            listed = commit.get(field, [])
            if not isinstance(listed, list) or not all(isinstance(path, str) for path in listed):
                return None
            paths.update(listed)
    return tuple(sorted(paths))
