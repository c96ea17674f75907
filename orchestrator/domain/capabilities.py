"""What a sandbox runtime can honour beyond the calls every runtime must answer.

One value per runtime (``runtime.capabilities``, see
:class:`orchestrator.runtimes.base.Runtime`), read by every caller that
would otherwise ask ``hasattr(runtime, ...)`` or compare the runtime's name:
intake refuses what the runtime cannot honour (a request accepted and
silently not honoured is a wrong verdict later), ``genesis describe`` asks
for platform events only where there are some, the health report asks for
disk use only where it is measured, the image builder mirrors snapshots to
the registry pods pull from.

Pure decisions over these values live here too: what a request is refused
for (:meth:`Capabilities.refusals`, :meth:`Capabilities.pids_refusal`), what
``describe`` says about a pids limit (:func:`pids_note`), what start-up warns
about (:func:`pids_startup_warning`).

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
# How a sandbox's pids limit (resources.pids) is enforced: exactly, per sandbox (Docker's
# pids cgroup); by the node, the same for every pod (the kubelet's podPidsLimit, which the
# Pod API cannot set); or not that Genesis knows of (a podPidsLimit nobody stated).
PidsModel = Literal["exact", "node", "none"]
PoolModel = Literal["none", "warm", "hot"]


@dataclass(frozen=True)
class Capabilities:
    """Optional things a runtime can do; each ``False``/``None`` unless it says so."""

    network: bool = False  # a sandbox may be given a network (a request's ``network: true``)
    network_note: str = ""  # why not, when it may not: said in the refusal and at start-up
    pids: PidsModel = "none"
    max_pids: int | None = None  # pids "node": the node's limit, which every pod gets
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
    # Sandboxes made ahead of demand that take their bundle later (``deliver()``): not at all;
    # "warm", created but not started until the bundle is in (Kubernetes: a gated pod); or
    # "hot" too, started with the runner waiting for the bundle on stdin (Docker).
    pools: PoolModel = "none"
    exit_events: bool = False  # tells of its sandboxes' exits as they happen (``exits()``)

    def refusals(self, *, network: bool, gpus: int) -> list[str]:
        """What of a request this runtime cannot honour, one phrase each; empty when it can."""
        problems = []
        if network and not self.network:
            why = self.network_note or f"sandboxes on {self.sandbox_runtime or 'this runtime'} get no network"
            problems.append(f"network: true ({why})")
        if gpus and self.gpus == "none":
            problems.append(f"gpu {gpus} (this runtime cannot give a sandbox GPUs)")
        return problems

    def pids_refusal(self, pids: int) -> str | None:
        """A count the node cannot give (more than its podPidsLimit); None when it can."""
        if self.pids == "node" and self.max_pids is not None and pids > self.max_pids:
            return f"pids {pids} > {self.max_pids} (the node's podPidsLimit, which every sandbox gets)"
        return None


def pids_note(*, model: str | None, node_limit: int | None, requested: int) -> str:
    """The suffix ``describe`` adds to ``pids=512``, from what the sandbox's creation recorded:
    empty where the limit is the request's own (Docker) or not known (older records)."""
    if model == "none":
        return " (not enforced: podPidsLimit unknown)"
    if model == "node" and node_limit is not None and node_limit != requested:
        return f" (enforced as the node's podPidsLimit: {node_limit})"
    return ""


def pids_startup_warning(capabilities: Capabilities, *, runtime: str) -> str | None:
    """What start-up says when no pids limit can be promised; None when one can.

    Not a refusal of every request: the limit is the node's, set outside Genesis (the
    kubelet's podPidsLimit, unlimited unless configured), so Genesis cannot find it out,
    only be told (``kubernetes.pod_pids_limit``). Until then it says so here and in
    ``describe`` of every sandbox, rather than refuse all work over a figure it never set.
    """
    if capabilities.pids != "none":
        return None
    return (f"pids limits cannot be promised on the {runtime} runtime: the node's podPidsLimit is not "
            "stated (kubernetes.pod_pids_limit); sandboxes get whatever the kubelet sets, unlimited "
            "by default, and describe says 'not enforced'")
