"""GitLab's REST API v4 through python-gitlab: the only module that imports python-gitlab (and the
requests library under it).

A pull request here is a merge request and its number the iid; fleet's comment is a merge request
note. Rate limits are left to python-gitlab's own retries (`obey_rate_limit`: it waits what
`Retry-After` or `RateLimit-Reset` says) with `Limits.retries`; a response hook on the session
refuses a wait longer than `Limits.max_wait`, so no call sleeps unbounded. Server errors and lost
connections are retried (`retry_transient_errors`) only for requests that are safe to repeat.
Every python-gitlab and requests exception is mapped here; none leaves this module.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import gitlab
import gitlab.exceptions
import requests
from gitlab.v4.objects import Project

from reconciler.errors import FleetError, PermanentError
from reconciler.vcs import sticky
from reconciler.vcs.base import (
    PROCESS_PACER,
    STATUS_STATES,
    Failure,
    Issue,
    Limits,
    PullRequest,
    Revealable,
    StatusResult,
    StatusState,
    WritePacer,
    as_secret,
    check_length,
    failure_error,
    one_line,
)

_LOG = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://gitlab.com"
MAX_BODY_CHARS = 1_000_000
"""GitLab refuses note, merge request and issue bodies longer than this."""
STATUS_DESCRIPTION_CHARS = 140
FORGE_STATES: Mapping[StatusState, str] = {
    "success": "success",
    "failure": "failed",
    "pending": "pending",
    # GitLab has no "error": a plan that could not run must not look harmless (canceled would).
    "error": "failed",
}
_SCOPES_HINT = "check the token: fleet needs the api scope and at least the Developer role in the project"
_TOKEN_HINT = "check that the token is valid, not expired or revoked, and sent to the right GitLab"


class _WaitTooLong(Exception):
    """GitLab asked for a longer wait than `Limits.max_wait` allows."""

    def __init__(self, wait: float, status: int) -> None:
        super().__init__(f"GitLab asked to wait {wait:.0f} s")
        self.wait = wait
        self.status = status


class _Unexpected(Exception):
    """GitLab's answer is not what its API documents."""


