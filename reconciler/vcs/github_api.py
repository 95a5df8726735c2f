"""GitHub's REST API through githubkit: the only module that imports githubkit.

Authenticates with a token, or as a GitHub App installation (githubkit signs the App's JWT with
its private key and exchanges it for an installation token, kept until shortly before it expires).
Rate limits are left to githubkit's retry hook, given a decision function that honours
`Retry-After` (secondary limits) and `x-ratelimit-reset` (primary limits) up to `Limits.max_wait`
per wait. githubkit's HTTP cache is off: listing again after a write must see the write. Every
githubkit exception is mapped here; none leaves this module.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import httpx
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from githubkit import AppInstallationAuthStrategy, GitHub, Response, TokenAuthStrategy
from githubkit.cache import MemCacheStrategy
from githubkit.exception import (
    AuthCredentialError,
    GitHubException,
    RateLimitExceeded,
    RequestError,
    RequestFailed,
)
from githubkit.typing import RetryOption, UnsetType
from githubkit.utils import UNSET
from githubkit_schemas.latest import models

from reconciler.errors import FleetError, PermanentError
from reconciler.vcs import sticky
from reconciler.vcs.base import (
    PROCESS_PACER,
    STATUS_STATES,
    Failure,
    Issue,
    Limits,
    PullRequest,
    PullState,
    Revealable,
    Secret,
    StatusResult,
    StatusState,
    WritePacer,
    as_secret,
    check_length,
    failure_error,
    one_line,
)

_LOG = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.github.com"
MAX_BODY_CHARS = 65536
"""GitHub refuses comment, pull request and issue bodies longer than this."""
STATUS_DESCRIPTION_CHARS = 140
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})
_SCOPES_HINT = (
    "check the token's permissions: fleet needs write access to the repository's pull requests, "
    "issues and commit statuses; a classic token needs the repo scope"
)
_TOKEN_HINT = "check that the token, or the App's key and installation id, is valid, not expired or revoked"


class GitHubForge(sticky.StickyComments):
    """One GitHub repository (`owner/name`), through githubkit; see `reconciler.vcs.github_api()`."""

    name = "GitHub"
    max_body_chars = MAX_BODY_CHARS

    def __init__(
        self,
        project: str,
        *,
        token: str | Revealable | None = None,
        app_id: int | str | None = None,
        private_key: str | Revealable | None = None,
        installation_id: int | None = None,
        base_url: str = DEFAULT_BASE_URL,
        limits: Limits | None = None,
        pacer: WritePacer | None = None,
    ) -> None:
        owner, _, repo = project.partition("/")
        if not owner or not repo or "/" in repo:
            raise PermanentError(
                f"GitHub project {project!r} is not owner/name", hint="name the repository as acme/fleet"
            )
        self._owner, self._repo = owner, repo
        self.project = project
        self.base_url = base_url
        self._limits = limits or Limits()
        self._pacer = pacer or PROCESS_PACER
        self._secrets: list[Secret] = []
        self._local = threading.local()
        self._total_lock = threading.Lock()
        self._total = 0
        auth = self._auth(token, app_id, private_key, installation_id)
        self._github = GitHub(
            auth,
            base_url=base_url,
            user_agent="fleet",
            timeout=self._limits.timeout,
            http_cache=False,
            cache_strategy=MemCacheStrategy(),
            auto_retry=self._retry,
            event_hooks={"request": [self._count]},
        )

    def _auth(
        self,
        token: str | Revealable | None,
        app_id: int | str | None,
        private_key: str | Revealable | None,
        installation_id: int | None,
    ) -> TokenAuthStrategy | AppInstallationAuthStrategy:
        app = (app_id, private_key, installation_id)
        if token is not None and all(part is None for part in app):
            secret = as_secret(token)
            self._secrets.append(secret)
            self._auth_kind = "token"
            return TokenAuthStrategy(secret.reveal())
        if token is None and all(part is not None for part in app):
            assert app_id is not None and private_key is not None and installation_id is not None
            key = as_secret(private_key)
            self._secrets.append(key)
            try:
                load_pem_private_key(key.reveal().encode(), password=None)
            except (ValueError, TypeError):
                raise PermanentError(
                    f"GitHub {self.project}: the private key of App {app_id} is not an unencrypted "
                    "PEM private key",
                    hint="pass the .pem file GitHub generated for the App",
                ) from None
            self._auth_kind = f"app {app_id} installation {installation_id}"
            return AppInstallationAuthStrategy(app_id, key.reveal(), installation_id)
        raise PermanentError(
            f"GitHub {self.project}: give either a token or an App (app id, private key and installation id)",
            hint="set one of the two ways to authenticate, not both and not part of one",
        )

    def __repr__(self) -> str:
        return f"GitHubForge(project={self.project!r}, base_url={self.base_url!r}, auth={self._auth_kind!r})"

    @property
    def api_calls(self) -> int:
        return self._total

    def close(self) -> None:
        """Nothing to release: connections live for one operation."""

    # -- the Forge operations

    def _thread(self, number: int) -> sticky.CommentThread:
        return _Thread(self, number)

    def set_status(
        self,
        sha: str,
        state: StatusState,
        description: str,
        context: str = "fleet/plan",
        target_url: str | None = None,
    ) -> StatusResult:
        if state not in STATUS_STATES:
            raise ValueError(f"a commit status is one of {', '.join(STATUS_STATES)}, not {state!r}")
        with self._operation(f"setting status {context!r} on commit {sha[:12]}") as tally:
            self._write()
            extra: dict[str, Any] = {} if target_url is None else {"target_url": target_url}
            self._github.rest.repos.create_commit_status(
                self._owner,
                self._repo,
                sha,
                state=state,
                description=one_line(description, STATUS_DESCRIPTION_CHARS),
                context=context,
                **extra,
            )
        return StatusResult(sha=sha, state=state, forge_state=state, context=context, api_calls=tally.count)

    def find_pull(self, head_branch: str) -> PullRequest | None:
        with self._operation(f"looking for the open pull request from {head_branch!r}"):
            found = self._github.rest.pulls.list(
                self._owner, self._repo, head=f"{self._owner}:{head_branch}", state="open", per_page=100
            ).parsed_data
        return _pull(found[0]) if found else None

    def open_pull(self, head: str, base: str, title: str, body: str) -> PullRequest:
        doing = f"opening a pull request from {head!r} into {base!r}"
        self._fits(body, doing)
        with self._operation(doing):
            self._write()
            made = self._github.rest.pulls.create(
                self._owner, self._repo, title=title, head=head, base=base, body=body
            ).parsed_data
        return _pull(made)

    def update_pull(self, number: int, title: str | None = None, body: str | None = None) -> PullRequest:
        doing = f"updating pull request #{number}"
        self._fits(body, doing)
        with self._operation(doing):
            self._write()
            changed = self._github.rest.pulls.update(
                self._owner, self._repo, number, title=_kept(title), body=_kept(body)
            ).parsed_data
        return _pull(changed)

    def close_pull(self, number: int, comment: str | None = None) -> PullRequest:
        doing = f"closing pull request #{number}"
        self._fits(comment, doing)
        with self._operation(doing):
            if comment is not None:
                self._create_comment(number, comment)
            self._write()
            closed = self._github.rest.pulls.update(
                self._owner, self._repo, number, state="closed"
            ).parsed_data
        return _pull(closed)

    def find_issue(self, marker: str, labels: Sequence[str] = ()) -> Issue | None:
        with self._operation("looking for fleet's open issue"):
            filters: dict[str, Any] = {"labels": ",".join(labels)} if labels else {}
            pages = self._github.rest.paginate(
                self._github.rest.issues.list_for_repo,
                owner=self._owner,
                repo=self._repo,
                state="open",
                sort="created",
                direction="asc",
                per_page=100,
                **filters,
            )
            for issue in pages:
                # GitHub lists pull requests among issues.
                if not issue.pull_request and marker in (issue.body or ""):
                    return _issue(issue)
        return None

    def open_issue(self, title: str, body: str, labels: Sequence[str] = ()) -> Issue:
        doing = "opening an issue"
        self._fits(body, doing)
        with self._operation(doing):
            self._write()
            made = self._github.rest.issues.create(
                self._owner, self._repo, title=title, body=body, labels=list(labels)
            ).parsed_data
        return _issue(made)

    def update_issue(self, number: int, title: str | None = None, body: str | None = None) -> Issue:
        doing = f"updating issue #{number}"
        self._fits(body, doing)
        with self._operation(doing):
            self._write()
            changed = self._github.rest.issues.update(
                self._owner, self._repo, number, title=_kept(title), body=_kept(body)
            ).parsed_data
        return _issue(changed)

    def close_issue(self, number: int, comment: str | None = None) -> Issue:
        doing = f"closing issue #{number}"
        self._fits(comment, doing)
        with self._operation(doing):
            if comment is not None:
                self._create_comment(number, comment)
            self._write()
            closed = self._github.rest.issues.update(
                self._owner, self._repo, number, state="closed"
            ).parsed_data
        return _issue(closed)

    # -- comments, for the sticky comment

    def _list_comments(self, number: int) -> list[sticky.Comment]:
        pages = self._github.rest.paginate(
            self._github.rest.issues.list_comments,
            map_func=_comments_of,
            owner=self._owner,
            repo=self._repo,
            issue_number=number,
            per_page=100,
        )
        return list(pages)

    def _create_comment(self, number: int, body: str) -> sticky.Comment:
        self._write()
        made = self._github.rest.issues.create_comment(self._owner, self._repo, number, body=body)
        return _comment(made.parsed_data)

    def _update_comment(self, comment_id: int, body: str) -> sticky.Comment:
        self._write()
        changed = self._github.rest.issues.update_comment(self._owner, self._repo, comment_id, body=body)
        return _comment(changed.parsed_data)

    def _delete_comment(self, comment_id: int) -> None:
        self._write()
        self._github.rest.issues.delete_comment(self._owner, self._repo, comment_id)

    # -- the edge: counting, pacing, retrying, mapping errors

    def _fits(self, text: str | None, doing: str) -> None:
        check_length(self.name, self.project, doing, text, self.max_body_chars)

    def _pull_name(self, number: int) -> str:
        return f"pull request #{number}"

    def _write(self) -> None:
        self._pacer.wait_turn(self._limits.write_interval)

    def _count(self, request: httpx.Request) -> None:
        tally = getattr(self._local, "tally", None)
        if tally is not None:
            tally.count += 1
        with self._total_lock:
            self._total += 1

    @contextlib.contextmanager
    def _operation(self, doing: str) -> Iterator[sticky.Tally]:
        """One Forge call: one connection for its requests, its requests counted, and every
        githubkit error mapped to fleet's tree."""
        tally = sticky.Tally()
        self._local.tally = tally
        try:
            with self._github:
                yield tally
        except GitHubException as exc:
            raise self._error(exc, doing) from _chained(exc)
        except ValueError:
            # Not JSON, or JSON that is not GitHub's (pydantic's ValidationError is a ValueError).
            raise PermanentError(
                f"GitHub {self.project}: {doing}: the answer is not GitHub's REST API",
                hint="check that the base URL points at GitHub's REST API (https://HOST/api/v3 on "
                "GitHub Enterprise Server)",
            ) from None
        finally:
            self._local.tally = None

    def _retry(self, exc: GitHubException, retry_count: int) -> RetryOption:
        """githubkit's retry hook: rate limits always (the request was refused, not done), server
        errors and lost connections only for requests that are safe to repeat."""
        if retry_count >= self._limits.retries:
            return RetryOption(False)
        if isinstance(exc, RateLimitExceeded):
            wait = exc.retry_after.total_seconds()
        elif _retryable(exc):
            wait = float((retry_count + 1) ** 2)
        else:
            return RetryOption(False)
        if wait > self._limits.max_wait:
            return RetryOption(False)
        _LOG.warning(
            "GitHub %s: %s; retrying in %.1f s (retry %d of %d)",
            self.project,
            _why(exc),
            wait,
            retry_count + 1,
            self._limits.retries,
        )
        # githubkit waits a minute for a zero timedelta, so never hand it one.
        return RetryOption(True, timedelta(seconds=max(wait, 0.001)))

    def _error(self, exc: GitHubException, doing: str) -> FleetError:
        # A failure while authenticating (the App's token exchange) arrives wrapped in RequestError.
        cause = exc.exc if isinstance(exc, RequestError) and not isinstance(exc, RequestFailed) else exc
        if isinstance(cause, RequestFailed):
            delay = cause.retry_after.total_seconds() if isinstance(cause, RateLimitExceeded) else None
            status: int | None = cause.response.status_code
            detail = _message(cause)
        elif isinstance(cause, httpx.TransportError):
            status, detail, delay = None, f"{type(cause).__name__}: {cause}", None
        elif isinstance(cause, AuthCredentialError):
            return PermanentError(f"GitHub {self.project}: {doing}: cannot authenticate", hint=_TOKEN_HINT)
        else:
            return PermanentError(
                f"GitHub {self.project}: {doing}: {type(cause).__name__}",
                hint="check the base URL and the credentials",
            )
        return failure_error(
            Failure("GitHub", self.project, doing, status, detail, delay),
            secrets=[secret.reveal() for secret in self._secrets],
            scopes_hint=_SCOPES_HINT,
            token_hint=_TOKEN_HINT,
        )


