"""What fleet asks of a forge, as a `Forge` Protocol and plain frozen values.

A forge is where the fleet repo's pull requests live (GitHub or GitLab). fleet keeps one sticky
comment per pull request (found again by a hidden marker), sets commit statuses, and opens, updates
and closes the pull requests and issues that drift reports become. Nothing here talks to a forge:
`reconciler.vcs.github_api` and `reconciler.vcs.gitlab_api` implement the Protocol, each the only importer
of its SDK, and map every SDK exception to `TemporaryError` or `PermanentError` at their edge.

Secrets (tokens, an App's private key) travel as `Secret`, whose repr is masked; they must never
reach a message, a repr or a log line. Every write waits its turn at one `WritePacer` per process.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from reconciler.bounded import redact, shorten
from reconciler.errors import FleetError, PermanentError, TemporaryError
from reconciler.spec.secrets import Secret as Secret

StatusState = Literal["success", "failure", "pending", "error"]
"""A commit status as GitHub names it; GitLab's names are mapped by its module."""

STATUS_STATES: tuple[StatusState, ...] = ("success", "failure", "pending", "error")

CommentAction = Literal["created", "updated", "unchanged"]
PullState = Literal["open", "closed", "merged"]
IssueState = Literal["open", "closed"]


class Revealable(Protocol):
    """Anything that holds a secret and gives it out only when asked (this module's `Secret`,
    or the one credential sources hand out)."""

    def reveal(self) -> str: ...


def as_secret(value: str | Revealable) -> Secret:
    """A `Secret` for a plain string or for another secret holder."""
    return Secret(value if isinstance(value, str) else value.reveal())


@dataclass(frozen=True)
class Limits:
    """How patient a forge client is. The defaults suit production; tests pass tiny values.

    `write_interval`: seconds between two writes of this process (GitHub asks for about one second
    between content-creating requests). `max_wait`: the longest single wait for a rate limit or a
    `Retry-After`; a forge that asks for longer gets a `TemporaryError` carrying the full delay at
    once, so the caller can come back later instead of holding a worker. `retries`: how often one
    request is retried after a rate limit, a server error or a lost connection (writes that create
    something are retried only after a rate limit, which refused them). `timeout`: per request.
    """

    write_interval: float = 1.0
    max_wait: float = 60.0
    retries: int = 3
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.write_interval < 0 or self.max_wait < 0 or self.retries < 0 or self.timeout <= 0:
            raise ValueError(f"invalid forge limits {self!r}: intervals and counts must not be negative")


class WritePacer:
    """Spaces the writes of a process: each waits until `interval` seconds after the one before.

    Slots are handed out in order under a lock and waited for outside it, so concurrent writers
    queue instead of bursting. One pacer serves every forge client of a process (`PROCESS_PACER`);
    tests and callers with their own budget pass another.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = float("-inf")

    def wait_turn(self, interval: float) -> float:
        """Wait for this write's slot; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + interval
        waited = slot - now
        if waited > 0:
            self._sleep(waited)
        return waited


PROCESS_PACER = WritePacer()
"""The pacer every forge client of this process shares unless given another."""


@dataclass(frozen=True)
class CommentResult:
    """The sticky comment after `upsert_comment`.

    `action` says what this call did: `created` the comment, `updated` it in place, or left it
    `unchanged` (its body was already the one asked for). `api_calls` counts the HTTP requests the
    call made (list pages, the write, retries). `duplicates_removed` is 1 when another run created
    the comment at the same moment: this run's copy was deleted and the older one kept.
    """

    id: int
    url: str | None
    action: CommentAction
    api_calls: int
    duplicates_removed: int = 0


@dataclass(frozen=True)
class StatusResult:
    """A commit status as set: the state fleet asked for, the forge's own name for it, and the
    HTTP requests it took."""

    sha: str
    state: StatusState
    forge_state: str
    context: str
    api_calls: int


@dataclass(frozen=True)
class PullRequest:
    """A GitHub pull request or a GitLab merge request; `number` is GitLab's iid."""

    number: int
    url: str
    title: str
    body: str
    state: PullState
    head: str
    base: str


@dataclass(frozen=True)
class Issue:
    """A GitHub or GitLab issue; `number` is GitLab's iid."""

    number: int
    url: str
    title: str
    body: str
    state: IssueState
    labels: tuple[str, ...]


