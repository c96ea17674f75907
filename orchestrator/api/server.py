"""The HTTP API (``/api/v1``), served by ``genesis serve`` on ``api.port``.

Objects are those ``genesis get -o json`` prints (:mod:`orchestrator.domain.resources`);
submissions go through the same intake as NATS, with the same error codes,
and are recorded even when refused. Every error has one shape, a Status::

    {"apiVersion": "genesis.dev/v1", "kind": "Status", "status": "Failure",
     "code": 422, "reason": "invalid_json", "message": "...", "details": {"name": "<experiment id>"}}

``reason`` is Genesis's error code; ``code`` the HTTP status: 400 bad input,
401 no or bad credentials, 403 a role or CSRF refusal, 404 unknown id or
path, 405, 409 conflict, 413 oversized body, 422 a request that cannot run,
429 rate limited (with Retry-After), 500 anything else (never a traceback).

Roles (:mod:`orchestrator.domain.access`): viewers read, agents submit and
read their own instances' experiments, operators also cancel. Requests are
counted in ``genesis_api_requests_total`` by route template, method and
status, and timed in ``genesis_api_request_duration_seconds``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources as package_files
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.routing import Mount

from orchestrator import __version__
from orchestrator.api.auth import CSRF_HEADER, SESSION_COOKIE, RateLimits, Sessions, Tokens
from orchestrator.api.watch import Watchers
from orchestrator.domain import resources
from orchestrator.domain.access import LOCAL_OPERATOR, Action, Principal, Role
from orchestrator.domain.queries import Requirement, matches, parse_equalities, parse_fields, parse_labels
from orchestrator.errors import Forbidden, GenesisError, NotFound, RequestRejected, Unauthorized
from orchestrator.telemetry.metrics import REGISTRY

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
HEARTBEAT_S = 15.0  # an SSE comment this often keeps proxies from closing an idle watch
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

REQUESTS = Counter("genesis_api_requests", "HTTP API requests.", ["route", "method", "status"], registry=REGISTRY)
LATENCY = Histogram("genesis_api_request_duration_seconds", "HTTP API request time (until the first byte).",
                    ["route"], registry=REGISTRY)

# The body is read raw (the intake parses and records it, whatever it is); the schema says
# what a valid one holds, for clients and for the fuzzer.
SUBMIT_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["experiment_id", "instance_id", "experiment_type", "risk_level", "repo",
                                   "changes"],
    "properties": {"experiment_id": {"type": "string"}, "instance_id": {"type": "string"},
                   "experiment_type": {"type": "string"}, "description": {"type": "string"},
                   "risk_level": {"type": "string", "enum": ["low", "medium", "high"]},
                   "repo": {"type": "string"}, "base_ref": {"type": "string"},
                   "changes": {"type": "object", "properties": {
                       "patch": {"type": "string"},
                       "files": {"type": "array", "items": {"type": "object", "properties": {
                           "path": {"type": "string"}, "content": {"type": "string"}}}}}},
                   "resources": {"type": "object"}, "validation": {"type": "object"},
                   "timeout_ms": {"type": "integer"}, "priority": {"type": "integer"}},
    "description": "An experiment request, as sent over NATS (docs/agents.md)."}}}}}

# Every response: the web UI runs only its own scripts and styles (none inline), is
# framed by no one, and leaks no URL; nothing is sniffed into another type.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_STATUS = {"unauthorized": 401, "forbidden": 403, "csrf_failed": 403, "rate_limited": 429,
           "instance_mismatch": 403, "not_found": 404, "bad_input": 400, "conflict": 409,
           "body_too_large": 413, "method_not_allowed": 405}


def http_status(error: GenesisError) -> int:
    if error.code in _STATUS:
        return _STATUS[error.code]
    return 422 if isinstance(error, RequestRejected) else 500


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {"apiVersion": resources.API_VERSION, "kind": "Status", "status": "Failure", "code": code,
            "reason": reason, "message": message}
    if details:
        body["details"] = details
    return body


def error_response(error: GenesisError, details: dict | None = None) -> JSONResponse:
    code = http_status(error)
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else {}
    if getattr(error, "retry_after", None):
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return JSONResponse(status_body(code, error.code, error.message, details), status_code=code, headers=headers)


def create_app(backend, *, settings, tokens: Tokens, limits: RateLimits, health=None, mcp_app=None) -> FastAPI:
    """The API over ``backend`` (:class:`orchestrator.backends.local.LocalBackend`);
    ``settings``: :class:`orchestrator.settings.Settings`; ``limits``: the per-token rate
    limits (shared with ``mcp_app``, an ASGI app mounted at /mcp)."""
    api = settings.api
    sessions = Sessions(tokens, ttl_s=api.session_ttl_s)
    watchers = Watchers(backend.changed_since, interval_s=api.watch_interval_s)
    max_body = settings.max_body_bytes

    @asynccontextmanager
    async def lifespan(_app):
        if mcp_app is not None and hasattr(mcp_app, "router"):
            async with mcp_app.router.lifespan_context(mcp_app):
                yield
        else:
            yield
        await watchers.close()

    app = FastAPI(title="Genesis", version=__version__, lifespan=lifespan,
                  description="Experiments on risky code changes, each in its own sandbox, judged against the "
                              "unmodified baseline. Authenticate with `Authorization: Bearer <token>`.")
    app.state.watchers = watchers

    # -- errors: one shape ---------------------------------------------------------

    @app.exception_handler(GenesisError)
    async def _genesis_error(_request: Request, exc: GenesisError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_input")
        return JSONResponse(status_body(exc.status_code, reason, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse(status_body(400, "bad_input", problems[:2000]), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("API request failed")
        return JSONResponse(status_body(500, "internal", f"internal error ({type(exc).__name__})"), status_code=500)

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        route = request.scope.get("route")
        # Bounded labels: a route's template (never an id), a mount's path ("/" is the web UI).
        template = "other" if route is None else (route.path or "/") if isinstance(route, Mount) else route.path
        REQUESTS.labels(template, request.method if request.method in UNSAFE | {"GET", "HEAD"} else "other",
                        str(response.status_code)).inc()
        LATENCY.labels(template).observe(time.perf_counter() - started)
        return response

    # -- who is calling ------------------------------------------------------------

    async def principal(request: Request) -> Principal:
        sid = request.cookies.get(SESSION_COOKIE)
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            who = tokens.principal(header[7:].strip()) if tokens.required else LOCAL_OPERATOR
        elif sid:
            who, _ = sessions.principal(sid, unsafe=request.method in UNSAFE,
                                        csrf=request.headers.get(CSRF_HEADER))
        elif not tokens.required:
            # Loopback without tokens: any local caller, but not a web page of another site
            # (a browser names its Origin on a cross-site request, even one without a preflight).
            origin = request.headers.get("origin")
            if request.method in UNSAFE and origin and urlsplit(origin).netloc != request.headers.get("host"):
                raise Forbidden(f"a change from another site ({origin}) is refused", code="csrf_failed")
            who = LOCAL_OPERATOR
        else:
            raise Unauthorized("send Authorization: Bearer <token> (or sign in to the web UI)")
        limits.check(who)
        return who

    async def visible(experiment_id: str, who: Principal):
        """The experiment, if this caller may see it; 404 otherwise (an agent learns nothing of others')."""
        view = await backend.get(experiment_id)
        if not who.sees(view.instance_id):
            raise NotFound(f'experiment "{experiment_id}" not found')
        return view

    def scoped(where: tuple[Requirement, ...], who: Principal) -> tuple[Requirement, ...]:
        if who.role is Role.AGENT:
            return (*where, Requirement(column="instance_id", op="in", values=who.instances))
        return where

    def selectors(label_selector: str | None, field_selector: str | None) -> tuple[Requirement, ...]:
        return parse_labels(label_selector) + parse_fields(field_selector)

    # -- health --------------------------------------------------------------------

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        if health is None:
            return {"status": "ok"}
        alive, detail = health.live()
        if not alive:
            return JSONResponse(status_body(503, "unavailable", json.dumps(detail)), status_code=503)
        return {"status": "ok", **detail}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> dict:
        try:
            await backend.ping()
        except GenesisError as exc:
            return JSONResponse(status_body(503, exc.code, exc.message), status_code=503)
        return {"status": "ok"}

    # -- sessions (the web UI) ------------------------------------------------------

    @app.post(f"{PREFIX}/session", tags=["session"])
    async def open_session(request: Request) -> JSONResponse:
        """Trade a bearer token (``{"token": ...}``) for an HttpOnly session cookie and a CSRF token."""
        try:
            body = json.loads(await read_body(request, 4096) or b"{}")
        except ValueError as exc:
            raise GenesisError("the body must be JSON: {\"token\": \"...\"}", code="bad_input") from exc
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or (tokens.required and not token):
            raise Unauthorized("send {\"token\": \"<bearer token>\"}")
        sid, session, who = sessions.open(token)
        limits.check(who)
        response = JSONResponse({"name": who.name, "role": who.role.value, "instances": list(who.instances),
                                 "csrfToken": session.csrf})
        response.set_cookie(SESSION_COOKIE, sid, max_age=api.session_ttl_s, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response

    @app.delete(f"{PREFIX}/session", tags=["session"])
    async def close_session(request: Request, who: Principal = Depends(principal)) -> JSONResponse:
        sessions.close(request.cookies.get(SESSION_COOKIE, ""))
        response = JSONResponse({"name": who.name, "signedOut": True})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get(f"{PREFIX}/whoami", tags=["session"])
    async def whoami(request: Request, who: Principal = Depends(principal)) -> dict:
        """The caller's name, role and instances; with a session, its CSRF token."""
        body = {"name": who.name, "role": who.role.value, "instances": list(who.instances),
                "may": sorted(a.value for a in Action if who.may(a))}
        sid = request.cookies.get(SESSION_COOKIE)
        if sid and not request.headers.get("authorization"):
            body["csrfToken"] = sessions.principal(sid, unsafe=False, csrf=None)[1].csrf
        return body

    # -- experiments -----------------------------------------------------------------

    @app.get(f"{PREFIX}/experiments", tags=["experiments"])
    async def list_experiments(labelSelector: str | None = None, fieldSelector: str | None = None,  # noqa: N803
                               limit: int | None = Query(default=None, ge=1, le=10000),
                               continue_: str | None = Query(default=None, alias="continue"),
                               who: Principal = Depends(principal)) -> dict:
        """A List of experiments, newest first: kubectl's label and field selectors, ``limit`` and ``continue``."""
        who.require(Action.READ)
        page = await backend.page(scoped(selectors(labelSelector, fieldSelector), who), limit=limit,
                                  continue_token=continue_)
        return resources.as_list([resources.experiment(v) for v in page.items], continue_token=page.continue_token)

    @app.post(f"{PREFIX}/experiments", tags=["experiments"], status_code=201, openapi_extra=SUBMIT_BODY)
    async def submit(request: Request, who: Principal = Depends(principal)) -> JSONResponse:
        """Submit an experiment request (the NATS request body). 201 created, 200 a duplicate of one
        already recorded; a refused request is recorded too, and answered with its code."""
        who.require(Action.SUBMIT)
        raw = await read_body(request, max_body)
        instance = None
        if who.role is Role.AGENT:
            named = _instance_named(raw)
            instance = named if named in who.instances else who.instances[0]
        result = await backend.submit(raw, actor=who.actor, traceparent=request.headers.get("traceparent"),
                                      instance=instance)
        if result.error is not None:
            return error_response(result.error, details={"name": result.view.id, "kind": "Experiment"})
        return JSONResponse(resources.experiment(result.view), status_code=201 if result.created else 200)

    @app.get(PREFIX + "/experiments/{name}", tags=["experiments"])
    async def get_experiment(name: str, who: Principal = Depends(principal)) -> dict:
        who.require(Action.READ)
        return resources.experiment(await visible(name, who))

    @app.delete(PREFIX + "/experiments/{name}", tags=["experiments"], status_code=202)
    async def cancel(name: str, who: Principal = Depends(principal)) -> JSONResponse:
        """Ask for the experiment to be cancelled and rolled back (the controller acts; 202)."""
        who.require(Action.CANCEL)
        await visible(name, who)
        view = await backend.cancel(name, actor=who.actor)
        return JSONResponse(resources.experiment(view), status_code=202)

    @app.get(PREFIX + "/experiments/{name}/audit", tags=["experiments"])
    async def audit(name: str, who: Principal = Depends(principal)) -> dict:
        """The audit trail: who did what to the experiment and its sandboxes, oldest first."""
        who.require(Action.READ)
        await visible(name, who)
        return resources.as_list(resources.audit_entry(h) for h in await backend.audit(name))

    @app.get(PREFIX + "/experiments/{name}/events", tags=["experiments"])
    async def events(name: str, who: Principal = Depends(principal)) -> dict:
        """The runtime platform's events about the experiment's sandbox (Kubernetes), as lines."""
        who.require(Action.READ)
        await visible(name, who)
        return {"apiVersion": resources.API_VERSION, "kind": "EventList", "items": await backend.events(name)}

    @app.get(PREFIX + "/experiments/{name}/logs", tags=["experiments"], response_class=PlainTextResponse)
    async def logs(name: str, follow: bool = False, tail: int | None = Query(default=None, ge=1),
                   build: bool = False, who: Principal = Depends(principal)) -> Response:
        """The sandbox's output (``follow``: streamed while it runs), or with ``build`` the image builds' logs."""
        who.require(Action.READ)
        await visible(name, who)
        if build:
            return PlainTextResponse(await backend.build_logs(name))
        chunks = backend.logs(name, follow=follow, tail=tail)
        first = await anext(chunks, "")  # errors (404: no logs) surface before the 200 is sent

        async def stream() -> AsyncIterator[str]:
            yield first
            async for chunk in chunks:
                yield chunk
        return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")

    @app.get(f"{PREFIX}/watch/experiments", tags=["experiments"])
    async def watch(request: Request, labelSelector: str | None = None,  # noqa: N803
                    fieldSelector: str | None = None, who: Principal = Depends(principal)) -> StreamingResponse:
        """Server-sent events, one per change of a matching experiment: ``event: ADDED|MODIFIED``,
        ``data: {"type": ..., "object": <Experiment>}``; a comment every 15 s while idle."""
        who.require(Action.READ)
        where = scoped(selectors(labelSelector, fieldSelector), who)
        queue = watchers.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                yield ": watching\n\n"
                while watchers.active(queue) or not queue.empty():
                    try:
                        kind, view = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            return
                        yield ": ping\n\n"
                        continue
                    if matches(where, view):
                        data = json.dumps({"type": kind, "object": resources.experiment(view)})
                        yield f"event: {kind}\ndata: {data}\n\n"
            finally:
                watchers.unsubscribe(queue)
        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get(f"{PREFIX}/usage", tags=["sandboxes"])
    async def usage(who: Principal = Depends(principal)) -> dict:
        """Running experiments with a cgroup sample of their sandboxes (what ``genesis top`` shows)."""
        who.require(Action.READ)
        return resources.as_list({"kind": "Usage", "experiment": resources.experiment(view),
                                  "usage": resources.usage(sample)}
                                 for view, sample in await backend.running() if who.sees(view.instance_id))

    # -- sandboxes, images, reports ---------------------------------------------------

    @app.get(f"{PREFIX}/sandboxes", tags=["sandboxes"])
    async def sandboxes(who: Principal = Depends(principal)) -> dict:
        who.require(Action.READ)
        from orchestrator.runtimes.base import LABEL_INSTANCE
        return resources.as_list(resources.sandbox(s) for s in await backend.sandboxes()
                                 if who.sees(s.labels.get(LABEL_INSTANCE, "")))

    @app.get(f"{PREFIX}/pools", tags=["sandboxes"])
    async def pools(who: Principal = Depends(principal)) -> dict:
        """The warm pools: ready sandboxes by tier, claims by tier over the last hour."""
        who.require(Action.READ)
        return resources.as_list(resources.pool(p) for p in await backend.pools())

    @app.get(f"{PREFIX}/images", tags=["images"])
    async def images(who: Principal = Depends(principal)) -> dict:
        who.require(Action.READ)
        return resources.as_list(resources.image(i) for i in await backend.images())

    @app.get(f"{PREFIX}/reports", tags=["reports"])
    async def reports(labelSelector: str | None = None, who: Principal = Depends(principal)) -> dict:  # noqa: N803
        """Stored reports, newest first; ``labelSelector``: ``kind=analysis``, ``period=2026-11-28``."""
        who.require(Action.READ)
        selector = parse_equalities(labelSelector, {"kind", "period"})
        found = await backend.reports(kind=selector.get("kind"), period=selector.get("period"))
        return resources.as_list(resources.report(r) for r in found)

    @app.get(PREFIX + "/reports/{name}", tags=["reports"])
    async def report(name: str, who: Principal = Depends(principal)) -> dict:
        who.require(Action.READ)
        return resources.report(await backend.report(name))

    if mcp_app is not None:
        @app.api_route("/mcp", methods=["GET", "POST", "DELETE"], include_in_schema=False)
        async def _mcp_endpoint(request: Request) -> RedirectResponse:
            """The endpoint is /mcp/ (the web UI's mount at / would otherwise take /mcp)."""
            query = f"?{request.url.query}" if request.url.query else ""
            return RedirectResponse(f"/mcp/{query}", status_code=307)

        app.mount("/mcp", mcp_app)
    static = package_files.files("orchestrator.api") / "static"
    if static.is_dir():
        app.mount("/", StaticFiles(directory=str(static), html=True), name="ui")
    return app


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than ``limit + 1`` bytes: a bigger one is the intake's
    ``body_too_large`` (recorded), never held in memory whole."""
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)[: limit + 1]


def _instance_named(raw: bytes) -> str | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    value = data.get("instance_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None

