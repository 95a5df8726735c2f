"""The web UI of `fleet serve`: server-rendered pages (Jinja2, autoescaped) over the same reads
and operator actions as `/api/v1`, one static script and one stylesheet.

It has no data path of its own: every page calls what the API's endpoints call (`queries`, the
controller, the API's shared action functions), and the live parts fetch `/api/v1` JSON from the
browser. Sign-in takes an API token once and keeps a signed session cookie (HttpOnly,
SameSite=Strict); every form that changes something carries the session's CSRF token, and the
operator forms are refused (403) to the read role whether or not the page showed them. Nothing
here may inline a script or a style, or fetch anything from another origin.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
import pydantic_core
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup, escape
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciler.controller.api import (
    ApproveRequest,
    Caller,
    PlanRequest,
    ReconcileRequest,
    SuspendRequest,
    TokenSource,
    approve,
    in_read_thread,
    plan_preview,
    read_answer,
    reconcile_now,
    suspension,
)
from reconciler.controller.controller import Controller
from reconciler.controller.queries import STATES, Filter, FleetView
from reconciler.controller.sessions import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Session,
    SessionBook,
    new_nonce,
    open_session,
    same,
)
from reconciler.errors import FleetError, TemporaryError

MAX_FORM_BYTES = 64 * 1024
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
STATIC = {"fleet.js": "text/javascript; charset=utf-8", "fleet.css": "text/css; charset=utf-8"}
# How each state shows besides its colour: an icon and its name.
ICONS = {
    "in sync": "✓",
    "drifted": "≠",
    "unknown": "?",
    "suspended": "‖",
    "failing": "✗",
    "waiting": "◔",
    "orphaned": "∅",
}
KINDS_SHOWN = ("Machine", "VirtualMachine", "Cluster", "SparkPool")

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("reconciler.controller", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.filters["state_class"] = lambda state: "s-" + str(state).replace(" ", "-")


def json_text(value: Any, indent: int | None = None) -> str:
    r"""JSON as the text it is, escaped as any text: Jinja's `tojson` writes `<` as `\u003c`, which
    is safe only inside a <script>, and shows a person's `<b>` as `\u003cb\u003e` in a page.
    Indented, it is pydantic-core's (the same text as `json.dumps`, which indents in pure Python
    at ten times the cost)."""
    if indent is None:
        return json.dumps(value, ensure_ascii=False)
    return pydantic_core.to_json(value, indent=indent).decode()


_TEMPLATES.filters["json_text"] = json_text


class _Classes(dict[str, str]):
    """The CSS class of each state (`s-in-sync`), for any state."""

    def __missing__(self, state: str) -> str:
        return "s-" + state.replace(" ", "-")


class _Icons(dict[str, str]):
    def __missing__(self, state: str) -> str:
        return "•"


_CLASSES = _Classes()
_ICONS = _Icons(ICONS)


def rack_tiles(site: str, racks: list[dict[str, Any]], query: str) -> Markup:
    """The tiles of a site's racks, each with its counts by state (an icon, the count, and the
    state's name on hover), built without the template engine: a site may have thousands."""
    tiles = []
    place = escape(site)
    link = escape(quote(site, safe=""))
    suffix = escape(query)
    for rack in racks:
        name = escape(rack["name"])
        shown = [
            f'<i class="c {_CLASSES[state]}" title="{escape(state)}">{_ICONS[state]}{n}</i>'
            for state, n in rack["counts"].items()
            if state != "in sync"
        ] or ['<i class="c s-in-sync" title="all in sync">✓</i>']
        href = f"/ui/racks/{link}/{escape(quote(rack['name'], safe=''))}{suffix}"
        tiles.append(
            f'<a class="rack" data-rack="{place}/{name}" href="{href}"><b>{name}</b> {rack["total"]}'
            f" {''.join(shown)}</a>"
        )
    return Markup("".join(tiles))


_TEMPLATES.globals.update(
    icons=_ICONS, classes=_CLASSES, states=STATES, kinds=KINDS_SHOWN, rack_tiles=rack_tiles
)


class SignInRequired(Exception):
    """The page needs a session; the answer is the sign-in form (401)."""


