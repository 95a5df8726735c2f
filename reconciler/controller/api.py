"""The controller's HTTP API (FastAPI): health, readiness, metrics, and `/api/v1` for scripts and
the web UI alike.

Every `/api/v1` call needs a bearer token of `spec.controller.apiTokens` in fleet.yaml (read
through its credentialsRef, never from the repo), or the web UI's session cookie signed for one:
the `read` role may call the GET endpoints, the `operator` role everything. A missing or wrong
token gets 401, the wrong role 403; a call that changes something on a session cookie needs the
session's CSRF token (`X-CSRF-Token`), else 403. A token is compared in constant time and never
logged. No traceback reaches a client. Each answer's body comes from `queries` (reads) or the
controller (operator actions), the functions the web UI's pages call as well.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from reconciler.controller import answers
from reconciler.controller.answers import Problem
from reconciler.controller.controller import Controller
from reconciler.controller.queries import Filter, FleetView, NotFound
from reconciler.controller.sessions import CSRF_HEADER, SESSION_COOKIE, SessionBook, caller_of_token, same
from reconciler.controller.webhooks import Followed as PushesOf
from reconciler.controller.webhooks import webhook_router
from reconciler.engine import RunOptions, Selection
from reconciler.errors import FleetError, TemporaryError, UsageError
from reconciler.report.markdown import render_markdown
from reconciler.report.plan_json import plan_to_dict
from reconciler.spec.loader import InvalidRevision
from reconciler.state import StateStore

API_VERSION = "v1"
STATUS_PATH = f"/api/{API_VERSION}/status"
MAX_LIMIT = 500
MAX_RUN_ID = 2**63 - 1  # the store's integer; a larger one names no run

# Declares the bearer scheme in the schema only: `_caller` reads and checks the header itself.
_BEARER = HTTPBearer(auto_error=False, description="A token of spec.controller.apiTokens in fleet.yaml.")
Responses = dict[int | str, dict[str, Any]]


def _problem(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": Problem, "description": description, **extra}


_UNAUTHORIZED: Responses = {
    401: _problem(
        "No bearer token, or not one of the API's.",
        headers={"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    )
}
_FORBIDDEN: Responses = {403: _problem("The token's role is `read`; this needs `operator`.")}
_INVALID: Responses = {422: _problem("The request does not fit this schema.")}
_UNAVAILABLE: Responses = {
    503: _problem("The controller is busy or stopping: try again, or another replica.")
}
_SUSPENSION_ANSWERS: Responses = {
    400: _problem("No such target, or a bad selector."),
    **_FORBIDDEN,
    409: _problem("The change cannot be made (the revision in force does not allow it)."),
    **_INVALID,
    **_UNAVAILABLE,
}


class Caller:
    """Who called, by the name of their token, and what they may do."""

    def __init__(self, name: str, role: str) -> None:
        self.name = name
        self.role = role


# Token value -> (name, role), as last read (a rotated secret is taken without a restart); called
# on the event loop, so it must answer from what it keeps, never read a secret itself.
TokenSource = Callable[[], Mapping[str, tuple[str, str]]]


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
T = TypeVar("T")


def _caller(tokens: TokenSource, request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    cookie = request.cookies.get(SESSION_COOKIE)
    if not header and cookie:
        return _session_caller(request, cookie)
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    found = caller_of_token(tokens(), given)
    if found is None:
        raise HTTPException(401, "the bearer token is not valid", headers={"WWW-Authenticate": "Bearer"})
    return Caller(*found)


class KeptStatus:
    """`GET /api/v1/status` with a valid bearer token, answered before routing with the status the
    controller keeps (the route's answer, byte for byte). Dashboards poll it, often many at once
    and while a pass runs: this way a call costs a header check and a send, a fifth of what it
    costs through the router and its dependencies. Anything else (no token or a wrong one, a
    session cookie, a status not kept) goes on to the route, which answers as the API does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self._kept(scope) if scope["type"] == "http" else None
        if body is None:
            await self.app(scope, receive, send)
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _kept(scope: Scope) -> bytes | None:
        if scope["method"] != "GET" or scope["path"] != STATUS_PATH:
            return None
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"").decode("latin-1")
        scheme, _, given = header.partition(" ")
        state = scope["app"].state
        tokens: TokenSource | None = getattr(state, "tokens", None)
        if scheme.lower() != "bearer" or not given.strip() or tokens is None:
            return None
        if caller_of_token(tokens(), given) is None:
            return None
        controller: Controller | None = getattr(state, "controller", None)
        try:
            return controller.status().body if controller is not None else None
        except TemporaryError:
            return None


