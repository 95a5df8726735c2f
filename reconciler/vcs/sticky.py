"""One sticky comment per pull request, the same way on every forge.

fleet's comment is the one that starts with a hidden marker; later runs edit it in place and never
delete and re-create it, so its link and its place in the conversation stay. Two runs that find no
comment at the same moment both create one; each then lists again, and both keep the OLDEST marker
comment (ids grow with time on every forge): a run whose own comment is newer writes its body into
the older one and deletes its own copy. Only a comment this run created is ever deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from reconciler.vcs.base import CommentAction, CommentResult, check_marker, is_marked, marked


@dataclass(frozen=True)
class Comment:
    """A comment as a forge module hands it over."""

    id: int
    body: str
    url: str | None


class CommentThread(Protocol):
    """The comments of one pull request, as a forge module reaches them."""

    def list(self) -> Sequence[Comment]:
        """Every comment of the pull request (all pages)."""
        ...

    def create(self, body: str) -> Comment: ...

    def update(self, comment_id: int, body: str) -> Comment: ...

    def delete(self, comment_id: int) -> None: ...


class Tally:
    """Requests made during one forge operation."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class StickyComments:
    """`Forge.upsert_comment` on top of a forge module's comment thread and bookkeeping."""

    def _thread(self, number: int) -> CommentThread:
        raise NotImplementedError

    def _pull_name(self, number: int) -> str:
        raise NotImplementedError

    def _fits(self, text: str | None, doing: str) -> None:
        raise NotImplementedError

    def _operation(self, doing: str) -> AbstractContextManager[Tally]:
        raise NotImplementedError

    def upsert_comment(self, pr: int, body: str, marker: str) -> CommentResult:
        check_marker(marker)
        doing = f"keeping fleet's comment on {self._pull_name(pr)}"
        self._fits(marked(body, marker), doing)
        with self._operation(doing) as tally:
            done = upsert(self._thread(pr), body, marker)
        return CommentResult(
            id=done.comment.id,
            url=done.comment.url,
            action=done.action,
            api_calls=tally.count,
            duplicates_removed=done.duplicates_removed,
        )


@dataclass(frozen=True)
class Upserted:
    comment: Comment
    action: CommentAction
    duplicates_removed: int


def upsert(thread: CommentThread, body: str, marker: str) -> Upserted:
    """Create or edit the one comment that starts with `marker`; see the module docstring."""
    check_marker(marker)
    text = marked(body, marker)
    found = [comment for comment in thread.list() if is_marked(comment.body, marker)]
    if found:
        return _keep_oldest(thread, found, text, created=None)
    created = thread.create(text)
    again = [comment for comment in thread.list() if is_marked(comment.body, marker)]
    # The new comment may not be listed yet; it still counts.
    if all(comment.id != created.id for comment in again):
        again.append(created)
    return _keep_oldest(thread, again, text, created=created)


def _keep_oldest(
    thread: CommentThread, found: Sequence[Comment], text: str, created: Comment | None
) -> Upserted:
    oldest = min(found, key=lambda comment: comment.id)
    if created is not None and oldest.id == created.id:
        return Upserted(created, "created", 0)
    kept = oldest if oldest.body == text else thread.update(oldest.id, text)
    action: CommentAction = "unchanged" if kept is oldest else "updated"
    if created is None:
        return Upserted(kept, action, 0)
    thread.delete(created.id)
    return Upserted(kept, "updated", 1)