class Forge(Protocol):
    """One project on one forge, with the credentials fleet acts with.

    Every method talks to the forge and may raise `TemporaryError` (retry after `delay`: network,
    server errors, rate limits that outlast `Limits.max_wait` or the retries) or `PermanentError`
    (bad credentials, missing scopes, no such project or number, a request the forge rejects).
    Nothing else escapes. Methods are safe to call from several threads.
    """

    @property
    def name(self) -> str:
        """`GitHub` or `GitLab`, as messages name the forge."""
        ...

    @property
    def project(self) -> str:
        """`owner/name` on GitHub; `group/name` or a numeric id on GitLab."""
        ...

    @property
    def max_body_chars(self) -> int:
        """The longest comment, pull request or issue body the forge takes (markers included)."""
        ...

    @property
    def api_calls(self) -> int:
        """HTTP requests this client has made so far."""
        ...

    def upsert_comment(self, pr: int, body: str, marker: str) -> CommentResult:
        """Keep ONE comment on pull request `pr` that starts with `marker` (an HTML comment such as
        `<!-- fleet:plan -->`, added to `body` when missing): edit it in place if it exists (on any
        page of the comments), else create it. Never deletes and re-creates it. When two runs create
        it at the same moment, both keep the older one and the newer is deleted by its creator."""
        ...

    def set_status(
        self,
        sha: str,
        state: StatusState,
        description: str,
        context: str = "fleet/plan",
        target_url: str | None = None,
    ) -> StatusResult:
        """Set the commit status named `context` on `sha` (description shortened to what forges take)."""
        ...

    def find_pull(self, head_branch: str) -> PullRequest | None:
        """The open pull request from `head_branch` of this project, or None."""
        ...

    def open_pull(self, head: str, base: str, title: str, body: str) -> PullRequest:
        """Open a pull request from branch `head` into `base`."""
        ...

    def update_pull(self, number: int, title: str | None = None, body: str | None = None) -> PullRequest:
        """Change the title and/or body of a pull request (None keeps it)."""
        ...

    def close_pull(self, number: int, comment: str | None = None) -> PullRequest:
        """Close a pull request without merging, after commenting `comment` on it when given."""
        ...

    def find_issue(self, marker: str, labels: Sequence[str] = ()) -> Issue | None:
        """The oldest open issue whose body contains `marker`, among those with all `labels`
        (give labels on big projects: every open issue that matches them is read)."""
        ...

    def open_issue(self, title: str, body: str, labels: Sequence[str] = ()) -> Issue:
        """Open an issue; put the marker `find_issue` looks for into `body`."""
        ...

    def update_issue(self, number: int, title: str | None = None, body: str | None = None) -> Issue:
        """Change the title and/or body of an issue (None keeps it)."""
        ...

    def close_issue(self, number: int, comment: str | None = None) -> Issue:
        """Close an issue, after commenting `comment` on it when given."""
        ...

    def close(self) -> None:
        """Release connections; the client is not used again."""
        ...


_MARKER = re.compile(r"<!--[^\n]*?-->")


def check_marker(marker: str) -> None:
    """A marker is one hidden HTML comment on one line, so readers of the comment never see it."""
    if not _MARKER.fullmatch(marker) or "--" in marker[4:-3]:
        raise ValueError(f"a comment marker is one HTML comment like '<!-- fleet:plan -->', not {marker!r}")


def marked(body: str, marker: str) -> str:
    """`body` starting with `marker` (added on a line of its own when missing)."""
    return body if body.startswith(marker) else f"{marker}\n{body}"


def is_marked(body: str, marker: str) -> bool:
    """Whether a comment is fleet's: it starts with the marker (a quote of it in a reply does not)."""
    return body.lstrip().startswith(marker)


def check_length(forge: str, project: str, doing: str, text: str | None, limit: int) -> None:
    """Refuse, before asking, a body the forge would refuse for its length."""
    if text is not None and len(text) > limit:
        raise PermanentError(
            f"{forge} {project}: {doing}: the text is {len(text):,} characters long, more than "
            f"{forge} takes ({limit:,})",
            hint="render it within the forge's max_body_chars (the markdown renderer shortens to a limit)",
        )


def one_line(text: str, limit: int) -> str:
    """`text` on one line and at most `limit` characters (status descriptions)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class Failure:
    """What went wrong with one request, in the forge-neutral words `failure_error` maps."""

    forge: str
    project: str
    doing: str
    status: int | None = None
    detail: str = ""
    delay: float | None = None


def failure_error(
    failure: Failure, *, secrets: Iterable[str] = (), scopes_hint: str, token_hint: str
) -> FleetError:
    """The fleet error for a failed request: temporary for the network, server errors and rate
    limits; permanent for the rest, each with what to do. `secrets` are masked out of the detail."""
    where = f"{failure.forge} {failure.project}: {failure.doing}"
    detail = shorten(redact(" ".join(failure.detail.split()), list(secrets)))
    said = f": {detail}" if detail else ""
    status = failure.status
    if failure.delay is not None:
        return TemporaryError(
            f"{where}: rate limited by {failure.forge}{said}",
            delay=max(failure.delay, 1.0),
            hint=f"retry after {failure.delay:.0f} s; spread fleet's runs if this recurs",
        )
    if status is None:
        return TemporaryError(
            f"{where}: no answer from {failure.forge}{said}",
            delay=5.0,
            hint="check the network and the forge's base URL; worth retrying later",
        )
    if status >= 500:
        return TemporaryError(
            f"{where}: {failure.forge} failed ({status}){said}",
            delay=10.0,
            hint="the forge is having trouble; worth retrying later",
        )
    if status == 401:
        return PermanentError(f"{where}: the credentials were refused (401){said}", hint=token_hint)
    if status == 403:
        return PermanentError(f"{where}: not allowed (403){said}", hint=scopes_hint)
    if status == 404:
        return PermanentError(
            f"{where}: not found (404){said}",
            hint="check the project name and the number, and that the token can read the project: "
            "forges answer 404 for projects a token cannot see",
        )
    if status == 429:
        return TemporaryError(
            f"{where}: rate limited by {failure.forge} (429){said}",
            delay=60.0,
            hint="retry later; spread fleet's runs if this recurs",
        )
    return PermanentError(
        f"{where}: rejected ({status}){said}",
        hint="the forge refused the request as sent; its reason is above",
    )
