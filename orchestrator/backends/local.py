"""The local backend: what the CLI, the HTTP API and the MCP server ask of
Genesis, answered from this process's database, runtime and artifacts.

Every method is a coroutine, so the API serves it from its event loop
(store calls run on worker threads through :class:`AsyncStore`). The remote
backend (:mod:`orchestrator.backends.remote`) answers the same calls over
the HTTP API, so a verb reads the same either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from orchestrator.domain.queries import Page, Requirement, matches
from orchestrator.domain.records import ExperimentView, HistoryEntry
from orchestrator.domain.schedule import Report
from orchestrator.errors import NotFound, SandboxGone
from orchestrator.pipeline import artifacts
from orchestrator.pipeline.intake import IntakeResult
from orchestrator.store.aio import AsyncStore


class LocalBackend:
    def __init__(self, app) -> None:
        self.app = app
        self.store = AsyncStore(app.store)

    # -- experiments ------------------------------------------------------------

    async def page(self, where: tuple[Requirement, ...] = (), *, limit: int | None = None,
                   continue_token: str | None = None) -> Page:
        return await self.store.page(where, limit=limit, continue_token=continue_token)

    async def get(self, experiment_id: str) -> ExperimentView:
        return await self.store.get(experiment_id)

    async def audit(self, experiment_id: str) -> list[HistoryEntry]:
        """The experiment's audit trail, oldest first (404 for an unknown id)."""
        view = await self.store.get(experiment_id)
        return await self.store.history(view.id)

    async def events(self, experiment_id: str) -> list[str]:
        """What the runtime's platform says about the experiment's sandbox (Kubernetes: the
        API server's events), or none where the runtime keeps no events."""
        view = await self.store.get(experiment_id)
        if not (self.app.runtime.capabilities.events and view.sandbox_name):
            return []
        return await self.app.runtime.events(view.sandbox_name)

    async def submit(self, body: bytes | dict, *, actor: str, traceparent: str | None = None,
                     instance: str | None = None) -> IntakeResult:
        """Through the same intake as NATS: recorded as Pending, or as a rejection with
        its code. ``instance``: the one the caller may submit as (refused otherwise)."""
        return await asyncio.to_thread(self.app.intake.submit, body, traceparent=traceparent, actor=actor,
                                       subject_instance=instance)

    async def cancel(self, experiment_id: str, *, actor: str) -> ExperimentView:
        """Record the intent; the controller cancels and rolls back (docs/controller.md)."""
        return await self.store.request_cancel(experiment_id, actor=actor)

    async def changed_since(self, since, *, limit: int = 1000) -> list[ExperimentView]:
        return await self.store.changed_since(since, limit=limit)

    async def watch(self, where: tuple[Requirement, ...] = ()) -> AsyncIterator[tuple[str, ExperimentView]]:
        """(ADDED|MODIFIED, view) for each change of a matching experiment from now on."""
        from orchestrator.api.watch import Watchers
        watchers = Watchers(self.changed_since, interval_s=self.app.settings.api.watch_interval_s)
        queue = watchers.subscribe()
        try:
            while True:
                kind, view = await queue.get()
                if matches(where, view):
                    yield kind, view
        finally:
            watchers.unsubscribe(queue)
            await watchers.close()

    # -- logs -------------------------------------------------------------------

    async def logs(self, experiment_id: str, *, follow: bool = False, tail: int | None = None) -> AsyncIterator[str]:
        """The sandbox's output, live while it runs or is kept, else as exported at teardown."""
        view = await self.store.get(experiment_id)
        if view.sandbox_name and not view.phase.finished or view.preserved_until:
            try:
                async for chunk in self.app.runtime.logs(view.sandbox_name, follow=follow, tail=tail):
                    yield chunk
                return
            except SandboxGone:
                pass  # torn down meanwhile: fall back to the exported copy
        stored = await asyncio.to_thread(artifacts.stored_log, self.app.settings.artifacts_dir, view.id)
        if stored is None:
            raise NotFound(f'no logs for experiment "{view.id}" (phase {view.phase.value})')
        lines = stored.splitlines(keepends=True)
        yield "".join(lines[-tail:] if tail else lines)

    async def build_logs(self, experiment_id: str) -> str:
        """The logs of the image builds the experiment used (or failed)."""
        view = await self.store.get(experiment_id)
        return await asyncio.to_thread(self._build_logs, view.id)

    def _build_logs(self, experiment_id: str) -> str:
        from orchestrator.snapshots.steps import BuildLogs

        builds = artifacts.recorded_builds(self.app.settings.artifacts_dir, experiment_id)
        if not builds:
            raise NotFound(f'no image builds recorded for experiment "{experiment_id}"')
        logs = BuildLogs(self.app.settings.build_logs_dir)
        parts = []
        for build in builds:
            text = logs.read(build["tag"])
            state = "failed" if build["tier"] == "failed" else "built for it" if build["built"] else "reused"
            parts.append(f"==> {build['tier']} {build['tag']} ({state})\n")
            parts.append(text if text is not None else "(no setup log: built from a Dockerfile or a tree)\n")
        return "".join(parts)

    async def running(self) -> list[tuple[ExperimentView, object]]:
        """Running experiments with a cgroup sample of each sandbox (``SandboxUsage``), for ``top``."""
        from orchestrator.domain.models import Phase
        views = [v for v in await self.store.list(phase=Phase.RUNNING) if v.sandbox_name and v.spec is not None]
        usages = await asyncio.gather(*(self.app.runtime.usage(v.sandbox_name) for v in views))  # ~1 s each
        return [(view, usage) for view, usage in zip(views, usages) if usage is not None]

    # -- sandboxes, images, reports ----------------------------------------------

    async def sandboxes(self) -> list:
        """The runtime's sandboxes of this installation (``SandboxState``), a claimed pooled
        one shown as its experiment's."""
        from orchestrator.pipeline.pools import claimed_view
        return await claimed_view(self.app.runtime, self.store, self.app.settings.sandbox_selector())

    async def pools(self) -> list:
        """The warm pools of this installation (``PoolRow``)."""
        from orchestrator.pipeline.pools import pool_rows
        return await pool_rows(self.app.runtime, self.store, self.app.settings.sandbox_selector())

    async def images(self) -> list:
        """Every image of Genesis's on the engine (``ImageRow``)."""
        from orchestrator.snapshots.catalog import list_images
        return await list_images(builder=self.app.snapshots, runtime=self.app.runtime, store=self.store,
                                 sandbox_labels=self.app.settings.sandbox_selector())

    async def reports(self, *, kind: str | None = None, period: str | None = None) -> list[Report]:
        return await self.store.reports(kind=kind, period=period)

    async def report(self, name: str) -> Report:
        """One report by name, ``<kind>-<period>`` (kinds have no dash)."""
        kind, _, period = name.partition("-")
        found = await self.reports(kind=kind, period=period)
        if not found:
            raise NotFound(f'reports "{name}" not found')
        return found[0]

    async def ping(self) -> None:
        """The database answers (the API's readiness)."""
        await self.store.count()
