"""Request, outcome and metric models of the Genesis contract (SPEC §2–4).

These are the shapes that cross every layer: intake parses a request into
:class:`ExperimentRequest`, the pipeline produces :class:`Metrics` and an
:class:`Outcome`. Parsing only checks shape and ranges here; path safety and
host limits are checked in :mod:`orchestrator.domain.intake`, which knows the
configured limits.
"""

from __future__ import annotations

import enum
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_MEMORY_UNITS = {
    "": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
    "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40,
}
_MEMORY_RE = re.compile(r"^\s*(\d{1,30}(?:\.\d{1,30})?)\s*([kKmMgGtT]i?)?[bB]?\s*$")


def parse_memory(value: str | int) -> int:
    """Kubernetes-style quantity ("512Mi", "4Gi", "1G", 1048576) to bytes."""
    if isinstance(value, int):
        if not 0 <= value < 2**63:
            raise ValueError(f"memory {value} is out of range")
        return value
    match = _MEMORY_RE.match(value)
    if not match:
        raise ValueError(f"memory {value!r} is not a quantity like '512Mi' or '4Gi'")
    number, unit = match.groups()
    value = float(number) * _MEMORY_UNITS[(unit or "").lower()]
    if not value < 2**63:  # also false for inf
        raise ValueError(f"memory {value!r} is beyond any host")
    return int(value)


class Phase(str, enum.Enum):
    PENDING = "Pending"
    BUILDING = "Building"
    RUNNING = "Running"
    COLLECTING = "Collecting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class Recommendation(str, enum.Enum):
    MERGE = "merge"
    MERGE_WITH_ADAPTATIONS = "merge_with_adaptations"
    ROLLBACK = "rollback"

    @property
    def preserves_sandbox(self) -> bool:
        return self is not Recommendation.ROLLBACK


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileChange(_Strict):
    """Write, replace or delete one file, relative to the repository root."""

    path: str = Field(min_length=1, max_length=4096)
    content: str | None = None
    content_b64: str | None = None
    delete: bool = False
    mode: Literal["644", "755"] | None = None

    @model_validator(mode="after")
    def _one_action(self) -> "FileChange":
        given = [self.content is not None, self.content_b64 is not None, self.delete]
        if sum(given) > 1:
            raise ValueError(f"{self.path}: give one of content, content_b64 or delete")
        return self

    @property
    def has_action(self) -> bool:
        return self.delete or self.content is not None or self.content_b64 is not None


class Changes(_Strict):
    description: str = Field(default="", max_length=10_000)
    patch: str | None = None
    files: list[FileChange] = Field(default_factory=list)

    @field_validator("files", mode="before")
    @classmethod
    def _bare_paths(cls, value: Any) -> Any:
        # A bare list of paths ("files": ["a.py"]) is the old system's shape:
        # parse it so the empty-change rule can name it, instead of a type error.
        if isinstance(value, list):
            return [{"path": v} if isinstance(v, str) else v for v in value]
        return value


class Validation(_Strict):
    """The repository's test command, and how it reports: ``junit`` (a JUnit
    XML file under /genesis/out, the default) or ``exit_code`` (one test, for
    a command that truly has no report)."""

    command: list[str] = Field(min_length=1, max_length=256)
    workdir: str = "."
    report: Literal["junit", "exit_code"] = "junit"


class Resources(_Strict):
    cpu: float = Field(default=1.0, gt=0, le=1024)
    memory: str | int = "1Gi"
    gpu: int = Field(default=0, ge=0, le=64)
    pids: int = Field(default=512, ge=16, le=65536)
    # What the sandbox itself may write (its workspace, /genesis/out; the image's own
    # layers are not counted). None: the installation's default (``default_resources``).
    disk: str | int | None = None

    @field_validator("memory")
    @classmethod
    def _memory_parses(cls, value: str | int) -> str | int:
        if parse_memory(value) < 16 * 2**20:
            raise ValueError("memory below 16Mi cannot start a sandbox")
        return value

    @field_validator("disk")
    @classmethod
    def _disk_parses(cls, value: str | int | None) -> str | int | None:
        if value is not None and parse_memory(value) < 16 * 2**20:
            raise ValueError("disk below 16Mi cannot hold a workspace")
        return value

    @property
    def memory_bytes(self) -> int:
        return parse_memory(self.memory)

    @property
    def disk_bytes(self) -> int | None:
        return parse_memory(self.disk) if self.disk is not None else None


