"""The MCP server: Genesis's experiments as tools and resources for an AI
assistant, over any backend (:mod:`orchestrator.backends`).

- :func:`build` makes the server. Over stdio (``genesis mcp``) one principal
  is fixed for the process: the local operator against the local database,
  or whoever the token names against a remote server (which then decides).
- :func:`http_app` serves it as MCP streamable HTTP, mounted by the API at
  ``/mcp/``: each request must carry ``Authorization: Bearer <token>`` from
  the API's tokens file (401 with the API's Status body otherwise), and each
  tool call is held to that request's principal: viewers read, agents read
  and submit as their own instances, operators also cancel.

Tool failures are MCP tool errors (``isError``) whose text is
``{"code": ..., "message": ...}`` with Genesis's error code; an unexpected
exception is logged here and answered as ``internal``, never a traceback.
Over HTTP the API's per-token rate limits apply to MCP requests too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from orchestrator import __version__
from orchestrator.api.server import error_response
from orchestrator.domain import resources
from orchestrator.domain.access import LOCAL_OPERATOR, Action, Principal, Role
from orchestrator.domain.queries import Requirement, parse_fields, parse_labels
from orchestrator.errors import Forbidden, GenesisError, NotFound, Unauthorized
from orchestrator.mcp import views

log = logging.getLogger(__name__)

PRINCIPAL_KEY = "genesis.principal"  # where http_app leaves the caller in the ASGI scope
LIST_LIMIT, LIST_LIMIT_MAX = 50, 500  # rows an assistant can read at once
LOG_LINES, LOG_LINES_MAX = 200, 2000
LOG_BYTES = 64 * 1024  # what read_logs returns at most: a context window, not an archive

INSTRUCTIONS = (
    "Genesis runs proposed code changes (experiments) in sandboxes, compares them with the unmodified "
    "baseline and recommends merge, merge_with_adaptations or rollback. Phases: Pending, Building, "
    "Running, Collecting, then Succeeded or Failed. Submit with submit_experiment, poll get_experiment "
    "until finished is true, then read the recommendation and metrics beside the baseline."
)

_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def _result(data: dict, text: str | None = None) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text if text is not None else json.dumps(data))],
                          structured_content=data)


def _error(code: str, message: str) -> CallToolResult:
    body = {"code": code, "message": message}
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(body))], structured_content=body,
                          is_error=True)


async def _answer(tool: str, work: Callable[[], Awaitable[CallToolResult]]) -> CallToolResult:
    """The tool's result, or its failure as a tool error with Genesis's code."""
    try:
        return await work()
    except GenesisError as exc:
        log.info("MCP tool refused", extra={"tool": tool, "code": exc.code})
        return _error(exc.code, exc.message)
    except Exception as exc:  # noqa: BLE001 - the assistant gets a code, the log the traceback
        log.exception("MCP tool failed", extra={"tool": tool})
        return _error("internal", f"internal error ({type(exc).__name__})")


class Tools:
    """The tools' work over ``backend``, for one principal a call."""

    def __init__(self, backend, *, principal: Principal | None) -> None:
        self.backend = backend
        self.principal = principal  # None: each HTTP request's own (http_app)

    def who(self, ctx: Context | None) -> Principal:
        if self.principal is not None:
            return self.principal
        request = ctx.request_context.request if ctx is not None else None
        who = request.scope.get(PRINCIPAL_KEY) if request is not None else None
        if who is None:
            raise Unauthorized("send Authorization: Bearer <token>")
        return who

    async def visible(self, experiment_id: str, who: Principal):
        view = await self.backend.get(experiment_id)
        if not who.sees(view.instance_id):
            raise NotFound(f'experiment "{experiment_id}" not found')  # an agent learns nothing of others'
        return view

    async def listing(self, who: Principal, *, label_selector: str | None, field_selector: str | None,
                   limit: int, continue_token: str | None) -> CallToolResult:
        who.require(Action.READ)
        where = parse_labels(label_selector) + parse_fields(field_selector)
        if who.role is Role.AGENT:
            where = (*where, Requirement(column="instance_id", op="in", values=who.instances))
        page = await self.backend.page(where, limit=limit, continue_token=continue_token)
        return _result({"items": [views.row(v) for v in page.items], "continue": page.continue_token})

    async def get(self, who: Principal, experiment_id: str) -> CallToolResult:
        who.require(Action.READ)
        return _result(views.detail(await self.visible(experiment_id, who)))

    async def submit(self, who: Principal, request: dict) -> CallToolResult:
        who.require(Action.SUBMIT)
        instance = None
        if who.role is Role.AGENT:
            named = request.get("instance_id")
            instance = named if named in who.instances else who.instances[0]
        result = await self.backend.submit(request, actor=f"mcp:{who.name}", instance=instance)
        if result.error is not None:
            return _error(result.error.code, f"{result.error.message} (recorded as {result.view.id})")
        return _result({"id": result.view.id, "created": result.created, "phase": result.view.phase.value})

    async def cancel(self, who: Principal, experiment_id: str) -> CallToolResult:
        who.require(Action.CANCEL)
        await self.visible(experiment_id, who)
        view = await self.backend.cancel(experiment_id, actor=f"mcp:{who.name}")
        return _result({"id": view.id, "phase": view.phase.value, "cancel_requested": view.cancel_requested})

    async def logs(self, who: Principal, experiment_id: str, tail: int) -> CallToolResult:
        who.require(Action.READ)
        await self.visible(experiment_id, who)
        kept, size, truncated = [], 0, False
        async for chunk in self.backend.logs(experiment_id, follow=False, tail=tail):
            kept.append(chunk)
            size += len(chunk)
            while size > LOG_BYTES and len(kept) > 1:  # keep the newest output, drop whole chunks first
                size -= len(kept.pop(0))
                truncated = True
        text = "".join(kept)
        lines = text.splitlines(keepends=True)
        if len(lines) > tail:
            lines, truncated = lines[-tail:], True
        text = "".join(lines)
        if len(text) > LOG_BYTES:
            text, truncated = text[-LOG_BYTES:], True
        data = {"id": experiment_id, "lines": len(lines), "truncated": truncated, "text": text}
        return _result(data, text=text or "(no output)")

    async def compare(self, who: Principal, a: str, b: str) -> CallToolResult:
        who.require(Action.READ)
        return _result(views.compare(await self.visible(a, who), await self.visible(b, who)))

    async def resource(self, who: Principal, experiment_id: str) -> str:
        try:
            who.require(Action.READ)
            return json.dumps(resources.experiment(await self.visible(experiment_id, who)), indent=2)
        except NotFound as exc:
            raise ResourceNotFoundError(f"not_found: {exc.message}") from exc
        except GenesisError as exc:
            raise ResourceError(f"{exc.code}: {exc.message}") from exc