def _session_caller(request: Request, cookie: str) -> Caller:
    """The web UI's session: valid for the token it was signed for, until it expires or is signed
    out; a change needs its CSRF token."""
    sessions: SessionBook = request.app.state.sessions
    session = sessions.read(cookie)
    if session is None:
        raise HTTPException(
            401, "the session has ended: sign in again", headers={"WWW-Authenticate": "Bearer"}
        )
    if request.method not in SAFE_METHODS and not same(request.headers.get(CSRF_HEADER), session.csrf):
        raise HTTPException(403, "a change made with a session cookie needs its CSRF token (X-CSRF-Token)")
    return Caller(session.name, session.role)


class ReconcileRequest(BaseModel):
    """What an emergency reconcile is about, and why (the audit record says it)."""

    model_config = ConfigDict(extra="forbid")

    targets: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list, max_length=1000)
    selector: str | None = Field(None, max_length=1000)
    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S")
    incident: str | None = Field(None, max_length=200)
    emergency: bool = Field(False, description="Bypass the blast radius and change windows (recorded).")
    breakLock: bool = Field(False, description="Take the leases of other runs (recorded).")
    fingerprint: str | None = Field(
        None,
        max_length=128,
        description="The plan confirmed (POST /api/v1/plan): a different one is refused.",
    )

    @model_validator(mode="after")
    def _something(self) -> ReconcileRequest:
        if not self.targets and not self.selector:
            raise ValueError("name what to reconcile: targets or selector")
        return self


class PlanRequest(BaseModel):
    """What an emergency reconcile would be about: its plan is shown before it is confirmed."""

    model_config = ConfigDict(extra="forbid")

    targets: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list, max_length=1000)
    selector: str | None = Field(None, max_length=1000)

    @model_validator(mode="after")
    def _something(self) -> PlanRequest:
        if not self.targets and not self.selector:
            raise ValueError("name what to plan: targets or selector")
        return self


class ApproveRequest(BaseModel):
    """A plan that waits on the blast radius, approved: it runs now, recorded with who approved."""

    model_config = ConfigDict(extra="forbid")

    targets: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list, max_length=1000)
    selector: str | None = Field(None, max_length=1000)
    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S")
    fingerprint: str | None = Field(
        None, max_length=128, description="The plan approved (POST /api/v1/plan): a different one is refused."
    )

    @model_validator(mode="after")
    def _something(self) -> ApproveRequest:
        if not self.targets and not self.selector:
            raise ValueError("name what to approve: targets or selector")
        return self


class SuspendRequest(BaseModel):
    """What to suspend or resume, and why (the audit record says it)."""

    model_config = ConfigDict(extra="forbid")

    targets: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list, max_length=1000)
    selector: str | None = Field(None, max_length=1000)
    kind: str | None = Field(None, max_length=100)
    reason: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _something(self) -> SuspendRequest:
        if not self.targets and not self.selector:
            raise ValueError("name what to suspend or resume: targets or selector")
        return self


def suspension(
    controller: Controller, body: SuspendRequest, caller: Caller, *, resume: bool
) -> dict[str, Any]:
    """Suspend or resume, as `POST /api/v1/suspend` and `/resume` (and the web UI's forms) do."""
    if not resume and (body.reason is None or not body.reason.strip()):
        raise HTTPException(422, "reason is required: it goes into the audit record")
    selection = Selection(body.kind, body.selector, tuple(body.targets))
    try:
        return controller.suspend(selection, body.reason, f"api:{caller.name}", resume=resume)
    except (FleetError, ValueError) as exc:
        raise refusal(exc) from None


def reconcile_now(controller: Controller, body: ReconcileRequest, caller: Caller) -> dict[str, Any]:
    """The emergency reconcile, as `POST /api/v1/reconcile` (and the web UI's confirmation) runs it."""
    options = RunOptions(
        kind="reconcile",
        reason=body.reason,
        incident=body.incident,
        emergency=body.emergency,
        allow_destructive=body.emergency,
        break_lock=body.breakLock,
        operator=f"api:{caller.name}",
        refuse_suspended=True,
    )
    try:
        run_id = controller.emergency(
            tuple(body.targets), body.selector, options, fingerprint=body.fingerprint
        )
    except (FleetError, ValueError) as exc:
        raise refusal(exc) from None
    return {"run": run_id, "operator": options.operator}


