"""The runtime protocol: what every sandbox backend must do, and nothing else.

Runtimes do; they never decide. The pipeline (and later the controller)
decides what to create, when to kill and what to keep. Every runtime
delivers the change the same way (a bundle document the in-image runner
reads from ``/genesis/in/bundle.json``, or, for a sandbox made ahead of
demand, the one ``deliver`` gives it) and returns results the same way
(the files the runner wrote under ``/genesis/out``), so a Docker container
and a Kubernetes pod are interchangeable behind this interface.

Errors raised here are Genesis's own (:mod:`orchestrator.errors`); a
backend translates its SDK's exceptions at its boundary.

What a backend can do beyond the required calls it declares in
``capabilities`` (:class:`orchestrator.domain.capabilities.Capabilities`);
callers ask there, never ``hasattr`` or the runtime's name. A backend
subclasses :class:`Runtime` to inherit the optional calls' defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import AsyncIterator, BinaryIO, Literal, Protocol

from orchestrator.domain.capabilities import Capabilities
from orchestrator.errors import RuntimeFailure

MANAGED_BY = "genesis.managed-by"
MANAGED_BY_VALUE = "genesis"
LABEL_EXPERIMENT = "genesis.experiment-id"
LABEL_INSTANCE = "genesis.instance-id"
LABEL_ROLE = "genesis.role"  # "experiment" or "baseline"
LABEL_ATTEMPT = "genesis.attempt"
LABEL_INSTALLATION = "genesis.installation"  # several Genesis installations may share one engine
# On images, the installation that built them (what its cleanup job may remove). Never
# LABEL_INSTALLATION: a container inherits its image's labels, and any container started
# from a snapshot (a debugging `docker run`, a kubelet's) would pass for that
# installation's orphaned sandbox and be reaped.
LABEL_BUILT_BY = "genesis.built-by"
# A pooled sandbox, made before any experiment asked for it: its pool (the profile's key).
# Labels cannot change after creation, so which experiment claimed it is in the store.
LABEL_POOL = "genesis.pool"

DISRUPTED_REASONS = frozenset({"evicted", "preempted", "node_lost", "admission_rejected",
                               "image_unavailable", "disrupted"})

SandboxStatus = Literal["created", "running", "exited", "missing"]


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a runtime needs to create one sandbox."""

    name: str
    image: str
    labels: dict[str, str]
    bundle: bytes
    cpu: float
    memory_bytes: int
    pids: int
    network: bool = False
    gpus: tuple[str, ...] = ()
    tmp_bytes: int = 256 * 2**20  # tmpfs /tmp; counts against the memory limit
    disk_bytes: int | None = None  # what it may write (workspace, /genesis/out); None: unbounded
    log_max_bytes: int | None = None  # the engine's log of it: rotated at this size ...
    log_max_files: int = 2  # ... keeping this many files
    timeout_s: float | None = None  # a runtime-side backstop (Kubernetes activeDeadlineSeconds)
    # A pooled sandbox: made with no bundle, which ``deliver`` gives it at the claim.
    bundle_stdin: bool = False


@dataclass(frozen=True)
class SandboxState:
    """What the runtime reports about one sandbox."""

    name: str
    status: SandboxStatus
    labels: dict[str, str] = field(default_factory=dict)
    uid: str | None = None  # the runtime's own id: a Docker container id, a pod's UID
    exit_code: int | None = None
    oom_killed: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    image: str | None = None
    # Why it ended, in the runtime's words made neutral: oom_killed,
    # deadline_exceeded, or one of DISRUPTED (the infrastructure's doing).
    reason: str | None = None
    message: str | None = None

    @property
    def disrupted(self) -> bool:
        """Ended by the infrastructure (eviction, preemption, a lost node), not by the change."""
        return self.reason in DISRUPTED_REASONS


@dataclass(frozen=True)
class SandboxUsage:
    """One cgroup sample of a running sandbox."""

    cpu_seconds: float
    memory_working_set_bytes: int
    memory_limit_bytes: int
    pids: int


# The log tail a collection reads: its last lines, at most this much of them (a
# flood on stdout stays out of memory; the engine splits long lines at 16 KiB).
LOG_TAIL_LINES = 5000
LOG_TAIL_BYTES = 8 * 2**20


@dataclass(frozen=True)
class SandboxOutput:
    """Files the runner left under /genesis/out (bounded) and the log's tail
    (LOG_TAIL_LINES lines, at most LOG_TAIL_BYTES)."""

    files: dict[str, bytes]
    log_tail: str
    truncated: tuple[str, ...] = ()
    # The runtime's own measure of what the sandbox wrote, and the quota it set (None: not known).
    disk_used_bytes: int | None = None
    disk_quota_bytes: int | None = None