def build(backend, *, principal: Principal | None = LOCAL_OPERATOR) -> MCPServer:
    """The MCP server over ``backend``; ``principal`` None: each HTTP request's (:func:`http_app`)."""
    tools = Tools(backend, principal=principal)
    server = MCPServer("genesis", title="Genesis", version=__version__, instructions=INSTRUCTIONS)

    @server.tool(annotations=_READ)
    async def list_experiments(
        ctx: Context,
        label_selector: Annotated[str | None, Field(description=(
            "kubectl label selector over instance_id, experiment_type, risk_level, repo, phase; forms "
            "k=v, k!=v, k in (a,b), k notin (a,b), comma-separated (all must hold). Example: "
            "'phase in (Succeeded,Failed),repo=monorepo'. Phases: Pending, Building, Running, Collecting, "
            "Succeeded, Failed."))] = None,
        field_selector: Annotated[str | None, Field(description=(
            "kubectl field selector: metadata.name, status.phase, status.recommendation (merge, "
            "merge_with_adaptations, rollback), spec.instance_id, spec.experiment_type, spec.risk_level, "
            "spec.repo; k=v or k!=v, comma-separated. Example: 'status.recommendation=rollback'."))] = None,
        limit: Annotated[int, Field(ge=1, le=LIST_LIMIT_MAX, description="rows to return, newest first")]
            = LIST_LIMIT,
        continue_token: Annotated[str | None, Field(description=(
            "the 'continue' value of a previous answer, for the next page"))] = None,
    ) -> CallToolResult:
        """List experiments, newest first, as compact rows: id, instance, type, phase, recommendation
        (null until finished), success_rate and regression (the experiment's test figures, 0..1; null
        until measured) and created. 'continue' is non-null when more rows remain. Agent tokens see
        only their own instances' experiments."""
        return await _answer("list_experiments", lambda: tools.listing(
            tools.who(ctx), label_selector=label_selector, field_selector=field_selector, limit=limit,
            continue_token=continue_token))

    @server.tool(annotations=_READ)
    async def get_experiment(
        ctx: Context, id: Annotated[str, Field(description="the experiment id (its experiment_id)")],  # noqa: A002
    ) -> CallToolResult:
        """One experiment: phase (finished is true once Succeeded or Failed), recommendation (merge,
        merge_with_adaptations or rollback), reason and message, error (code and message of a failed
        run, e.g. cancelled, timeout, patch_failed), metrics (success_rate, regression, pass_to_fail,
        runtime_ms, ...) beside the baseline's (versus_baseline: experiment, baseline and delta for
        success_rate, test_count, runtime_ms), test outcomes per category (PASS_TO_FAIL, FAIL_TO_PASS,
        FLAKY, ... with counts and names), the preserved sandbox, and the status conditions.
        Error not_found for an unknown id."""
        return await _answer("get_experiment", lambda: tools.get(tools.who(ctx), id))

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                             open_world_hint=False))
    async def submit_experiment(
        ctx: Context,
        request: Annotated[dict[str, Any], Field(description=(
            "the experiment request, as sent on NATS or POSTed to /api/v1/experiments: experiment_id "
            "(a UUID you choose; resubmitting the same body is a no-op), instance_id, experiment_type, "
            "risk_level (low, medium, high), repo (a configured repository name), base_ref (e.g. main), "
            "changes ({'files': [{'path': ..., 'content': ...} or {'path': ..., 'delete': true}]} or "
            "{'patch': unified diff}), optional resources ({'cpu', 'memory', 'pids'}), timeout_ms, "
            "priority, validation ({'command': [...], 'report': 'junit' or 'exit_code'}) where the "
            "repository allows it."))],
    ) -> CallToolResult:
        """Submit an experiment; Genesis runs it in a sandbox against the baseline. Returns id, created
        (false for a duplicate of a request already recorded) and phase (Pending). Poll get_experiment
        until finished. A request that cannot run is an error with its code (invalid_request,
        invalid_json, unknown_repo, unknown_commit, invalid_path, resources_exceeded, conflict,
        instance_mismatch, ...) and is recorded under its id. Needs an agent or operator token; an
        agent submits as its own instance."""
        return await _answer("submit_experiment", lambda: tools.submit(tools.who(ctx), request))

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                             open_world_hint=False))
    async def cancel_experiment(
        ctx: Context, id: Annotated[str, Field(description="the experiment id")],  # noqa: A002
    ) -> CallToolResult:
        """Ask Genesis to cancel an experiment and roll it back: its sandbox is stopped and removed and it
        ends Failed with error code cancelled (for a finished one, its preserved sandbox is removed).
        Returns at once with cancel_requested true; the controller acts within seconds, so poll
        get_experiment to see it finish. Needs an operator token."""
        return await _answer("cancel_experiment", lambda: tools.cancel(tools.who(ctx), id))

    @server.tool(annotations=_READ)
    async def read_logs(
        ctx: Context,
        id: Annotated[str, Field(description="the experiment id")],  # noqa: A002
        tail: Annotated[int, Field(ge=1, le=LOG_LINES_MAX, description="the last lines to return")] = LOG_LINES,
    ) -> CallToolResult:
        """The sandbox's output (the change's build and test run): live while it runs, else as exported
        when the sandbox was torn down. Only the last 'tail' lines and at most 64 KiB are returned
        ('truncated' says when more existed). Error not_found when there is no output (yet)."""
        return await _answer("read_logs", lambda: tools.logs(tools.who(ctx), id, tail))

    @server.tool(annotations=_READ)
    async def compare_experiments(
        ctx: Context,
        a: Annotated[str, Field(description="the first experiment id (the reference)")],
        b: Annotated[str, Field(description="the second experiment id")],
    ) -> CallToolResult:
        """Two experiments side by side: their rows and reasons, whether the recommendations agree, each
        metric as a, b and delta (b - a), each one's baseline, and per test category both counts with
        the test names only one of them lists (only_in_a, only_in_b)."""
        return await _answer("compare_experiments", lambda: tools.compare(tools.who(ctx), a, b))

    @server.resource("genesis://experiments/{id}", name="experiment", mime_type="application/json",
                     description="An experiment record as the HTTP API serves it (genesis.dev/v1 Experiment: "
                                 "metadata, spec = the request, status with phase, recommendation, conditions "
                                 "and outcome: metrics, baseline, tests, error).")
    async def experiment(id: str, ctx: Context) -> str:  # noqa: A002
        return await tools.resource(tools.who(ctx), id)

    return server