def approve(controller: Controller, body: ApproveRequest, caller: Caller) -> dict[str, Any]:
    """Run a plan that waits on the blast radius, as `POST /api/v1/approve` does: its run records
    who approved (`summary.approvedBy`) and why; change windows and suspensions still hold."""
    operator = f"api:{caller.name}"
    options = RunOptions(
        kind="reconcile",
        reason=f"approved over the blast radius: {body.reason}",
        operator=operator,
        refuse_suspended=True,
        approved_by=operator,
    )
    try:
        run_id = controller.emergency(
            tuple(body.targets), body.selector, options, fingerprint=body.fingerprint
        )
    except (FleetError, ValueError) as exc:
        raise refusal(exc) from None
    return {"run": run_id, "operator": operator}


def plan_preview(controller: Controller, body: PlanRequest) -> dict[str, Any]:
    """The plan an emergency reconcile would run now, as `POST /api/v1/plan` answers it."""
    try:
        plan = controller.preview(tuple(body.targets), body.selector)
    except (FleetError, ValueError) as exc:
        raise refusal(exc) from None
    return {
        "revision": plan.revision,
        "fingerprint": plan.fingerprint(),
        "summary": plan.summary_line(),
        "changes": len(plan.changes()),
        "markdown": render_markdown(plan, title="fleet reconcile --now: the plan"),
        "plan": plan_to_dict(plan, bounded=True),
    }


def refusal(exc: FleetError | ValueError) -> HTTPException:
    """What an operator call that was refused answers: 422 for a revision with errors where the
    call looks, 400 for what it named, 503 for what may pass, 409 for a guard or a lease."""
    if isinstance(exc, InvalidRevision):
        errors = [d.render() for d in exc.revision.errors[:50]]
        return HTTPException(422, {"message": str(exc), "errors": errors})
    if isinstance(exc, UsageError | ValueError):
        return HTTPException(400, str(exc))
    if isinstance(exc, TemporaryError):
        return HTTPException(503, str(exc))
    return HTTPException(409, str(exc))


# The checks are coroutines, and the token source reads nothing when asked: a call is authorized
# on the event loop, without waiting for a thread of the pool that runs the blocking endpoints.
async def _reader(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)]
) -> Caller:
    tokens: TokenSource = request.app.state.tokens
    return _caller(tokens, request)


async def _operator(caller: Annotated[Caller, Depends(_reader)]) -> Caller:
    if caller.role != "operator":
        raise HTTPException(403, f"token {caller.name} has the {caller.role} role; this needs operator")
    return caller


ReadCaller = Annotated[Caller, Depends(_reader)]
OperatorCaller = Annotated[Caller, Depends(_operator)]


def _view(request: Request) -> FleetView:
    found: FleetView = request.app.state.view
    return found


# The store reads that make a page run in threads of their own rather than in the request pool's
# 40, which take turns at the interpreter's lock: fewer threads answer more pages, and sooner. On
# SQLite a read is local work for the interpreter: two threads, so that one long read (an
# overview after a new revision) does not hold up every page behind it. On PostgreSQL a read waits
# on the network, and four overlap those waits.
READ_THREADS = {"sqlite": 2, "postgresql": 4}


def read_threads(store: StateStore) -> ThreadPoolExecutor:
    """The threads that read the store for the API's and the UI's answers."""
    return ThreadPoolExecutor(READ_THREADS.get(store.dialect, 4), thread_name_prefix="fleet-read")


async def in_read_thread(request: Request, work: Callable[[], T]) -> T:
    """`work` (store reads for an answer) in one of the app's read threads, with the caller's
    context variables."""
    readers: ThreadPoolExecutor = request.app.state.readers
    return await asyncio.get_running_loop().run_in_executor(readers, contextvars.copy_context().run, work)