class GitLabForge(sticky.StickyComments):
    """One GitLab project (`group/name` or its numeric id), through python-gitlab; see
    `reconciler.vcs.gitlab_api()`."""

    name = "GitLab"
    max_body_chars = MAX_BODY_CHARS

    def __init__(
        self,
        project: str | int,
        *,
        token: str | Revealable,
        base_url: str = DEFAULT_BASE_URL,
        limits: Limits | None = None,
        pacer: WritePacer | None = None,
    ) -> None:
        self.project = str(project).strip("/")
        if not self.project:
            raise PermanentError(
                "GitLab project is empty", hint="name the project as group/name or by its id"
            )
        self.base_url = base_url.rstrip("/")
        self._web = self.base_url.removesuffix("/api/v4")
        self._limits = limits or Limits()
        self._pacer = pacer or PROCESS_PACER
        self._token = as_secret(token)
        self._local = threading.local()
        self._total_lock = threading.Lock()
        self._total = 0
        session = requests.Session()
        session.hooks["response"].append(self._on_response)
        self._gitlab = gitlab.Gitlab(
            self._web,
            private_token=self._token.reveal(),
            timeout=self._limits.timeout,
            user_agent="fleet",
            keep_base_url=True,
            session=session,
        )
        self._project: Project = self._gitlab.projects.get(self.project, lazy=True)

    def __repr__(self) -> str:
        return f"GitLabForge(project={self.project!r}, base_url={self.base_url!r})"

    @property
    def api_calls(self) -> int:
        return self._total

    def close(self) -> None:
        self._gitlab.session.close()

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
        forge_state = FORGE_STATES[state]
        with self._operation(f"setting status {context!r} on commit {sha[:12]}") as tally:
            data = {
                "state": forge_state,
                "name": context,
                "description": one_line(description, STATUS_DESCRIPTION_CHARS),
            }
            if target_url is not None:
                data["target_url"] = target_url
            self._write()
            self._project.commits.get(sha, lazy=True).statuses.create(data, **self._once())
        return StatusResult(
            sha=sha, state=state, forge_state=forge_state, context=context, api_calls=tally.count
        )

    def find_pull(self, head_branch: str) -> PullRequest | None:
        with self._operation(f"looking for the open merge request from {head_branch!r}"):
            found = self._project.mergerequests.list(
                source_branch=head_branch, state="opened", per_page=100, get_all=False, **self._again()
            )
            return _pull(found[0].attributes) if found else None

    def open_pull(self, head: str, base: str, title: str, body: str) -> PullRequest:
        doing = f"opening a merge request from {head!r} into {base!r}"
        self._fits(body, doing)
        with self._operation(doing):
            self._write()
            made = self._project.mergerequests.create(
                {"source_branch": head, "target_branch": base, "title": title, "description": body},
                **self._once(),
            )
            return _pull(made.attributes)

    def update_pull(self, number: int, title: str | None = None, body: str | None = None) -> PullRequest:
        doing = f"updating merge request !{number}"
        self._fits(body, doing)
        with self._operation(doing):
            self._write()
            changed = self._project.mergerequests.update(
                number, _changes(title=title, description=body), **self._again()
            )
            return _pull(changed)

    def close_pull(self, number: int, comment: str | None = None) -> PullRequest:
        doing = f"closing merge request !{number}"
        self._fits(comment, doing)
        with self._operation(doing):
            if comment is not None:
                self._write()
                self._project.mergerequests.get(number, lazy=True).notes.create(
                    {"body": comment}, **self._once()
                )
            self._write()
            closed = self._project.mergerequests.update(number, {"state_event": "close"}, **self._again())
            return _pull(closed)

    def find_issue(self, marker: str, labels: Sequence[str] = ()) -> Issue | None:
        with self._operation("looking for fleet's open issue"):
            filters: dict[str, Any] = {"labels": list(labels)} if labels else {}
            issues = self._project.issues.list(
                state="opened",
                order_by="created_at",
                sort="asc",
                per_page=100,
                iterator=True,
                **filters,
                **self._again(),
            )
            for issue in issues:
                if marker in (issue.attributes.get("description") or ""):
                    return _issue(issue.attributes)
        return None

    def open_issue(self, title: str, body: str, labels: Sequence[str] = ()) -> Issue:
        doing = "opening an issue"
        self._fits(body, doing)
        with self._operation(doing):
            data: dict[str, Any] = {"title": title, "description": body}
            if labels:
                data["labels"] = ",".join(labels)
            self._write()
            made = self._project.issues.create(data, **self._once())
            return _issue(made.attributes)

    def update_issue(self, number: int, title: str | None = None, body: str | None = None) -> Issue:
        doing = f"updating issue #{number}"
        self._fits(body, doing)
        with self._operation(doing):
            self._write()
            changed = self._project.issues.update(
                number, _changes(title=title, description=body), **self._again()
            )
            return _issue(changed)

    def close_issue(self, number: int, comment: str | None = None) -> Issue:
        doing = f"closing issue #{number}"
        self._fits(comment, doing)
        with self._operation(doing):
            if comment is not None:
                self._write()
                self._project.issues.get(number, lazy=True).notes.create({"body": comment}, **self._once())
            self._write()
            closed = self._project.issues.update(number, {"state_event": "close"}, **self._again())
            return _issue(closed)

    # -- notes, for the sticky comment

    def _notes(self, number: int) -> Any:
        return self._project.mergerequests.get(number, lazy=True).notes

    def _comment(self, number: int, note: Mapping[str, Any]) -> sticky.Comment:
        note_id, body = note.get("id"), note.get("body")
        if not isinstance(note_id, int) or not isinstance(body, str):
            raise _Unexpected(f"a note without an id or a body: {sorted(note)}")
        return sticky.Comment(note_id, body, self._note_url(number, note_id))

    def _note_url(self, number: int, note_id: int) -> str | None:
        if self.project.isdigit():
            return None  # the project's path is unknown without asking GitLab
        return f"{self._web}/{quote(self.project)}/-/merge_requests/{number}#note_{note_id}"

    def _list_notes(self, number: int) -> list[sticky.Comment]:
        notes = self._notes(number).list(
            iterator=True, per_page=100, sort="asc", order_by="created_at", **self._again()
        )
        return [self._comment(number, note.attributes) for note in notes if not note.attributes.get("system")]

    def _create_note(self, number: int, body: str) -> sticky.Comment:
        self._write()
        note = self._notes(number).create({"body": body}, **self._once())
        return self._comment(number, note.attributes)

    def _update_note(self, number: int, note_id: int, body: str) -> sticky.Comment:
        self._write()
        changed = self._notes(number).update(note_id, {"body": body}, **self._again())
        return self._comment(number, changed)

    def _delete_note(self, number: int, note_id: int) -> None:
        self._write()
        self._notes(number).delete(note_id, **self._again())

    # -- the edge: counting, pacing, retrying, mapping errors

    def _again(self) -> dict[str, Any]:
        """Options of a request that is safe to repeat: rate limits, server errors and lost
        connections are retried."""
        return {"max_retries": self._limits.retries, "obey_rate_limit": True, "retry_transient_errors": True}

    def _once(self) -> dict[str, Any]:
        """Options of a request that creates something: retried only after a rate limit, which
        refused it; a server error may have done it already."""
        return {"max_retries": self._limits.retries, "obey_rate_limit": True, "retry_transient_errors": False}

    def _fits(self, text: str | None, doing: str) -> None:
        check_length(self.name, self.project, doing, text, self.max_body_chars)

    def _pull_name(self, number: int) -> str:
        return f"merge request !{number}"

    def _write(self) -> None:
        self._pacer.wait_turn(self._limits.write_interval)

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Count every request, and refuse a rate-limit wait beyond `Limits.max_wait` before
        python-gitlab sleeps through it."""
        tally = getattr(self._local, "tally", None)
        if tally is not None:
            tally.count += 1
        with self._total_lock:
            self._total += 1
        if response.status_code == 429 or response.status_code >= 500:
            wait = _asked_wait(response.headers)
            if wait is not None and wait > self._limits.max_wait:
                raise _WaitTooLong(wait, response.status_code)
            if response.status_code == 429:
                _LOG.warning(
                    "GitLab %s: rate limited (429); python-gitlab retries after %s s",
                    self.project,
                    "a short pause" if wait is None else f"{wait:.1f}",
                )

    @contextlib.contextmanager
    def _operation(self, doing: str) -> Iterator[sticky.Tally]:
        """One Forge call: its requests counted, and every python-gitlab and requests error
        mapped to fleet's tree."""
        tally = sticky.Tally()
        self._local.tally = tally
        try:
            yield tally
        except _WaitTooLong as exc:
            raise self._error(
                Failure("GitLab", self.project, doing, exc.status, "", delay=exc.wait)
            ) from None
        except (gitlab.exceptions.GitlabParsingError, _Unexpected, KeyError, TypeError, ValueError) as exc:
            # Not JSON, or JSON that is not GitLab's API: python-gitlab trusts the shape it gets.
            raise PermanentError(
                f"GitLab {self.project}: {doing}: the answer is not GitLab's API ({type(exc).__name__})",
                hint="check that the base URL is the GitLab instance (https://gitlab.example.com)",
            ) from None
        except gitlab.exceptions.RedirectError:
            raise PermanentError(
                f"GitLab {self.project}: {doing}: GitLab redirected the request",
                hint="give the base URL GitLab redirects to (https, the canonical host name)",
            ) from None
        except gitlab.exceptions.GitlabError as exc:
            status = exc.response_code
            delay = self._limits.max_wait if status == 429 else None
            raise self._error(
                Failure("GitLab", self.project, doing, status, _said(exc), delay=delay)
            ) from exc
        except requests.RequestException as exc:
            said = f"{type(exc).__name__}: {exc}"
            raise self._error(Failure("GitLab", self.project, doing, None, said)) from None
        finally:
            self._local.tally = None

    def _error(self, failure: Failure) -> FleetError:
        return failure_error(
            failure, secrets=[self._token.reveal()], scopes_hint=_SCOPES_HINT, token_hint=_TOKEN_HINT
        )


