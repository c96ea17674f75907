"""A Kubernetes API emulator for tests: kmock's, made a little more faithful.

No cluster can run on these machines. ``kmock.KubernetesEmulator`` serves
the Kubernetes REST API over real localhost HTTP and keeps objects in
memory; the official ``kubernetes`` client talks to it unchanged. What it
does not do, and this subclass adds because the runtime depends on it:

- resourceVersions: every write stamps a new one (a global counter, as
  etcd's revision); LIST returns the current one;
- optimistic concurrency: a PATCH carrying a stale ``metadata.resourceVersion``
  gets 409 Conflict, and so do a PATCH whose ``metadata.uid`` and a DELETE
  whose ``preconditions.uid`` name another pod than the one under that name;
- label and field selectors (equality only) on LIST and WATCH;
- WATCH from a resourceVersion: events after it, then live ones, ending at
  ``timeoutSeconds``; a version older than the compaction horizon
  (:meth:`compact`) gets an ERROR event with code 410 Gone;
- ``pods/log`` from a provider function (the test kubelet's).

What only a real API server shows (admission, defaulting, Pod Security,
quota, RBAC enforcement, scheduling) is out of reach here; the manifests
are validated against the official schemas instead.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import uuid
from typing import Any, Callable

import kmock
from kmock._internal import enums, k8s, rendering

PODS = kmock.resource("", "v1", "pods")
EVENTS = kmock.resource("", "v1", "events")


def _matches(obj: dict, labels: dict[str, str], fields: dict[str, str]) -> bool:
    meta = obj.get("metadata") or {}
    have = meta.get("labels") or {}
    if any(have.get(k) != v for k, v in labels.items()):
        return False
    for key, value in fields.items():
        node: Any = obj
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != value:
            return False
    return True


def _selector(text: str | None) -> dict[str, str]:
    return dict(part.split("=", 1) for part in (text or "").split(",") if "=" in part)


class ApiServer(k8s.KubernetesEmulator):
    """See the module docstring. Its state lives on the server's event loop."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback["get /version/"] << self._serve_server_version  # the client asks with a slash
        self.revision = 0
        self.compacted = 0  # watches from a version <= this get 410 Gone
        self.history: list[tuple[int, str, dict]] = []  # (revision, type, object)
        self.log_provider: Callable[[str, str], str] | None = None
        self.before_write: Callable[[rendering.Request], None] | None = None
        self._news: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._news is None:
            self._news = asyncio.Condition()
        return self._news

    def compact(self) -> None:
        """Writes elsewhere, then etcd compaction: every version up to now gets 410 Gone."""
        self.revision += 1
        self.compacted = self.revision
        self.history.clear()

    def current(self, namespace: str, name: str) -> dict | None:
        key = (PODS, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].raw

    async def _handle(self, request: rendering.Request):
        if request.resource is not None and request.subresource != "log":
            if self.before_write is not None and request.action in (enums.action.CREATE, enums.action.UPDATE):
                self.before_write(request)
            self._stamp(request)
        response = await super()._handle(request)
        if request.resource is not None and request.action in (
                enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE) and 200 <= response.status < 300:
            await self._record(request)
        return response

    def _stamp(self, request: rendering.Request) -> None:
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            self.revision += 1
            meta = request.data.setdefault("metadata", {})
            meta.update(resourceVersion=str(self.revision), uid=str(uuid.uuid4()),
                        creationTimestamp=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta.setdefault("namespace", request.namespace)
        elif request.action == enums.action.UPDATE and isinstance(request.data, dict):
            current = self.current(request.namespace, request.name) if request.resource == PODS else None
            sent = (request.data.get("metadata") or {}).get("resourceVersion")
            uid = (request.data.get("metadata") or {}).get("uid")
            if current is not None and uid and uid != current["metadata"].get("uid"):
                raise k8s.KubernetesError(
                    status=409, reason="Conflict",
                    message=f"Precondition failed: UID in precondition: {uid}, "
                            f"UID in object meta: {current['metadata'].get('uid')}")
            if current is not None and sent and sent != current["metadata"].get("resourceVersion"):
                raise k8s.KubernetesError(
                    status=409, reason="Conflict",
                    message=f'Operation cannot be fulfilled on pods "{request.name}": the object has been '
                            "modified; please apply your changes to the latest version and try again")
            self.revision += 1
            request.data.setdefault("metadata", {})["resourceVersion"] = str(self.revision)
        elif request.action == enums.action.DELETE:
            wanted = ((request.data or {}).get("preconditions") or {}).get("uid") \
                if isinstance(request.data, dict) else None
            current = self.current(request.namespace, request.name) if request.resource == PODS else None
            if wanted and current is not None and current["metadata"].get("uid") != wanted:
                raise k8s.KubernetesError(
                    status=409, reason="Conflict",
                    message=f"Precondition failed: UID in precondition: {wanted}, "
                            f"UID in object meta: {current['metadata'].get('uid')}")
            self.revision += 1

    async def _record(self, request: rendering.Request) -> None:
        namespace = request.namespace or ((request.data or {}).get("metadata") or {}).get("namespace")
        name = request.name or ((request.data or {}).get("metadata") or {}).get("name")
        key = (request.resource, namespace, name)
        if key not in self.objects:
            return
        obj = self.objects[key]
        kind = {enums.action.CREATE: "ADDED", enums.action.UPDATE: "MODIFIED"}.get(request.action, "DELETED")
        raw = dict(obj.last.raw)
        raw["metadata"] = dict(raw.get("metadata") or {}, resourceVersion=str(self.revision))
        self.history.append((self.revision, kind, raw))
        async with self._condition():
            self._condition().notify_all()

    async def _serve_list(self, request: rendering.Request):
        labels, fields = _selector(request.params.get("labelSelector")), _selector(request.params.get("fieldSelector"))
        items = [obj.raw for (res, ns, _), obj in self.objects.items()
                 if res == request.resource and not obj.deleted
                 and (request.namespace is None or ns == request.namespace)
                 and _matches(obj.raw, labels, fields)]
        return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": str(self.revision)},
                "items": items}

    async def _serve_watch(self, request: rendering.Request):
        yield b""
        labels, fields = _selector(request.params.get("labelSelector")), _selector(request.params.get("fieldSelector"))
        since = int(request.params.get("resourceVersion") or 0)
        timeout = float(request.params.get("timeoutSeconds") or 3600)
        if since and since < self.compacted:
            yield {"type": "ERROR", "object": {
                "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "code": 410,
                "reason": "Expired", "message": f"too old resource version: {since} ({self.compacted})"}}
            return
        if not since:  # no version: the current state as ADDED, then changes
            for (res, ns, _), obj in list(self.objects.items()):
                if res == request.resource and not obj.deleted and _matches(obj.raw, labels, fields):
                    yield {"type": "ADDED", "object": obj.raw}
            since = self.revision
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for revision, kind, raw in [h for h in self.history if h[0] > since]:
                since = revision
                same_resource = (raw.get("kind") or "Pod") == "Pod" if request.resource == PODS else True
                if same_resource and (request.namespace is None or (raw.get("metadata") or {}).get(
                        "namespace") == request.namespace) and _matches(raw, labels, fields):
                    yield {"type": kind, "object": raw}
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            async with self._condition():
                try:
                    await asyncio.wait_for(self._condition().wait(), timeout=min(remaining, 1.0))
                except asyncio.TimeoutError:
                    pass

    async def _serve_fetch(self, request: rendering.Request):
        if request.subresource == "log":
            if self.current(request.namespace, request.name) is None:
                raise k8s.KubernetesObjectNotFoundError()
            provider = self.log_provider or (lambda ns, name: "")
            text = await asyncio.to_thread(provider, request.namespace, request.name)
            tail = request.params.get("tailLines")
            if tail:
                text = "".join(text.splitlines(keepends=True)[-int(tail):])
            return text.encode()
        return await super()._serve_fetch(request)

    def requests_seen(self) -> list[rendering.Request]:
        return list(self._requests)


class RunningApiServer:
    """The emulator on its own event loop in a thread, for synchronous tests and subprocesses."""

    def __init__(self) -> None:
        self.server: ApiServer | None = None
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kube-apiserver-emulator", daemon=True)

    def __enter__(self) -> "RunningApiServer":
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the API emulator did not start")
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(15)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        async with ApiServer() as handler, kmock.Server(handler) as server:
            self.server, self.url = handler, str(server.url).rstrip("/")
            self._ready.set()
            await self._stopped.wait()

    def call(self, func: Callable[[ApiServer], Any]) -> Any:
        """Run ``func(server)`` on the server's loop (its state is not thread-safe)."""
        assert self._loop is not None and self.server is not None
        server = self.server

        async def run():
            result = func(server)
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(15)

    def requests(self) -> list[rendering.Request]:
        return self.call(lambda s: s.requests_seen())