class _Authenticated:
    """ASGI: every HTTP request names its principal by bearer token and keeps within its
    token's rate limit, or is answered in the API's Status shape (401, 429)."""

    def __init__(self, app, tokens, limits=None) -> None:
        self.app = app
        self.tokens = tokens
        self.limits = limits

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            try:
                principal = self._principal(scope)
                if self.limits is not None:
                    self.limits.check(principal)
            except (Unauthorized, Forbidden) as exc:
                await error_response(exc)(scope, receive, send)
                return
            scope[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)

    def _principal(self, scope) -> Principal:
        header = dict(scope.get("headers") or ()).get(b"authorization", b"").decode("latin-1")
        if not self.tokens.required:
            return LOCAL_OPERATOR  # no tokens file: the API binds to loopback only
        if not header.lower().startswith("bearer "):
            raise Unauthorized("send Authorization: Bearer <token>")
        return self.tokens.principal(header[7:].strip())


def http_app(backend, *, tokens, limits=None):
    """MCP streamable HTTP over ``backend``, answering at its root (mounted at ``/mcp``, the
    endpoint is ``/mcp/``); ``tokens``: :class:`orchestrator.api.auth.Tokens`. Its
    ``router.lifespan_context`` runs the session manager (the API enters it)."""
    # Without tokens every caller is the local operator, so only a loopback Host may call
    # (a DNS-rebinding page cannot); with tokens, the bearer token is the guard.
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=not tokens.required,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"])
    app = build(backend, principal=None).streamable_http_app(streamable_http_path="/", transport_security=security)
    app.add_middleware(_Authenticated, tokens=tokens, limits=limits)
    return app