class _Thread:
    """The notes of one merge request, for `sticky.upsert`."""

    def __init__(self, forge: GitLabForge, number: int) -> None:
        self._forge = forge
        self._number = number

    def list(self) -> list[sticky.Comment]:
        return self._forge._list_notes(self._number)

    def create(self, body: str) -> sticky.Comment:
        return self._forge._create_note(self._number, body)

    def update(self, comment_id: int, body: str) -> sticky.Comment:
        return self._forge._update_note(self._number, comment_id, body)

    def delete(self, comment_id: int) -> None:
        self._forge._delete_note(self._number, comment_id)


def _asked_wait(headers: Mapping[str, str]) -> float | None:
    """The seconds GitLab asks to wait, as python-gitlab reads them: Retry-After, else RateLimit-Reset."""
    try:
        if "Retry-After" in headers:
            return float(headers["Retry-After"])
        if "RateLimit-Reset" in headers:
            return max(0.0, float(headers["RateLimit-Reset"]) - time.time())
    except ValueError:
        return None
    return None


def _said(exc: gitlab.exceptions.GitlabError) -> str:
    """GitLab's own words: its message is a string, a list of them, or field names with lists."""
    message: Any = exc.error_message
    if isinstance(message, list):
        return "; ".join(str(part) for part in message)
    if isinstance(message, dict):
        return "; ".join(
            f"{key} {'; '.join(map(str, value)) if isinstance(value, list) else value}"
            for key, value in message.items()
        )
    return str(message)


def _changes(**fields: str | None) -> dict[str, str]:
    return {key: value for key, value in fields.items() if value is not None}


def _pull(attributes: Mapping[str, Any]) -> PullRequest:
    state = attributes.get("state")
    return PullRequest(
        number=int(attributes["iid"]),
        url=str(attributes.get("web_url") or ""),
        title=str(attributes.get("title") or ""),
        body=str(attributes.get("description") or ""),
        state="open" if state == "opened" else "merged" if state == "merged" else "closed",
        head=str(attributes.get("source_branch") or ""),
        base=str(attributes.get("target_branch") or ""),
    )


def _issue(attributes: Mapping[str, Any]) -> Issue:
    return Issue(
        number=int(attributes["iid"]),
        url=str(attributes.get("web_url") or ""),
        title=str(attributes.get("title") or ""),
        body=str(attributes.get("description") or ""),
        state="open" if attributes.get("state") == "opened" else "closed",
        labels=tuple(str(label) for label in attributes.get("labels") or ()),
    )
