"""Configuration, read once at the edge (the CLI) and passed down explicitly.

Sources, later wins: built-in defaults, a YAML file (``--config``,
``$GENESIS_CONFIG`` or ``./genesis.yaml``), then a few environment variables
for what differs per host (``GENESIS_HOME``, ``GENESIS_DATABASE_URL``,
``GENESIS_BASE_IMAGE``, ``GENESIS_RUNTIME``, ``GENESIS_INSTALLATION``,
``GENESIS_IMAGES_DIR``, the NATS URL and credentials). Host capacity (CPUs, memory) is measured here so
intake can refuse impossible requests without asking the runtime.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from orchestrator.domain import egress
from orchestrator.domain.capabilities import Capabilities
from orchestrator.domain.environment import EnvironmentConfig, RepoFile
from orchestrator.domain.intake import IntakeLimits
from orchestrator.domain.models import Resources, Validation, parse_memory
from orchestrator.domain.planner import Capacity, Limits
from orchestrator.domain.policy import DEFAULT_POLICY, Policy
from orchestrator.errors import GenesisError

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Settings that are gone; a file that still sets one loads, with a warning, rather
# than a deploy refusing to start over a value that no longer means anything.
RETIRED = {("cleanup_interval_s",): "the cleanup job runs every 6 h on the wall clock",
           ("nats", "report_interval_s"): "the daily report runs on the wall clock, once per UTC day"}
DEFAULT_VALIDATION = Validation(command=["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                         "--junitxml=/genesis/out/junit.xml"])


class RepoConfig(BaseModel):
    """One repository: where it is, and how its images are built and its changes validated.

    ``toolchain``, ``environment``, ``snapshot_setup`` and ``validation`` may
    also come from the repository's ``.genesis.yaml`` at the experiment's base
    commit, which wins (:meth:`with_file`); the rest is the operator's alone.
    """

    model_config = ConfigDict(extra="forbid")

    path: Path
    validation: Validation = DEFAULT_VALIDATION
    toolchain: str = "python"
    environment: EnvironmentConfig | None = None
    # Run as root with network over the whole tree when the snapshot is built
    # (`pip install -e .`, `npm ci` with workspaces): see docs/environments.md.
    snapshot_setup: list[str] = Field(default_factory=list, max_length=64)
    # A change that edits an environment input is refused unless this is set; when
    # set, its own setup runs (as root, with network) and its verdict is capped.
    allow_dependency_changes: bool = False
    # A request's own `validation` is refused unless this is set (SPEC §2).
    allow_validation_override: bool = False
    # Protected test infrastructure and test files (globs); None: the toolchain's
    # defaults (orchestrator/domain/protected.py).
    protected: list[str] | None = None
    test_files: list[str] | None = None
    # pytest plugins that load although installed plugins do not autoload.
    pytest_plugins: list[str] = Field(default_factory=list, max_length=64)
    # One test's setup, call and teardown (pytest); past it that test fails alone. None: off.
    test_timeout_s: float | None = Field(default=300.0, gt=0)

    def with_file(self, file: RepoFile | None) -> "RepoConfig":
        """These settings with the repository's own ``.genesis.yaml`` on top."""
        if file is None:
            return self
        return self.model_copy(update={key: getattr(file, key) for key in RepoFile.model_fields
                                       if getattr(file, key) is not None})


class VerdictSettings(BaseModel):
    """How hard Genesis looks before it believes a result (docs/verdicts.md)."""

    model_config = ConfigDict(extra="forbid")

    baseline_repetitions: int = Field(default=3, ge=1, le=20)  # runs per baseline key: finds flaky tests
    reruns: int = Field(default=3, ge=0, le=20)  # fresh pass-A runs when a test goes PASS_TO_FAIL
    grading_version: int = 2  # part of every baseline key: older baselines are never reused


