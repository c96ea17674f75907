"""What a sandbox runtime can honour beyond the calls every runtime must answer.

One value per runtime (``runtime.capabilities``, see
:class:`orchestrator.runtimes.base.Runtime`), read by every caller that
would otherwise ask ``hasattr(runtime, ...)`` or compare the runtime's name:
intake refuses what the runtime cannot honour (a request accepted and
silently not honoured is a wrong verdict later), ``genesis describe`` asks
for platform events only where there are some, the health report asks for
disk use only where it is measured, the image builder mirrors snapshots to
the registry pods pull from.

The defaults are "cannot": a runtime that declares nothing promises nothing
optional. Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# How a runtime gives a sandbox GPUs: not at all; specific host devices, by id,
# that it detects and tracks (Docker device requests); or a count the
# platform's device plugin fills (Kubernetes ``nvidia.com/gpu``).
GpuModel = Literal["none", "devices", "count"]
# Whose kernel a sandbox's system calls reach: the host's (runc, a namespace and
# cgroup boundary), or gVisor's user-space kernel (runsc), which answers them itself.
Kernel = Literal["host", "gvisor"]


@dataclass(frozen=True)
class Capabilities:
    """Optional things a runtime can do; each ``False``/``None`` unless it says so."""

    network: bool = False  # a sandbox may be given a network (a request's ``network: true``)
    gpus: GpuModel = "none"
    disk_usage: bool = False  # measures the disk its sandboxes' writable layers use (``disk_usage()``)
    # Caps what a sandbox writes at resources.disk (Docker: a storage driver with quotas,
    # found at start-up; Kubernetes: ephemeral-storage limits). False: it runs unbounded.
    disk_quota: bool = False
    disk_storage: str = ""  # what is (or is not) behind it, for people: "btrfs", "overlay2 on extfs"
    events: bool = False  # the platform's events about one sandbox (``events(name)``: why it waits)
    # Where it pulls snapshot images from; None: the image store of the engine that built them.
    image_registry: str | None = None
    # The low-level runtime its sandboxes run under (Docker's ``--runtime``); None: the platform's default.
    sandbox_runtime: str | None = None
    kernel: Kernel = "host"
    seccomp: bool = False  # a seccomp filter narrows the system calls a sandbox may make

    def refusals(self, *, network: bool, gpus: int) -> list[str]:
        """What of a request this runtime cannot honour, one phrase each; empty when it can."""
        problems = []
        if network and not self.network:
            problems.append(f"network: true (sandboxes on {self.sandbox_runtime or 'this runtime'} get no network)")
        if gpus and self.gpus == "none":
            problems.append(f"gpu {gpus} (this runtime cannot give a sandbox GPUs)")
        return problems