class SecurityHeaders:
    """The web UI's answers (and the redirect to it) forbid inline scripts, framing and sniffing.
    A plain ASGI middleware: the API's calls pass straight through, with no task or stream made
    for them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == "/" or path.startswith("/ui")):
            await self.app(scope, receive, send)
            return
        no_store = not path.startswith("/ui/static/")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.update(SECURITY_HEADERS)
                if no_store:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, sending)


def _tokens(request: Request) -> Mapping[str, tuple[str, str]]:
    source: TokenSource = request.app.state.tokens
    return source()


def _view(request: Request) -> FleetView:
    found: FleetView = request.app.state.view
    return found


def _controller(request: Request) -> Controller:
    found: Controller = request.app.state.controller
    return found


def _status(request: Request) -> dict[str, Any]:
    """The status as the API answers it (kept by the controller: reading it reads nothing)."""
    try:
        return _controller(request).status().answer
    except TemporaryError as exc:
        raise HTTPException(503, str(exc)) from None


def _sessions(request: Request) -> SessionBook:
    found: SessionBook = request.app.state.sessions
    return found


def _session(request: Request) -> Session:
    session = _sessions(request).read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignInRequired()
    return session


async def _answer(request: Request, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A read's answer as the API gives it, read in one of the app's read threads."""
    return await in_read_thread(request, lambda: read_answer(work))


def _log(request: Request, message: str, **fields: Any) -> None:
    log: Callable[..., None] | None = getattr(request.app.state, "log", None)
    if log is not None:
        log(message, **fields)


def _render(
    request: Request, template: str, session: Session | None, code: int = 200, **values: Any
) -> HTMLResponse:
    page = _TEMPLATES.get_template(template).render(
        session=session,
        operator=session is not None and session.role == "operator",
        path=request.url.path,
        **values,
    )
    return HTMLResponse(page, status_code=code)


async def _form(request: Request) -> dict[str, list[str]]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "the form is too large")
    return parse_qs(body.decode(errors="replace"), keep_blank_values=True)


def _one(form: Mapping[str, list[str]], name: str) -> str:
    values = form.get(name) or [""]
    return values[0].strip()


def _targets(form: Mapping[str, list[str]]) -> list[str]:
    """Addresses from `targets` fields, each of which may hold several (whitespace or commas)."""
    found: list[str] = []
    for value in form.get("targets", []):
        found.extend(t for t in value.replace(",", " ").split() if t)
    return found