class PoolSettings(BaseModel):
    """Warm pools (docs/pools.md): sandboxes made before they are asked for, per snapshot
    image and resource profile, sized by recent demand within a global budget."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True  # off: every sandbox is made when its experiment starts
    max_sandboxes: int = Field(default=8, ge=0)  # ready sandboxes across all pools
    max_memory: str = "8Gi"  # the sum of their memory limits
    max_per_pool: int = Field(default=8, ge=1)  # no pool holds more (nor more than max_concurrent)
    max_hot_per_pool: int = Field(default=4, ge=0)  # started, the runner waiting; the rest only created
    window_s: float = Field(default=60.0, gt=0)  # demand is the launches of the last window
    idle_s: float = Field(default=300.0, gt=0)  # a pool nobody asked of for this long is emptied


class BuildSettings(BaseModel):
    """What environment and snapshot builds (and nothing else) are given.

    ``ca_bundle`` is mounted into the build and named by the usual variables
    (PIP_CERT, SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, ...); ``env`` (proxy
    variables, which may carry credentials) is set for trusted builds only.
    Neither ever reaches an image's layers, history or config, nor a sandbox.
    A build of a change's own dependencies gets the CA bundle and
    ``untrusted_env`` only.
    """

    model_config = ConfigDict(extra="forbid")

    ca_bundle: Path | None = None
    env: dict[str, SecretStr] = Field(default_factory=dict)
    untrusted_env: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=1800.0, gt=0)
    log_bytes: int = Field(default=4 * 2**20, ge=4096)  # build log kept per image


class NatsSettings(BaseModel):
    """Where agents reach Genesis. Secrets are ``SecretStr``: never printed or logged."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = "nats://127.0.0.1:4222"  # comma-separated servers; null switches NATS off
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    nkeys_seed: Path | None = None  # an NKey seed file
    creds_file: Path | None = None  # a JWT + NKey .creds file
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    request_stream: str = "GENESIS_REQUESTS"
    outcome_stream: str = "GENESIS_OUTCOMES"
    dlq_stream: str = "GENESIS_DLQ"
    consumer: str = "genesis-intake"
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    nak_backoff_s: list[float] = Field(default_factory=lambda: [1.0, 5.0, 15.0, 30.0])
    fetch_batch: int = 256  # one fetch is one intake transaction: 2,200/s on PostgreSQL where 64 gave 1,600
    duplicate_window_s: float = 3600.0  # the relay's Nats-Msg-Id de-duplication horizon
    legacy_mirrors: bool = False  # also publish agent.events.experiment.{completed,failed}.<id>
    health_interval_s: float = 300.0  # the daily report runs on the wall clock (docs/controller.md)

    def servers(self) -> list[str]:
        return [u.strip() for u in (self.url or "").split(",") if u.strip()]


