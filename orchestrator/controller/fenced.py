"""The runtime as a controller's step sees it: effects refused once its term lapsed.

Reads (list, inspect, wait, logs, collect, usage) pass through; the calls
that change the world (create, start, deliver, kill, remove) first check the ambient
:class:`orchestrator.fencing.Term` on the local monotonic clock. A former
leader's step that wakes up (SIGCONT, a healed partition) is stopped here
before it touches a sandbox its successor may now drive. Kill and remove
also go by the id recorded at creation (``uid``), so even a check overtaken
by a stop cannot reach another leader's sandbox of the same name.
"""

from __future__ import annotations

from orchestrator import fencing
from orchestrator.runtimes.base import Runtime, SandboxSpec


class FencedRuntime:
    """:class:`Runtime` whose effects are fenced by the ambient term."""

    def __init__(self, inner: Runtime) -> None:
        self.inner = inner

    def __getattr__(self, attribute: str):
        return getattr(self.inner, attribute)

    async def create(self, spec: SandboxSpec) -> str:
        fencing.check(f"creating sandbox {spec.name}")
        return await self.inner.create(spec)

    async def start(self, name: str) -> None:
        fencing.check(f"starting sandbox {name}")
        await self.inner.start(name)

    async def deliver(self, name: str, bundle: bytes, *, uid: str | None = None, start: bool = False,
                      timeout_s: float | None = None) -> None:
        fencing.check(f"delivering to sandbox {name}")
        await self.inner.deliver(name, bundle, uid=uid, start=start, timeout_s=timeout_s)

    async def kill(self, name: str, *, uid: str | None = None) -> None:
        fencing.check(f"killing sandbox {name}")
        await self.inner.kill(name, uid=uid)

    async def remove(self, name: str, *, uid: str | None = None) -> bool:
        fencing.check(f"removing sandbox {name}")
        return await self.inner.remove(name, uid=uid)