class _Thread:
    """The comments of one pull request, for `sticky.upsert`."""

    def __init__(self, forge: GitHubForge, number: int) -> None:
        self._forge = forge
        self._number = number

    def list(self) -> list[sticky.Comment]:
        return self._forge._list_comments(self._number)

    def create(self, body: str) -> sticky.Comment:
        return self._forge._create_comment(self._number, body)

    def update(self, comment_id: int, body: str) -> sticky.Comment:
        return self._forge._update_comment(comment_id, body)

    def delete(self, comment_id: int) -> None:
        self._forge._delete_comment(comment_id)


def _retryable(exc: GitHubException) -> bool:
    if isinstance(exc, RequestFailed):
        return exc.response.status_code >= 500 and exc.request.method in _IDEMPOTENT
    if isinstance(exc, RequestError) and isinstance(exc.exc, httpx.TransportError):
        try:
            return exc.exc.request.method in _IDEMPOTENT
        except RuntimeError:
            return False
    return False


def _why(exc: GitHubException) -> str:
    if isinstance(exc, RateLimitExceeded):
        return f"rate limited ({exc.response.status_code})"
    if isinstance(exc, RequestFailed):
        return f"server error ({exc.response.status_code})"
    return "no answer"


def _message(exc: RequestFailed) -> str:
    """GitHub's own words for a failure: its message and those of its validation errors."""
    try:
        answer = exc.response.raw_response.json()
    except ValueError:
        answer = None
    said = []
    if isinstance(answer, dict):
        said.append(str(answer.get("message") or ""))
        for error in answer.get("errors") or ():
            if isinstance(error, dict) and error.get("message"):
                said.append(str(error["message"]))
    words = "; ".join(part for part in said if part)
    return words or exc.response.reason_phrase