ExperimentId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class ExperimentRequest(_Strict):
    """SPEC §2. ``experiment_id`` is the idempotency key."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    experiment_id: ExperimentId
    instance_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    experiment_type: str = Field(default="unspecified", max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = Field(default="", max_length=10_000)
    risk_level: Literal["low", "medium", "high"] = "medium"
    estimated_impact: float | None = Field(default=None, ge=-1e6, le=1e6)
    repo: str = Field(min_length=1, max_length=128)
    base_ref: str = Field(min_length=1, max_length=256)
    changes: Changes
    validation: Validation | None = None
    resources: Resources = Field(default_factory=Resources)
    network: bool = False
    timeout_ms: int = Field(default=3_600_000, gt=0, le=7 * 24 * 3_600_000)
    priority: int = Field(default=0, ge=-1000, le=1000)
    rollback_plan: str | None = Field(default=None, max_length=10_000)

    @field_validator("experiment_id")
    @classmethod
    def _uuid_like(cls, value: str) -> str:
        # Clients choose UUIDs; other safe tokens are accepted so operators can
        # name experiments by hand with `genesis apply`.
        try:
            return str(uuid.UUID(value))
        except ValueError:
            return value


class Condition(BaseModel):
    """A Kubernetes-style status condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: datetime


class TestCounts(BaseModel):
    total: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0


class Metrics(BaseModel):
    """SPEC §4 figures of one run. ``None`` means "not measured"."""

    success_rate: float = 0.0
    regression: float = 0.0
    llm_reduction: float | None = None
    performance_delta: float | None = None
    runtime_ms: int = 0
    test_count: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    memory_peak_mb: float | None = None
    cpu_usage_percent: float | None = None
    io_operations: int | None = None
    code_coverage_percent: float | None = None
    complexity_change: int | None = None
    # The verdict's own figures (see orchestrator/domain/grading.py).
    pass_to_fail: int = 0  # baseline-passing tests the change breaks, flaky ones excepted
    fail_to_pass: int = 0
    flaky_tests: int = 0  # tests whose outcome varied between runs of one tree
    protected_changed: int = 0  # protected test-infrastructure files the change edits
    performance_noise: float | None = None  # spread of the baseline's runtimes, as a share
    performance_excess: float | None = None  # performance_delta beyond that spread (0 inside it)
    custom: dict[str, float] = Field(default_factory=dict)


class Baseline(BaseModel):
    success_rate: float
    test_count: int
    runtime_ms: int
    repetitions: int = 1
    runtimes_ms: list[int] = Field(default_factory=list)


class SandboxInfo(BaseModel):
    runtime: str
    # The low-level runtime it ran under (Docker's --runtime, e.g. runsc); None: the platform's default.
    sandbox_runtime: str | None = None
    image: str
    name: str | None = None
    preserved: bool = False
    preserved_until: datetime | None = None


class ErrorInfo(BaseModel):
    code: str
    message: str


class Outcome(BaseModel):
    """SPEC §3, the message published once per experiment."""

    experiment_id: str
    instance_id: str
    status: Literal["success", "failed"]
    recommendation: Recommendation
    metrics: Metrics | None = None
    baseline: Baseline | None = None
    sandbox: SandboxInfo | None = None
    error: ErrorInfo | None = None
    # Each test's fate (PASS_TO_FAIL, FAIL_TO_PASS, FLAKY, ... with names), the
    # passes and reruns behind it, and the protected files the change edited.
    tests: dict | None = None
    trace_id: str | None = None
    timestamp: datetime
    # Bumped when a field changes meaning or goes away (adding one does not), so an
    # agent can refuse a message it does not understand.
    schema_version: int = 1