def _safe_next(value: str) -> str:
    """Where to go after signing in: a page of the UI only, never another site."""
    if value.startswith("/ui/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/"


def _cookie_secure(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"


async def _operator_form(request: Request) -> tuple[Session, dict[str, list[str]], Caller]:
    """The session of an operator form: signed in (else 401), its CSRF token (else 403), and the
    operator role (else 403): the server refuses whatever the page showed."""
    session = _session(request)
    form = await _form(request)
    if not same(_one(form, "csrf"), session.csrf):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page")
    if session.role != "operator":
        raise HTTPException(403, f"{session.name} has the {session.role} role; this needs operator")
    return session, form, Caller(session.name, session.role)


def _failure(request: Request, exc: HTTPException) -> HTMLResponse:
    session = _sessions(request).read(request.cookies.get(SESSION_COOKIE))
    detail = exc.detail
    errors: list[str] = []
    if isinstance(detail, dict):
        errors = [str(e) for e in detail.get("errors", [])]
        detail = detail.get("message", "")
    elif isinstance(detail, list):
        errors, detail = [str(e) for e in detail], "the request is not valid"
    return _render(
        request,
        "message.html",
        session,
        code=exc.status_code,
        title="Refused" if exc.status_code in (401, 403) else "Not done",
        message=str(detail),
        errors=errors,
    )


async def _guarded(request: Request, work: Callable[[], Awaitable[Response]]) -> Response:
    try:
        return await work()
    except SignInRequired:
        return _sign_in_page(request, status=401)
    except HTTPException as exc:
        return _failure(request, exc)


def _sign_in_page(request: Request, *, status: int = 200, problem: str = "") -> Response:
    nonce = new_nonce()
    wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = _render(
        request,
        "login.html",
        None,
        code=status,
        csrf=nonce,
        next=_safe_next(wanted if request.method == "GET" else "/ui/"),
        problem=problem,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=600,
        path="/ui/login",
        httponly=True,
        samesite="strict",
        secure=_cookie_secure(request),
    )
    return response


def _filter_of(request: Request) -> Filter:
    query = request.query_params
    return Filter(
        query.get("kind") or None,
        query.get("state") or None,
        query.get("site") or None,
        query.get("selector") or None,
        query.get("q") or None,
    )


def _filter_query(wanted: Filter, **more: str | None) -> str:
    """The filter as a URL query (the link that shares it)."""
    values = {
        "kind": wanted.kind,
        "state": wanted.state,
        "site": wanted.site,
        "selector": wanted.selector,
        "q": wanted.q,
        **more,
    }
    present = {k: v for k, v in values.items() if v}
    return f"?{urlencode(present)}" if present else ""


def _waiting_approval(view: FleetView) -> list[dict[str, Any]]:
    """Resources that wait on the blast radius: what an operator may approve."""
    waiting = view.resources(None, None, "waiting", 1000)["items"]
    return [r for r in waiting if "blastRadius" in r["detail"] or "blast radius" in r["detail"]]


def mount_ui(app: FastAPI) -> FastAPI:
    """`app` (the API's, with its state) with the web UI's pages and their security headers."""
    app.include_router(ui_router())
    app.add_middleware(SecurityHeaders)
    return app


def ui_router() -> APIRouter:
    """The pages of the web UI, under /ui (and / redirects there)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=303)

    @router.get("/ui")
    def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=303)

    @router.get("/ui/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        body = resources.files("reconciler.controller").joinpath("static", name).read_bytes()
        return Response(body, media_type=STATIC[name], headers={"Cache-Control": "public, max-age=300"})

    @router.get("/ui/login")
    def login_page(request: Request) -> Response:
        if _sessions(request).read(request.cookies.get(SESSION_COOKIE)) is not None:
            return RedirectResponse("/ui/", status_code=303)
        return _sign_in_page(request)

    @router.post("/ui/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        if not same(_one(form, "csrf"), request.cookies.get(LOGIN_COOKIE)):
            return _failure(request, HTTPException(403, "the sign-in form expired: reload it"))
        opened = open_session(_tokens(request), _one(form, "token"), time.time())
        if opened is None:
            return _sign_in_page(request, status=401, problem="That is not a token of this controller.")
        cookie, _ = opened
        response = RedirectResponse(_safe_next(_one(form, "next")), status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="strict",
            secure=_cookie_secure(request),
        )
        response.delete_cookie(LOGIN_COOKIE, path="/ui/login")
        return response

    @router.post("/ui/logout")
    async def logout(request: Request) -> Response:
        async def work() -> Response:
            session = _session(request)
            form = await _form(request)
            if not same(_one(form, "csrf"), session.csrf):
                raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page")
            try:  # ended on every replica, so that a copy of the cookie opens nothing either
                await run_in_threadpool(_sessions(request).end, session)
            except FleetError as exc:
                _log(request, "a signed-out session could not be recorded as ended", error=exc.message)
            response = RedirectResponse("/ui/login", status_code=303)
            response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
            return response

        return await _guarded(request, work)

    def page(path: str) -> Callable[[Callable[[Request], Awaitable[Response]]], None]:
        """A page of the UI at `path`: a plain route, which runs none of FastAPI's dependency and
        validation steps (a page takes its request alone, and reads its own parameters), a tenth
        of what a page costs under load."""

        def add(render: Callable[[Request], Awaitable[Response]]) -> None:
            async def endpoint(request: Request) -> Response:
                return await _guarded(request, lambda: render(request))

            router.add_route(path, endpoint, methods=["GET"], include_in_schema=False)

        return add

    @page("/ui/")
    async def overview(request: Request) -> Response:
        session = _session(request)
        wanted = _filter_of(request)
        found = await _answer(request, lambda: _view(request).overview(wanted))
        return _render(
            request,
            "overview.html",
            session,
            overview=found,
            filter=wanted,
            query=_filter_query(wanted, site=None),
            share=_filter_query(wanted),
        )

    @page("/ui/racks/{site}/{rack}")
    async def rack(request: Request) -> Response:
        session = _session(request)
        wanted = _filter_of(request)
        site, name = request.path_params["site"], request.path_params["rack"]
        found = await _answer(request, lambda: _view(request).rack(site, name, wanted))
        return _render(request, "rack.html", session, rack=found, filter=wanted, query=_filter_query(wanted))

    @page("/ui/resources/{address:path}")
    async def resource(request: Request) -> Response:
        session = _session(request)
        address = request.path_params["address"]
        found = await _answer(request, lambda: _view(request).resource(address))
        return _render(request, "resource.html", session, resource=found)

    @page("/ui/runs")
    async def runs(request: Request) -> Response:
        session = _session(request)
        view = _view(request)
        found = await _answer(request, lambda: view.runs(50))
        status = _status(request)
        waiting = await in_read_thread(request, lambda: _waiting_approval(view))
        return _render(request, "runs.html", session, runs=found["items"], status=status, waiting=waiting)

    @page("/ui/runs/{run_id}")
    async def run(request: Request) -> Response:
        session = _session(request)
        run_id: str = request.path_params["run_id"]
        if not run_id.isdigit() or not 0 < int(run_id) < 2**63:
            raise HTTPException(404, f"no run {run_id}")
        found = await _answer(request, lambda: _view(request).run(int(run_id)))
        return _render(request, "run.html", session, run=found)

    @page("/ui/revisions")
    async def revisions(request: Request) -> Response:
        session = _session(request)
        status = _status(request)
        return _render(request, "revisions.html", session, status=status)

    @router.post("/ui/suspend")
    async def suspend(request: Request) -> Response:
        return await _guarded(request, lambda: _suspension(request, resume=False))

    @router.post("/ui/resume")
    async def resume(request: Request) -> Response:
        return await _guarded(request, lambda: _suspension(request, resume=True))

    @router.post("/ui/reconcile/preview")
    async def preview(request: Request) -> Response:
        async def work() -> Response:
            session, form, _ = await _operator_form(request)
            targets, selector, reason = _targets(form), _one(form, "selector") or None, _one(form, "reason")
            mode = "approve" if _one(form, "mode") == "approve" else "reconcile"
            if not reason:
                raise HTTPException(422, "reason is required: it goes into the audit record")
            body = _validated(PlanRequest, targets=targets, selector=selector)
            plan = await run_in_threadpool(plan_preview, _controller(request), body)
            return _render(
                request,
                "preview.html",
                session,
                plan=plan,
                targets=targets,
                selector=selector or "",
                reason=reason,
                incident=_one(form, "incident"),
                mode=mode,
            )

        return await _guarded(request, work)

    @router.post("/ui/reconcile")
    async def reconcile(request: Request) -> Response:
        async def work() -> Response:
            _, form, caller = await _operator_form(request)
            body = _validated(
                ReconcileRequest,
                targets=_targets(form),
                selector=_one(form, "selector") or None,
                reason=_one(form, "reason"),
                incident=_one(form, "incident") or None,
                fingerprint=_one(form, "fingerprint") or None,
            )
            done = await run_in_threadpool(reconcile_now, _controller(request), body, caller)
            return RedirectResponse(f"/ui/runs/{done['run']}", status_code=303)

        return await _guarded(request, work)

    @router.post("/ui/approve")
    async def approve_form(request: Request) -> Response:
        async def work() -> Response:
            _, form, caller = await _operator_form(request)
            body = _validated(
                ApproveRequest,
                targets=_targets(form),
                selector=_one(form, "selector") or None,
                reason=_one(form, "reason"),
                fingerprint=_one(form, "fingerprint") or None,
            )
            done = await run_in_threadpool(approve, _controller(request), body, caller)
            return RedirectResponse(f"/ui/runs/{done['run']}", status_code=303)

        return await _guarded(request, work)

    async def _suspension(request: Request, *, resume: bool) -> Response:
        session, form, caller = await _operator_form(request)
        body = _validated(
            SuspendRequest,
            targets=_targets(form),
            selector=_one(form, "selector") or None,
            kind=_one(form, "kind") or None,
            reason=_one(form, "reason") or None,
        )
        done = await run_in_threadpool(lambda: suspension(_controller(request), body, caller, resume=resume))
        return _render(
            request, "suspension.html", session, done=done, resume=resume, reason=body.reason or ""
        )

    return router


def _validated(model: Any, **values: Any) -> Any:
    """A request body of the API from a form's fields, checked as the API checks it (422)."""
    from pydantic import ValidationError

    try:
        return model(**values)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()]
        raise HTTPException(422, problems[:20]) from None