def _chained(exc: GitHubException) -> BaseException | None:
    """The exception worth chaining: the HTTP one (it carries no credentials), not githubkit's."""
    if isinstance(exc, RequestError) and isinstance(exc.exc, httpx.HTTPError):
        return exc.exc
    return None


def _kept(value: str | None) -> str | UnsetType:
    """A field to change, or UNSET (left out of the request) to keep it."""
    return UNSET if value is None else value


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _comments_of(page: Response[list[models.IssueComment]]) -> list[sticky.Comment]:
    return [_comment(comment) for comment in page.parsed_data]


def _comment(comment: models.IssueComment) -> sticky.Comment:
    return sticky.Comment(id=comment.id, body=_text(comment.body), url=comment.html_url)


def _pull(pull: models.PullRequest | models.PullRequestSimple) -> PullRequest:
    state: PullState = (
        "merged" if pull.merged_at is not None else "open" if pull.state == "open" else "closed"
    )
    return PullRequest(
        number=pull.number,
        url=pull.html_url,
        title=pull.title,
        body=_text(pull.body),
        state=state,
        head=pull.head.ref,
        base=pull.base.ref,
    )


def _issue(issue: Any) -> Issue:
    labels = tuple(
        label if isinstance(label, str) else _text(getattr(label, "name", "")) for label in issue.labels
    )
    return Issue(
        number=issue.number,
        url=issue.html_url,
        title=issue.title,
        body=_text(issue.body),
        state="closed" if issue.state == "closed" else "open",
        labels=labels,
    )