class KubernetesSettings(BaseModel):
    """The ``kubernetes`` runtime: one Pod per sandbox in ``namespace`` (SPEC §8).

    Snapshot images are still built by a Docker engine (``docker_url``). With
    ``registry`` set they are pushed there and pods pull them; without it
    pods use ``image_pull_policy: Never`` and must run on a node whose
    container runtime shares that engine's image store (a single GPU host).
    """

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(default="genesis-sandboxes", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    kubeconfig: Path | None = None  # default: in-cluster config, else ~/.kube/config
    context: str | None = None
    registry: str | None = None  # e.g. registry.example:5000; pods pull <registry>/<snapshot tag>
    image_pull_policy: Literal["Never", "IfNotPresent", "Always"] | None = None  # default: Never without registry
    image_pull_secrets: list[str] = Field(default_factory=list)
    runtime_class: str | None = None  # e.g. gvisor, kata, nvidia
    node_selector: dict[str, str] = Field(default_factory=dict)
    gpu_node_selector: dict[str, str] = Field(default_factory=dict)  # added only for pods that get GPUs
    tolerations: list[dict] = Field(default_factory=list)
    gpu_tolerations: list[dict] = Field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    gpu_resource: str = "nvidia.com/gpu"
    workspace_size: str = "4Gi"  # emptyDir the runner copies /workspace into (root fs is read-only)
    deadline_slack_s: int = Field(default=60, ge=1)  # activeDeadlineSeconds = timeout + slack: a backstop
    watch_timeout_s: int = Field(default=300, ge=1)  # server-side timeout of one watch request
    request_timeout_s: float = 30.0
    # The kubelet's podPidsLimit on the nodes sandboxes run on (KubeletConfiguration), as the
    # operator knows it: the Pod API cannot set a pids limit, so every pod gets the node's.
    # Requests for more are refused (resources_exceeded); None: not known, and start-up and
    # `describe` say that no pids limit is promised (docs/kubernetes.md).
    pod_pids_limit: int | None = Field(default=None, ge=1)
    # With sandbox_egress: CIDRs sandbox pods may not reach on top of the private, link-local
    # and CGNAT ranges always excepted (orchestrator/domain/egress.py), e.g. the API server's
    # public endpoint, or pod and service CIDRs outside those ranges.
    egress_except: list[str] = Field(default_factory=list)
    # Where the cluster DNS pods run: a pod with network may reach them on port 53 (they sit
    # in the excepted pod CIDR). None: no DNS rule; sandboxes resolve nothing.
    dns_namespace: str | None = "kube-system"
    dns_pod_labels: dict[str, str] = Field(default_factory=lambda: {"k8s-app": "kube-dns"})

    @field_validator("egress_except")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        return egress.check_cidrs(value)


class ApiSettings(BaseModel):
    """The HTTP API (``/api/v1``), the web UI (``/``) and MCP over HTTP (``/mcp``),
    served by ``genesis serve`` on a port of their own (docs/api.md)."""

    model_config = ConfigDict(extra="forbid")

    address: str = "127.0.0.1"  # 0.0.0.0 in a pod; any non-loopback bind requires tokens_file
    port: int = Field(default=8080, ge=0, le=65535)  # 0 switches the API off
    # Hashed bearer tokens with their roles (a file, or a Kubernetes Secret mounted as
    # one); re-read when it changes, so tokens rotate without a restart. None: only
    # a loopback bind is allowed, and every local caller is an operator.
    tokens_file: Path | None = None
    rate_limit_per_s: float = Field(default=20.0, gt=0)  # requests per token, sustained
    rate_limit_burst: int = Field(default=60, ge=1)
    session_ttl_s: int = Field(default=8 * 3600, ge=60)  # the web UI's cookie session
    watch_interval_s: float = Field(default=0.5, gt=0)  # how often one shared poll looks for changes


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    home: Path = Path(".genesis")
    database_url: str | None = None
    runtime: Literal["docker", "kubernetes"] = "docker"
    docker_url: str | None = None
    # The Docker runtime sandboxes run under (``--runtime``): e.g. runsc, gVisor's, registered
    # with the engine (docs/isolation.md "gVisor"). None: the engine's default (runc). Image
    # builds always use the default. On Kubernetes, kubernetes.runtime_class is the equivalent.
    sandbox_runtime: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    base_image: str = "genesis/base:bookworm"
    # May a sandbox have a network at all (a request's `network: true`)? Off: every runtime
    # declares none and intake refuses it (unsupported_by_runtime). On: Docker gives it the
    # filtered egress network (iptables; refused if that cannot be set up), Kubernetes a
    # NetworkPolicy of its own; neither reaches private, link-local or CGNAT addresses, the
    # host, or other sandboxes (docs/isolation.md "Network").
    sandbox_egress: bool = False
    # "strict": on top of the engine's profile (Docker's default under runc), the runner
    # stacks a seccomp filter of Genesis's own on the validation that refuses (EPERM) ptrace,
    # process_vm_*, io_uring, bpf, perf_event_open, userfaultfd, keyrings, namespaces and
    # mounts (docs/isolation.md "Seccomp"). Part of the baseline's sandbox too.
    sandbox_seccomp: Literal["default", "strict"] = "default"
    images_dir: Path = PROJECT_ROOT / "images"
    repos: dict[str, RepoConfig] = Field(default_factory=dict)
    # resources.disk of a request that gives none; every sandbox gets a disk size.
    default_resources: Resources = Resources(cpu=1, memory="1Gi", pids=512, disk="10Gi")
    max_disk: str = "64Gi"  # the most resources.disk one request may ask for (resources_exceeded)
    # Where the runtime cannot enforce resources.disk (overlay2 on ext4): "warn" logs it at
    # start-up, `describe` shows it and sandboxes run unbounded; "refuse": Genesis does not start.
    disk_quota: Literal["warn", "refuse"] = "warn"
    # Docker's json-file log of each sandbox: rotated at this size, this many files kept, so
    # a flood on stdout cannot fill the engine's disk outside any quota (docs/isolation.md).
    sandbox_log_max_size: str = "16Mi"
    sandbox_log_max_files: int = Field(default=2, ge=1, le=16)
    max_body_bytes: int = 4 * 2**20
    max_files: int = 1000
    # Controller (SPEC §6): admission limits and retries.
    max_concurrent: int = 2
    per_instance_quota: int | None = None
    cpu_budget: float | None = None  # default: the host's CPUs
    memory_budget: str | None = None  # default: the host's memory
    # Whole GPUs sandboxes may get: ids or UUIDs (["0", "1"]), or "auto" for every GPU the
    # host has (NVML / nvidia-smi; Docker needs the NVIDIA runtime). On Kubernetes the list
    # only counts: the device plugin picks the devices.
    gpus: list[str] | Literal["auto"] = Field(default_factory=list)
    backoff_limit: int = 3
    backoff_base_s: float = 2.0
    phase_deadline_s: float = 1800.0
    pass_interval_s: float = 1.0
    # The controller's lease: renewed every third of it; a leader that cannot
    # renew stops acting when it runs out, and a standby takes over after it.
    lease_ttl_s: float = Field(default=15.0, ge=1.0)
    # Observability (SPEC §9).
    metrics_address: str = "127.0.0.1"  # 0.0.0.0 in a pod
    metrics_port: int = 9464  # 0 switches /metrics off
    sandbox_sample_interval_s: float = 5.0  # per-sandbox cgroup figures; 0 switches sampling off
    max_timeout_ms: int = 24 * 3_600_000
    preserve_ttl_s: int = 7 * 24 * 3600
    max_output_file_bytes: int = 16 * 2**20
    policy: Policy = DEFAULT_POLICY
    verdict: VerdictSettings = Field(default_factory=VerdictSettings)
    build: BuildSettings = Field(default_factory=BuildSettings)
    pools: PoolSettings = Field(default_factory=PoolSettings)
    # Genesis's images (toolchain, environment, snapshot) may use this much disk;
    # the cleanup job removes the least recently used past it. None: no budget.
    image_disk_budget: str | None = None  # checked every 6 h on the wall clock (SPEC §11)
    # Extra labels on every sandbox and snapshot image (e.g. a test run's id,
    # so its leftovers can be found and removed by label).
    extra_labels: dict[str, str] = Field(default_factory=dict)
    # Sandboxes carry this; the controller only ever reaps its own installation's.
    installation: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    nats: NatsSettings = Field(default_factory=NatsSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'genesis.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def build_logs_dir(self) -> Path:
        return self.home / "build-logs"

    def capacity(self) -> Capacity:
        return Capacity(
            max_concurrent=self.max_concurrent, per_instance=self.per_instance_quota,
            cpu=self.cpu_budget or float(os.cpu_count() or 1),
            memory_bytes=parse_memory(self.memory_budget) if self.memory_budget else host_memory_bytes(),
            gpus=tuple(self.gpus) if self.gpus != "auto" else (),  # "auto" is resolved by App first
        )

    def limits(self) -> Limits:
        return Limits(backoff_limit=self.backoff_limit, backoff_base_s=self.backoff_base_s,
                      phase_deadline_s=self.phase_deadline_s)

    def sandbox_selector(self) -> dict[str, str]:
        """The labels every sandbox of this installation carries."""
        from orchestrator.runtimes.base import LABEL_INSTALLATION, MANAGED_BY, MANAGED_BY_VALUE
        return {MANAGED_BY: MANAGED_BY_VALUE, LABEL_INSTALLATION: self.installation}

    def intake_limits(self, capabilities: Capabilities) -> IntakeLimits:
        """What one request may ask for: never more than the controller could ever admit,
        nor anything the runtime (its ``capabilities``) cannot honour."""
        capacity = self.capacity()
        return IntakeLimits(
            max_body_bytes=self.max_body_bytes,
            max_files=self.max_files,
            max_cpu=capacity.cpu,
            max_memory_bytes=capacity.memory_bytes,
            max_gpus=len(capacity.gpus),
            max_timeout_ms=self.max_timeout_ms,
            default_disk=self.default_resources.disk,
            max_disk_bytes=parse_memory(self.max_disk),
            capabilities=capabilities,
        )


def host_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2**30


def _drop_retired(data: dict) -> None:
    for path, why in RETIRED.items():
        *parents, key = path
        section = data
        for parent in parents:
            section = section.get(parent) if isinstance(section, dict) else None
        if isinstance(section, dict) and key in section:
            del section[key]
            log.warning("retired setting ignored", extra={"setting": ".".join(path), "why": why})


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Defaults, then the YAML file, then environment overrides."""
    candidate = path or os.environ.get("GENESIS_CONFIG")
    if candidate is None and Path("genesis.yaml").exists():
        candidate = "genesis.yaml"
    data: dict = {}
    if candidate is not None:
        try:
            data = yaml.safe_load(Path(candidate).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise GenesisError(f"cannot read config {candidate}: {exc}", code="bad_config") from exc
        base = Path(candidate).resolve().parent
        for repo in (data.get("repos") or {}).values():
            if isinstance(repo, dict) and "path" in repo:
                repo["path"] = str((base / repo["path"]).resolve())
        if isinstance(data.get("build"), dict) and data["build"].get("ca_bundle"):
            data["build"]["ca_bundle"] = str((base / data["build"]["ca_bundle"]).resolve())
        if "home" in data:
            data["home"] = str((base / data["home"]).resolve())
        if isinstance(data.get("policy_file"), str):
            data["policy"] = yaml.safe_load((base / data.pop("policy_file")).read_text())
    _drop_retired(data)
    for env, key in (("GENESIS_HOME", "home"), ("GENESIS_DATABASE_URL", "database_url"),
                     ("GENESIS_BASE_IMAGE", "base_image"), ("DOCKER_HOST", "docker_url"),
                     ("GENESIS_RUNTIME", "runtime"), ("GENESIS_INSTALLATION", "installation"),
                     ("GENESIS_IMAGES_DIR", "images_dir")):
        if os.environ.get(env):
            data[key] = os.environ[env]
    nats_env = {"GENESIS_NATS_URL": "url", "GENESIS_NATS_USER": "user", "GENESIS_NATS_PASSWORD": "password",
                "GENESIS_NATS_TOKEN": "token", "GENESIS_NATS_CREDS": "creds_file"}
    for env, key in nats_env.items():  # secrets from a Kubernetes Secret arrive this way
        if os.environ.get(env):
            data.setdefault("nats", {})[key] = os.environ[env]
    try:
        return Settings.model_validate(data)
    except ValueError as exc:
        raise GenesisError(f"invalid configuration: {exc}", code="bad_config") from exc
