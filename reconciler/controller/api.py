"""The controller's HTTP API (FastAPI): health, readiness, metrics, and `/api/v1` for scripts and
the web UI alike.

Every `/api/v1` call needs a bearer token of `spec.controller.apiTokens` in fleet.yaml (read
through its credentialsRef, never from the repo): the `read` role may call the GET endpoints, the
`operator` role everything. A missing or wrong token gets 401, the wrong role 403; a token is
compared in constant time and never logged. No traceback reaches a client.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from reconciler.controller import answers
from reconciler.controller.answers import Problem
from reconciler.controller.controller import Controller
from reconciler.controller.webhooks import Followed as PushesOf
from reconciler.controller.webhooks import webhook_router
from reconciler.engine import RunOptions, Selection
from reconciler.errors import FleetError, TemporaryError, UsageError
from reconciler.report.history import history_data
from reconciler.spec.loader import InvalidRevision
from reconciler.spec.selector import parse_selector
from reconciler.state import StateStore

API_VERSION = "v1"
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


def _caller(tokens: TokenSource, request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    found: Caller | None = None
    for value, (name, role) in tokens().items():
        # Every configured token is compared, so the time taken says nothing about which matched.
        if hmac.compare_digest(value.encode(), given.strip().encode()) and found is None:
            found = Caller(name, role)
    if found is None:
        raise HTTPException(401, "the bearer token is not valid", headers={"WWW-Authenticate": "Bearer"})
    return found


class ReconcileRequest(BaseModel):
    """What an emergency reconcile is about, and why (the audit record says it)."""

    model_config = ConfigDict(extra="forbid")

    targets: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list, max_length=1000)
    selector: str | None = Field(None, max_length=1000)
    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S")
    incident: str | None = Field(None, max_length=200)
    emergency: bool = Field(False, description="Bypass the blast radius and change windows (recorded).")
    breakLock: bool = Field(False, description="Take the leases of other runs (recorded).")

    @model_validator(mode="after")
    def _something(self) -> ReconcileRequest:
        if not self.targets and not self.selector:
            raise ValueError("name what to reconcile: targets or selector")
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


def _suspension(request: Request, body: SuspendRequest, caller: Caller, *, resume: bool) -> dict[str, Any]:
    selection = Selection(body.kind, body.selector, tuple(body.targets))
    try:
        return _controller(request).suspend(selection, body.reason, f"api:{caller.name}", resume=resume)
    except (FleetError, ValueError) as exc:
        raise _refusal(exc) from None


def _refusal(exc: FleetError | ValueError) -> HTTPException:
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
) -> FastAPI:
    """The controller's app: `routers` (the webhooks) are mounted beside the API."""
    app = create_app(routers)
    app.state.controller = controller
    app.state.store = store
    app.state.tokens = tokens
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
        try:
            match = parse_selector(selector) if selector else None
        except (UsageError, ValueError) as exc:
            raise HTTPException(400, f"bad selector: {exc}") from None
        controller = _controller(request)
        found = []
        for resource in controller.resources():
            if kind is not None and resource.kind.lower() != kind.lower():
                continue
            if state is not None and resource.state != state:
                continue
            if match is not None:
                spec = controller.document(resource.address)
                if spec is None or not match(spec[0].metadata.labels):
                    continue
            found.append(resource.as_json())
        return {"items": found[:limit], "total": len(found)}

    @api.get(
        "/resources/{address:path}",
        summary="One resource: spec, observation, drift, actions, lease.",
        response_model=answers.Resource,
        responses={404: _problem("No such resource in the revision in force."), **_INVALID},
    )
    def resource(request: Request, address: str, caller: ReadCaller) -> dict[str, Any]:
        controller, store = _controller(request), _store(request)
        state = controller.resource(address)
        spec = controller.document(address)
        if state is None or spec is None:
            raise HTTPException(404, f"no resource {address} in the revision in force")
        document, path = spec
        observation = store.get_observations([address]).get(address)
        return {
            **state.as_json(),
            "file": path,
            "spec": json.loads(document.model_dump_json(by_alias=True, exclude_none=True)),
            "observation": (
                {
                    "state": observation.state,
                    "fields": observation.fields,
                    "reason": observation.reason,
                    "at": observation.observed_at.isoformat().replace("+00:00", "Z"),
                }
                if observation is not None
                else None
            ),
            "drift": [
                {
                    "field": d.field,
                    "expected": d.expected,
                    "actual": d.actual,
                    "firstSeen": d.first_seen.isoformat().replace("+00:00", "Z"),
                }
                for d in store.open_drift([address])
            ],
            "actions": history_data(store.history(target=address, limit=20)),
            "lease": [
                {
                    "owner": h.owner,
                    "run": h.run_id,
                    "expires": h.expires_at.isoformat().replace("+00:00", "Z"),
                }
                for h in store.held_locks([address])
            ],
        }

    @api.get(
        "/runs",
        summary="Past and running runs, newest first.",
        response_model=answers.RunList,
        responses=_INVALID,
    )
    def runs(
        request: Request, caller: ReadCaller, limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50
    ) -> dict[str, Any]:
        return {"items": history_data(_store(request).history(limit=limit))}

    @api.get(
        "/runs/{run_id}",
        summary="One run with its actions.",
        response_model=answers.Run,
        responses={404: _problem("No such run."), **_INVALID},
    )
    def run(
        request: Request, run_id: Annotated[int, Path(ge=1, le=MAX_RUN_ID)], caller: ReadCaller
    ) -> dict[str, Any]:
        found = _store(request).get_run(run_id)
        if found is None:
            raise HTTPException(404, f"no run {run_id}")
        return history_data([found])[0]

    @api.post(
        "/reconcile",
        summary="The emergency path of `fleet reconcile --now`: reconcile targets or a selector now.",
        status_code=202,
        response_model=answers.ReconcileAccepted,
        responses={
            400: _problem("No such target, or a bad selector."),
            **_FORBIDDEN,
            409: _problem("A guard refused (blast radius, change window, a lease held, suspended)."),
            422: _problem(
                "The request does not fit this schema, or the revision has errors in the targets or"
                " what they reference."
            ),
            **_UNAVAILABLE,
        },
    )
    def reconcile(request: Request, body: ReconcileRequest, caller: OperatorCaller) -> dict[str, Any]:
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
            run_id = _controller(request).emergency(tuple(body.targets), body.selector, options)
        except (FleetError, ValueError) as exc:
            raise _refusal(exc) from None
        return {"run": run_id, "operator": options.operator}

    @api.post(
        "/suspend",
        summary="Suspend resources: observed and reported, never acted on.",
        response_model=answers.SuspensionDone,
        responses=_SUSPENSION_ANSWERS,
    )
    def suspend(request: Request, body: SuspendRequest, caller: OperatorCaller) -> dict[str, Any]:
        if body.reason is None or not body.reason.strip():
            raise HTTPException(422, "reason is required: it goes into the audit record")
        return _suspension(request, body, caller, resume=False)

    @api.post(
        "/resume",
        summary="End suspensions; the resources are reconciled at once.",
        response_model=answers.SuspensionDone,
        responses=_SUSPENSION_ANSWERS,
    )
    def resume(request: Request, body: SuspendRequest, caller: OperatorCaller) -> dict[str, Any]:
        return _suspension(request, body, caller, resume=True)

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