def read_answer(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A read's answer, with its errors as the API says them: 404 for what is not there, 400
    for what was asked wrong."""
    try:
        return work()
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except UsageError as exc:
        raise HTTPException(400, str(exc)) from None


def _controller(request: Request) -> Controller:
    found: Controller = request.app.state.controller
    return found


def _store(request: Request) -> StateStore:
    found: StateStore = request.app.state.store
    return found


def build_app(
    controller: Controller,
    store: StateStore,
    tokens: TokenSource,
    *,
    routers: Sequence[APIRouter] = (),
    log: Callable[..., None] | None = None,
) -> FastAPI:
    """The controller's app: `routers` (the webhooks) are mounted beside the API; a request that
    fails unexpectedly is written to `log` (never to the client)."""
    app = create_app(routers)
    app.state.log = log
    app.state.controller = controller
    app.state.store = store
    app.state.tokens = tokens
    app.state.sessions = SessionBook(tokens, store)
    app.state.readers = read_threads(store)
    app.state.view = FleetView(controller, store)
    return app


def openapi_document() -> str:
    """The OpenAPI schema of the API and the webhooks (checked in as schemas/openapi.json)."""
    pushes = webhook_router(followed=PushesOf("main"), secrets=lambda forge: None, on_push=lambda push: None)
    return json.dumps(create_app([pushes]).openapi(), indent=2, sort_keys=True) + "\n"


def create_app(routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The routes; what they serve is in `app.state` (controller, store, tokens)."""
    app = FastAPI(
        title="fleet controller",
        version=API_VERSION,
        description="Status, resources and runs of the fleet controller, and its operator actions.",
    )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log: Callable[..., None] | None = getattr(request.app.state, "log", None)
        if log is not None:
            frames = traceback.extract_tb(exc.__traceback__)[-3:]
            log(
                "request failed",
                path=request.url.path,
                error=f"{type(exc).__name__}: {exc}"[:500],
                where=[f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} in {f.name}" for f in frames],
            )
        return JSONResponse({"detail": "internal error; the controller's log says more"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()]
        return JSONResponse({"detail": problems[:20]}, status_code=422)

    @app.get("/healthz", summary="The process answers.", response_model=answers.Health)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="A revision is in force and the state store answers.",
        response_model=answers.Readiness,
        responses={503: {"model": answers.Readiness, "description": "Not ready, and why."}},
    )
    def readyz(request: Request) -> JSONResponse:
        problems = []
        if not _controller(request).ready:
            problems.append("no revision in force yet")
        try:
            _store(request).history(limit=1)
        except Exception:
            problems.append("the state store does not answer")
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get(
        "/metrics",
        summary="Prometheus metrics.",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def metrics(request: Request) -> Response:
        found = _controller(request).metrics
        return Response(found.exposition(), media_type=found.content_type)

    api = APIRouter(prefix=f"/api/{API_VERSION}", responses=_UNAUTHORIZED)
    app.add_middleware(KeptStatus)

    @api.get(
        "/status",
        summary="Revisions applied and attempted, resources by kind and state, the queue.",
        response_model=answers.Status,
        responses={503: _problem("The state store has not answered for a while: try again.")},
    )
    async def status(request: Request, caller: ReadCaller) -> Response:
        # The controller keeps the answer, read at most a second ago; it is sent as kept, from
        # the event loop, so that it waits neither for a thread nor for the store.
        try:
            kept = _controller(request).status()
        except TemporaryError as exc:
            raise HTTPException(503, str(exc)) from None
        return Response(kept.body, media_type="application/json")

    @api.get(
        "/resources",
        summary="Resources of the revision in force, with their state.",
        response_model=answers.ResourceList,
        responses={400: _problem("A bad selector."), **_INVALID},
    )
    def resources(
        request: Request,
        caller: ReadCaller,
        selector: Annotated[
            str | None, Query(max_length=1000, description="Label selector (the CLI's).")
        ] = None,
        kind: Annotated[str | None, Query(max_length=100)] = None,
        state: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT * 20)] = 1000,
    ) -> dict[str, Any]:
        return read_answer(lambda: _view(request).resources(selector, kind, state, limit))

    @api.get(
        "/overview",
        summary="Resources counted by state per site and per rack, filtered.",
        response_model=answers.Overview,
        responses={400: _problem("A bad selector or kind."), **_INVALID},
    )
    def overview(
        request: Request,
        caller: ReadCaller,
        kind: Annotated[str | None, Query(max_length=100)] = None,
        state: Annotated[str | None, Query(max_length=100)] = None,
        site: Annotated[str | None, Query(max_length=100)] = None,
        selector: Annotated[
            str | None, Query(max_length=1000, description="Label selector (the CLI's).")
        ] = None,
        q: Annotated[str | None, Query(max_length=300, description="Text the address contains.")] = None,
    ) -> dict[str, Any]:
        wanted = Filter(kind, state, site, selector, q)
        return read_answer(lambda: _view(request).overview(wanted))

    @api.get(
        "/racks/{site}/{rack}",
        summary="The resources of one rack, each with what runs on it (`-/-`: of no rack).",
        response_model=answers.Rack,
        responses={400: _problem("A bad selector or kind."), 404: _problem("No such rack."), **_INVALID},
    )
    def rack(
        request: Request,
        site: Annotated[str, Path(max_length=100)],
        rack: Annotated[str, Path(max_length=100)],
        caller: ReadCaller,
        kind: Annotated[str | None, Query(max_length=100)] = None,
        state: Annotated[str | None, Query(max_length=100)] = None,
        selector: Annotated[
            str | None, Query(max_length=1000, description="Label selector (the CLI's).")
        ] = None,
        q: Annotated[str | None, Query(max_length=300, description="Text the address contains.")] = None,
    ) -> dict[str, Any]:
        wanted = Filter(kind, state, None, selector, q)
        return read_answer(lambda: _view(request).rack(site, rack, wanted))

    @api.get(
        "/resources/{address:path}",
        summary="One resource: spec, observation, drift, enforcement, actions, lease, suspension.",
        response_model=answers.Resource,
        responses={404: _problem("No such resource in the revision in force."), **_INVALID},
    )
    def resource(request: Request, address: str, caller: ReadCaller) -> dict[str, Any]:
        return read_answer(lambda: _view(request).resource(address))

    @api.get(
        "/runs",
        summary="Past and running runs, newest first.",
        response_model=answers.RunList,
        responses=_INVALID,
    )
    def runs(
        request: Request, caller: ReadCaller, limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50
    ) -> dict[str, Any]:
        return read_answer(lambda: _view(request).runs(limit))

    @api.get(
        "/runs/{run_id}",
        summary="One run with its actions.",
        response_model=answers.Run,
        responses={404: _problem("No such run."), **_INVALID},
    )
    def run(
        request: Request, run_id: Annotated[int, Path(ge=1, le=MAX_RUN_ID)], caller: ReadCaller
    ) -> dict[str, Any]:
        return read_answer(lambda: _view(request).run(run_id))

    @api.post(
        "/plan",
        summary="The plan an emergency reconcile of targets or a selector would run now (nothing applied).",
        response_model=answers.PlanPreview,
        responses={
            400: _problem("No such target, or a bad selector."),
            **_FORBIDDEN,
            409: _problem("The plan cannot be made."),
            422: _problem(
                "The request does not fit this schema, or the revision has errors in the targets or"
                " what they reference."
            ),
            **_UNAVAILABLE,
        },
    )
    def plan(request: Request, body: PlanRequest, caller: OperatorCaller) -> dict[str, Any]:
        return plan_preview(_controller(request), body)

    @api.post(
        "/reconcile",
        summary="The emergency path of `fleet reconcile --now`: reconcile targets or a selector now.",
        status_code=202,
        response_model=answers.ReconcileAccepted,
        responses={
            400: _problem("No such target, or a bad selector."),
            **_FORBIDDEN,
            409: _problem(
                "A guard refused (blast radius, change window, a lease held, suspended), or the plan"
                " is not the one confirmed."
            ),
            422: _problem(
                "The request does not fit this schema, or the revision has errors in the targets or"
                " what they reference."
            ),
            **_UNAVAILABLE,
        },
    )
    def reconcile(request: Request, body: ReconcileRequest, caller: OperatorCaller) -> dict[str, Any]:
        return reconcile_now(_controller(request), body, caller)

    @api.post(
        "/approve",
        summary="Approve a plan that waits on the blast radius: it runs now, recorded with who approved.",
        status_code=202,
        response_model=answers.ReconcileAccepted,
        responses={
            400: _problem("No such target, or a bad selector."),
            **_FORBIDDEN,
            409: _problem(
                "A guard refused (change window, a lease held, suspended), or the plan is not the one"
                " approved."
            ),
            422: _problem(
                "The request does not fit this schema, or the revision has errors in the targets or"
                " what they reference."
            ),
            **_UNAVAILABLE,
        },
    )
    def approve_plan(request: Request, body: ApproveRequest, caller: OperatorCaller) -> dict[str, Any]:
        return approve(_controller(request), body, caller)

    @api.post(
        "/suspend",
        summary="Suspend resources: observed and reported, never acted on.",
        response_model=answers.SuspensionDone,
        responses=_SUSPENSION_ANSWERS,
    )
    def suspend(request: Request, body: SuspendRequest, caller: OperatorCaller) -> dict[str, Any]:
        return suspension(_controller(request), body, caller, resume=False)

    @api.post(
        "/resume",
        summary="End suspensions; the resources are reconciled at once.",
        response_model=answers.SuspensionDone,
        responses=_SUSPENSION_ANSWERS,
    )
    def resume(request: Request, body: SuspendRequest, caller: OperatorCaller) -> dict[str, Any]:
        return suspension(_controller(request), body, caller, resume=True)

    @api.post(
        "/poll",
        summary="Look at the followed repo now.",
        status_code=202,
        response_model=answers.PollAccepted,
        responses=_FORBIDDEN,
    )
    def poll(request: Request, caller: OperatorCaller) -> dict[str, str]:
        _controller(request).request_poll(f"asked by {caller.name}")
        return {"result": "accepted"}

    app.include_router(api)
    for router in routers:
        app.include_router(router)
    return app