class Runtime(Protocol):
    """A sandbox backend. All methods are coroutines; blocking SDKs use threads."""

    name: str
    capabilities: Capabilities = Capabilities()  # the optional things it can honour: none unless declared

    async def ping(self) -> str:
        """The backend's version; raises RuntimeFailure when unreachable."""

    async def create(self, spec: SandboxSpec) -> str:
        """Create the sandbox with its bundle delivered, not yet started; returns its uid.

        The name is a compare-and-set: creating a name that exists fails
        (RuntimeFailure), except a retried create of the very same sandbox."""

    async def start(self, name: str) -> None: ...

    async def wait(self, name: str, *, timeout_s: float) -> SandboxState | None:
        """The final state once it exits, or ``None`` if still running at the timeout."""

    async def kill(self, name: str, *, uid: str | None = None) -> None:
        """Stop it, keeping its output. With ``uid``, only the object created with that id."""

    async def inspect(self, name: str) -> SandboxState:
        """Current state; ``status="missing"`` when it does not exist."""

    async def collect(self, name: str, *, max_file_bytes: int) -> SandboxOutput: ...

    async def logs(self, name: str, *, follow: bool = False, tail: int | None = None) -> AsyncIterator[str]:
        """Log lines as text; follows until the sandbox exits when ``follow``."""

    async def remove(self, name: str, *, uid: str | None = None) -> bool:
        """Delete the sandbox; ``False`` when it was already gone. With ``uid``, only the
        object created with that id: a later sandbox of the same name is left alone."""

    async def list(self, labels: dict[str, str]) -> list[SandboxState]:
        """Every sandbox carrying all of ``labels``."""

    async def usage(self, name: str) -> SandboxUsage | None:
        """A cgroup sample of a running sandbox; ``None`` when it is not running."""

    # -- optional: only where ``capabilities`` says so ------------------------------

    async def disk_usage(self) -> int:
        """Bytes in the writable layers of Genesis's sandboxes (``capabilities.disk_usage``)."""
        raise RuntimeFailure(f"{self.name}: disk use is not measured", code="unsupported_by_runtime")

    async def deliver(self, name: str, bundle: bytes, *, uid: str | None = None, start: bool = False,
                      timeout_s: float | None = None) -> None:
        """Give a pooled sandbox (created with ``bundle_stdin``) its bundle, starting it first
        with ``start`` (``capabilities.pools``), and the run's backstop ``timeout_s`` where the
        runtime keeps one. Docker writes it to the waiting runner's stdin; Kubernetes writes it
        into the gated pod, with its activeDeadlineSeconds, and lifts the gate in one update."""
        raise RuntimeFailure(f"{self.name}: no pooled sandboxes", code="unsupported_by_runtime")

    async def exits(self, labels: dict[str, str]) -> AsyncIterator[str]:
        """Names of the sandboxes carrying ``labels`` as they exit, for as long as the caller
        iterates (``capabilities.exit_events``): the controller collects at once, not at its
        next pass."""
        raise RuntimeFailure(f"{self.name}: no exit events", code="unsupported_by_runtime")
        yield ""  # an async generator, like the implementations

    async def events(self, name: str) -> list[str]:
        """The platform's events about one sandbox, oldest first (``capabilities.events``)."""
        raise RuntimeFailure(f"{self.name}: no platform events", code="unsupported_by_runtime")


@dataclass(frozen=True)
class ImageInfo:
    tag: str
    id: str
    size_bytes: int
    labels: dict[str, str]
    created: datetime | None


@dataclass(frozen=True)
class BuildRun:
    """One build step run in a container and committed as ``tag`` (environment
    setup, snapshot setup). ``files`` (paths relative to /) are copied in
    first; ``secrets`` go to a private directory the script must delete;
    ``labels`` mark the build container, ``image_labels`` the image."""

    image: str
    tag: str
    script: str
    files: dict[str, bytes]
    secrets: dict[str, bytes]
    labels: dict[str, str]
    image_labels: dict[str, str]
    network: bool = True
    timeout_s: float = 1800.0
    memory_bytes: int = 4 * 2**30
    log_bytes: int = 4 * 2**20


class ImageStore(Protocol):
    """Where snapshot images are built and kept (the Docker engine's image store)."""

    async def get(self, tag: str) -> ImageInfo | None: ...

    async def build(self, context: BinaryIO, *, tag: str, labels: dict[str, str],
                    buildargs: dict[str, str] | None = None) -> ImageInfo:
        """Build from a tar build context; raises ImageBuildError with the log tail."""

    async def run_and_commit(self, run: BuildRun) -> tuple[ImageInfo, str]:
        """Run a build step as root and commit its container; (image, build log).
        Raises ImageBuildError, with the log, when the step fails."""

    async def remove(self, tag: str) -> None: ...

    async def list(self, labels: dict[str, str]) -> list[ImageInfo]: ...
