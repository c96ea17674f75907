"""The remote backend: the local backend's calls, answered by a Genesis
server over its HTTP API (``/api/v1``), with a bearer token.

Objects come back as the domain's own (an API ``Experiment`` becomes the
``ExperimentView`` it was made from, :func:`orchestrator.domain.resources.view_of`),
and API errors as Genesis's (a 404 ``Status`` is :class:`NotFound`, a 422 is
:class:`RequestRejected` with its code), so a verb behaves the same against
either backend.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from urllib.parse import quote

import httpx

from orchestrator.domain import resources
from orchestrator.domain.queries import Page, Requirement, selectors_of
from orchestrator.domain.records import ExperimentView, HistoryEntry
from orchestrator.domain.schedule import Report
from orchestrator.errors import Forbidden, GenesisError, NotFound, RequestRejected, Unauthorized
from orchestrator.pipeline.intake import IntakeResult

PREFIX = "/api/v1"
_ERRORS = {401: Unauthorized, 403: Forbidden, 404: NotFound, 413: RequestRejected, 422: RequestRejected,
           429: Forbidden}


def error_of(response: httpx.Response) -> GenesisError:
    """The Genesis error an API error response stands for."""
    try:
        body = response.json()
        reason, message = body["reason"], body["message"]
    except (ValueError, KeyError, TypeError):
        return GenesisError(f"the server answered {response.status_code}: {response.text[:200]}", code="api_error")
    kind = RequestRejected if reason == "instance_mismatch" else _ERRORS.get(response.status_code, GenesisError)
    error = kind(message, code=reason)
    error.details = body.get("details") or {}  # the record a refused submission was filed under
    return error


class RemoteBackend:
    def __init__(self, server: str, *, token: str | None = None, timeout_s: float = 30.0,
                 verify: bool | str = True) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = server.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.server, headers=headers, verify=verify,
                                         timeout=httpx.Timeout(timeout_s, read=None))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> "RemoteBackend":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = await self._client.request(method, PREFIX + path, **kwargs)
        except httpx.HTTPError as exc:
            raise GenesisError(f"cannot reach the Genesis server {self.server}: {exc}", code="unreachable") from exc
        if response.status_code >= 400:
            raise error_of(response)
        return response

    async def _json(self, path: str, **params) -> dict:
        return (await self._call("GET", path, params={k: v for k, v in params.items() if v is not None})).json()

    # -- experiments ------------------------------------------------------------

    async def page(self, where: tuple[Requirement, ...] = (), *, limit: int | None = None,
                   continue_token: str | None = None) -> Page:
        labels, fields = selectors_of(where)
        body = await self._json("/experiments", labelSelector=labels or None, fieldSelector=fields or None,
                                limit=limit, **{"continue": continue_token})
        return Page(items=tuple(resources.view_of(i) for i in body["items"]),
                    continue_token=body["metadata"].get("continue"))

    async def get(self, experiment_id: str) -> ExperimentView:
        return resources.view_of(await self._json(f"/experiments/{_segment(experiment_id)}"))

    async def audit(self, experiment_id: str) -> list[HistoryEntry]:
        body = await self._json(f"/experiments/{_segment(experiment_id)}/audit")
        return [resources.history_of(i) for i in body["items"]]

    async def events(self, experiment_id: str) -> list[str]:
        return (await self._json(f"/experiments/{_segment(experiment_id)}/events"))["items"]

    async def submit(self, body: bytes | dict, *, actor: str = "", traceparent: str | None = None,
                     instance: str | None = None) -> IntakeResult:
        """The server records the request under the token's name (``actor`` is the server's to say)."""
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        headers = {"Content-Type": "application/json", **({"traceparent": traceparent} if traceparent else {})}
        try:
            response = await self._call("POST", "/experiments", content=raw, headers=headers)
        except RequestRejected as exc:
            return await self._rejected(exc)
        except GenesisError as exc:
            if exc.code != "conflict":
                raise
            return await self._rejected(exc)
        return IntakeResult(view=resources.view_of(response.json()), created=response.status_code == 201)

    async def _rejected(self, error: GenesisError) -> IntakeResult:
        """A refusal the server recorded: its record, and the error (as the local intake returns it)."""
        name = getattr(error, "details", {}).get("name")
        if name is None:
            raise error
        return IntakeResult(view=await self.get(name), created=False,
                            error=RequestRejected(error.message, code=error.code))

    async def cancel(self, experiment_id: str, *, actor: str = "") -> ExperimentView:
        return resources.view_of((await self._call("DELETE", f"/experiments/{_segment(experiment_id)}")).json())

    async def watch(self, where: tuple[Requirement, ...] = ()) -> AsyncIterator[tuple[str, ExperimentView]]:
        """(ADDED|MODIFIED, view) for each change of a matching experiment, from the server's SSE stream."""
        labels, fields = selectors_of(where)
        params = {k: v for k, v in (("labelSelector", labels), ("fieldSelector", fields)) if v}
        try:
            async with self._client.stream("GET", f"{PREFIX}/watch/experiments", params=params) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_of(response)
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        yield event["type"], resources.view_of(event["object"])
        except httpx.HTTPError as exc:
            raise GenesisError(f"the watch on {self.server} ended: {exc}", code="unreachable") from exc

    # -- logs -------------------------------------------------------------------

    async def logs(self, experiment_id: str, *, follow: bool = False, tail: int | None = None) -> AsyncIterator[str]:
        params = {"follow": "true" if follow else "false", **({"tail": tail} if tail else {})}
        async with self._client.stream("GET", f"{PREFIX}/experiments/{_segment(experiment_id)}/logs",
                                       params=params) as response:
            if response.status_code >= 400:
                await response.aread()
                raise error_of(response)
            async for chunk in response.aiter_text():
                yield chunk

    async def build_logs(self, experiment_id: str) -> str:
        response = await self._call("GET", f"/experiments/{_segment(experiment_id)}/logs", params={"build": "true"})
        return response.text

    async def running(self) -> list[tuple[ExperimentView, object]]:
        from orchestrator.runtimes.base import SandboxUsage
        body = await self._json("/usage")
        return [(resources.view_of(i["experiment"]),
                 SandboxUsage(cpu_seconds=i["usage"]["cpuSeconds"],
                              memory_working_set_bytes=i["usage"]["memoryWorkingSetBytes"],
                              memory_limit_bytes=i["usage"]["memoryLimitBytes"], pids=i["usage"]["pids"]))
                for i in body["items"]]

    # -- sandboxes, images, reports ----------------------------------------------

    async def sandboxes(self) -> list:
        from orchestrator.runtimes.base import SandboxState
        return [SandboxState(name=i["name"], status=i["status"], labels=i["labels"], uid=i["uid"],
                             exit_code=i["exitCode"], oom_killed=i["oomKilled"], image=i["image"],
                             started_at=_when(i["startedAt"]))
                for i in (await self._json("/sandboxes"))["items"]]

    async def pools(self) -> list:
        from orchestrator.pipeline.pools import PoolRow
        return [PoolRow(pool=i["name"], image=i["image"], hot=i["ready"]["hot"], warm=i["ready"]["warm"],
                        claimed_hot=i["claimedLastHour"]["hot"], claimed_warm=i["claimedLastHour"]["warm"],
                        last_claim=_when(i["lastClaim"]))
                for i in (await self._json("/pools"))["items"]]

    async def images(self) -> list:
        from orchestrator.snapshots.catalog import ImageRow
        return [ImageRow(tier=i["tier"], tag=i["tag"], repo=i["repo"], size_bytes=i["size_bytes"],
                         created=_when(i["created"]), last_used=_when(i["last_used"]), uses=i["uses"],
                         in_use=i["in_use"], pinned=i["pinned"])
                for i in (await self._json("/images"))["items"]]

    async def reports(self, *, kind: str | None = None, period: str | None = None) -> list[Report]:
        selector = ",".join(f"{k}={v}" for k, v in (("kind", kind), ("period", period)) if v)
        body = await self._json("/reports", labelSelector=selector or None)
        return [_report(i) for i in body["items"]]

    async def report(self, name: str) -> Report:
        return _report(await self._json(f"/reports/{_segment(name)}"))

    async def ping(self) -> None:
        await self._json("/whoami")


def _segment(name: str) -> str:
    """One path segment, whatever ``name`` holds."""
    return quote(name, safe="")


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _report(obj: dict) -> Report:
    labels = obj["metadata"]["labels"]
    return Report(id=0, kind=labels["kind"], period=labels["period"],
                  created_at=datetime.fromisoformat(obj["metadata"]["creationTimestamp"]), body=obj["body"])
