"""The Docker runtime: one container per sandbox, through the docker SDK.

Isolation set on every container (SPEC §5): no network (``network_mode=none``)
unless asked and allowed (``sandbox_egress``): then the installation's filtered
egress network (:mod:`orchestrator.runtimes.docker_egress`), made ready at
start-up by :meth:`DockerRuntime.prepare_egress`, or no network is declared at
all. And: the unprivileged sandbox user, all capabilities
dropped, ``no-new-privileges``, memory limit with swap equal to it (no
swap), CPU quota, pids limit, a private IPC namespace, ``init`` to reap
zombies, and a size-capped tmpfs on /tmp. The root filesystem is the
image's, made read-only to the sandbox user by ownership (see
images/toolchain-python/Dockerfile); the container's own copy-on-write layer
holds /workspace, so a change costs what it writes, not the size of the
monorepo. That layer is capped at ``resources.disk`` (plus the image's own
size, which btrfs counts too) with ``--storage-opt size=`` where the storage
driver can (:meth:`DockerRuntime.detect_disk_quota`, at start-up), and the
engine's json-file log of each sandbox is rotated at a fixed size.

With ``sandbox_runtime`` (Docker's ``--runtime``, e.g. gVisor's ``runsc``)
sandboxes run under that runtime, as the engine has it registered; what they
can then be given is read from that registration (:func:`registered_capabilities`).
Image builds stay on the engine's default runtime.

Not here: deciding anything. Every docker / requests exception is
translated into :mod:`orchestrator.errors` at this boundary.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import os
import re
import socket
import tarfile
import threading
import time
from dataclasses import replace
from datetime import datetime
from typing import AsyncIterator

import logging

import docker
import docker.errors
from docker.types.daemon import CancellableStream
import requests.exceptions

from orchestrator.domain import disk
from orchestrator.domain.capabilities import Capabilities
from orchestrator.errors import GenesisError, RequestRejected, RuntimeFailure, SandboxGone
from orchestrator.runtimes.base import (LOG_TAIL_BYTES, LOG_TAIL_LINES, Runtime, SandboxOutput, SandboxSpec, SandboxState,
                                        SandboxUsage)
from orchestrator.runtimes.outputs import read_out_archive
from orchestrator.runtimes.threads import stream_in_thread, translated

log = logging.getLogger(__name__)
LABEL_DISK = "genesis.disk-bytes"  # the quota a sandbox was created with (what it may write)
_TRANSIENT = (requests.exceptions.ConnectionError, docker.errors.DockerException)
MANAGED_BY_PROBE = "genesis.probe"
EXIT_LISTING_TRIES = 400  # x EXIT_LISTING_WAIT_S: how long exits() waits for the listing to show an exit
EXIT_LISTING_WAIT_S = 0.005
ENDED_KEPT = 4096  # final states of exited sandboxes kept for their collection (DockerRuntime._ended)


def _errors(exc: Exception):
    """docker / requests exceptions as Genesis's own (None: not an SDK error)."""
    if isinstance(exc, docker.errors.NotFound):
        return SandboxGone(f"docker: {exc.explanation or exc}")
    if isinstance(exc, docker.errors.APIError):
        return RuntimeFailure(f"docker: {exc.explanation or exc}")
    if isinstance(exc, _TRANSIENT):
        return RuntimeFailure(f"docker engine unreachable: {exc}")
    return None


_translate = translated(_errors)

# runc: Docker's default seccomp profile applies (``docker info``: name=seccomp,profile=default).
# The network is there to give; whether it is given is prepare_egress()'s to find (DockerRuntime.capabilities).
DEFAULT_CAPABILITIES = Capabilities(network=True, gpus="devices", disk_usage=True, seccomp=True, pids="exact",
                                    pools="hot", exit_events=True)
EGRESS_OFF = "sandbox_egress is off: no sandbox is given a network"
_RUNSC_BOOL_FLAGS = frozenset({"oci-seccomp"})


def _runsc_flag(args: list[str], name: str) -> str | None:
    """The value runsc's Go flag parser would read for ``name`` (-x, --x, x=v, x v); None: not given."""
    value = None
    for index, arg in enumerate(args):
        key, sep, given = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or key != name:
            continue
        if sep:
            value = given
        elif name in _RUNSC_BOOL_FLAGS:
            value = "true"
        elif index + 1 < len(args):
            value = args[index + 1]
    return value


def registered_capabilities(name: str, registration: dict) -> Capabilities:
    """What a sandbox under the engine's runtime ``name`` can be given, from its entry in
    ``docker info``'s Runtimes (``path``, ``runtimeArgs``).

    gVisor (``runsc``) answers system calls in its own kernel: it gives no GPUs (this
    build has no device proxy), a network only when not registered with
    ``--network=none``, and applies the OCI seccomp profile Docker sends only with
    ``--oci-seccomp``. Any other runtime is taken to honour what runc does.
    """
    if name != "runsc" and os.path.basename(registration.get("path") or "") != "runsc":
        return replace(DEFAULT_CAPABILITIES, sandbox_runtime=name)
    args = [str(arg) for arg in registration.get("runtimeArgs") or []]
    return replace(DEFAULT_CAPABILITIES, sandbox_runtime=name, kernel="gvisor", gpus="none",
                   network=_runsc_flag(args, "network") != "none",
                   seccomp=(_runsc_flag(args, "oci-seccomp") or "false").lower() in ("true", "1", "t"))


def _parse_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    # Docker gives nanoseconds; datetime takes microseconds.
    trimmed = value.rstrip("Z")
    if "." in trimmed:
        head, frac = trimmed.split(".", 1)
        trimmed = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(trimmed + "+00:00")


def _state_of(attrs: dict) -> SandboxState:
    """A container as the engine's inspect describes it."""
    state = attrs.get("State", {})
    status = {"created": "created", "running": "running", "restarting": "running",
              "paused": "running"}.get(state.get("Status"), "exited")
    return SandboxState(
        name=(attrs.get("Name") or "").lstrip("/"),
        uid=attrs.get("Id"),
        status=status,
        labels=dict(attrs.get("Config", {}).get("Labels") or {}),
        exit_code=state.get("ExitCode") if status == "exited" else None,
        oom_killed=bool(state.get("OOMKilled")),
        reason="oom_killed" if state.get("OOMKilled") else None,
        started_at=_parse_time(state.get("StartedAt")),
        finished_at=_parse_time(state.get("FinishedAt")),
        image=attrs.get("Config", {}).get("Image"),
    )


_EXITED = re.compile(r"^Exited \((-?\d+)\)")


def _state_of_summary(summary: dict) -> SandboxState:
    """A container as the list endpoint describes it (``inspect`` adds OOM and times)."""
    status = {"created": "created", "running": "running", "restarting": "running",
              "paused": "running"}.get(summary.get("State"), "exited")
    exited = _EXITED.match(summary.get("Status") or "")
    return SandboxState(
        name=(summary.get("Names") or ["/?"])[0].lstrip("/"),
        uid=summary.get("Id"),
        status=status,
        labels=dict(summary.get("Labels") or {}),
        exit_code=int(exited.group(1)) if exited and status == "exited" else None,
        image=summary.get("Image"),
    )


def _logs(api: docker.APIClient, container: str, *, stream: bool, follow: bool = False, tail: int | str = "all"):
    """The engine's logs endpoint, demultiplexed. A sandbox never has a TTY; docker-py's
    ``logs()`` would inspect the container to ask, one more round trip per read."""
    response = api._get(api._url("/containers/{0}/logs", container), stream=stream,
                        params={"stdout": 1, "stderr": 1, "follow": int(follow), "tail": tail})
    output = api._get_result_tty(stream, response, False)
    return CancellableStream(output, response) if stream else output


def _log_tail(api: docker.APIClient, container: str) -> str:
    """The log's last LOG_TAIL_LINES lines, at most LOG_TAIL_BYTES of them: read as a stream,
    the oldest chunks let go as newer ones come, so a flood on stdout stays out of memory."""
    kept: collections.deque[bytes] = collections.deque()
    size = 0
    stream = _logs(api, container, stream=True, tail=LOG_TAIL_LINES)
    try:
        for chunk in stream:
            kept.append(chunk)
            size += len(chunk)
            while size - len(kept[0]) >= LOG_TAIL_BYTES:
                size -= len(kept.popleft())
    finally:
        stream.close()
    return b"".join(kept)[-LOG_TAIL_BYTES:].decode("utf-8", "replace")


def bundle_archive(bundle: bytes) -> bytes:
    """A tar holding bundle.json, read-only, owned by root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("bundle.json")
        info.size, info.mode, info.mtime = len(bundle), 0o444, int(time.time())
        tar.addfile(info, io.BytesIO(bundle))
    return buffer.getvalue()


class DockerRuntime(Runtime):
    """:class:`orchestrator.runtimes.base.Runtime` over the Docker Engine API.

    The engine is connected on first use (the SDK asks it its API version), so
    reading what it can do under the default runtime, or a CLI verb that only reads
    the store, needs no engine; another ``sandbox_runtime`` is looked up there once.
    """

    name = "docker"

    def __init__(self, client: docker.DockerClient | None = None, *, base_url: str | None = None,
                 sandbox_runtime: str | None = None, egress_installation: str | None = None,
                 egress_labels: dict[str, str] | None = None) -> None:
        self.disk_support: disk.QuotaSupport | None = None  # found by detect_disk_quota() at start-up
        self._connected = client
        self._base_url = base_url
        self._connecting = threading.Lock()  # methods run on threads: connect once
        self.sandbox_runtime = sandbox_runtime
        self._capabilities = (DEFAULT_CAPABILITIES if sandbox_runtime is None
                              else replace(DEFAULT_CAPABILITIES, sandbox_runtime="runc") if sandbox_runtime == "runc"
                              else None)
        # Egress: None when not allowed (sandbox_egress off); else the installation whose
        # filtered network prepare_egress() readies, and its name once it is ready.
        self.egress_installation = egress_installation
        self._egress_labels = dict(egress_labels or {})
        self.egress_network: str | None = None
        self._network_note = EGRESS_OFF if egress_installation is None else \
            "egress filtering is not set up (start-up did not prepare it)"
        # The final state of sandboxes whose exit the engine's events told (inspected then),
        # until they are removed: an exited container's state never changes, and the step
        # that collects it asks for it next. Oldest first, at most ENDED_KEPT.
        self._ended: dict[str, SandboxState] = {}
        self._ended_lock = threading.Lock()  # written by the events' thread, dropped by removals' threads

    @property
    def capabilities(self) -> Capabilities:
        """What its sandboxes can be given. Under a runtime other than runc, read once from the
        engine's registration of it: the first read connects, and raises GenesisError(bad_config)
        when the engine knows no such runtime. A network only once the filtered egress network
        is ready (:meth:`prepare_egress`), whatever the runtime could otherwise do."""
        registered = self._registered()
        if registered.network and self.egress_network is None:
            return replace(registered, network=False, network_note=self._network_note)
        return registered

    def _registered(self) -> Capabilities:
        if self._capabilities is None:
            self._capabilities = registered_capabilities(self.sandbox_runtime, self._registration())
        return self._capabilities

    def prepare_egress(self) -> str | None:
        """Once, at start-up, where ``sandbox_egress`` allows a network: the filtered egress
        network and its host rules (idempotent). Returns why sandboxes get no network (None:
        they can have one); it never raises for a host that cannot filter, it declines."""
        if self.egress_installation is None or not self._registered().network:
            return self.capabilities.network_note or None
        if self.egress_network is None:
            from orchestrator.runtimes import docker_egress
            try:
                self.egress_network = docker_egress.prepare(
                    lambda: self._client, base_url=self._base_url, installation=self.egress_installation,
                    labels=self._egress_labels)
            except docker_egress.EgressUnavailable as exc:
                self._network_note = f"egress filtering unavailable: {exc}"
            except Exception as exc:
                mapped = _errors(exc)
                if mapped is None:
                    raise
                self._network_note = f"egress filtering unavailable: {mapped}"
        return None if self.egress_network else self._network_note

    def _registration(self) -> dict:
        """The engine's entry for ``sandbox_runtime`` in ``docker info``'s Runtimes."""
        try:
            runtimes = self._client.info().get("Runtimes") or {}
        except Exception as exc:
            mapped = _errors(exc)
            if mapped is None:
                raise
            raise mapped from exc
        if self.sandbox_runtime not in runtimes:
            raise GenesisError(
                f"sandbox_runtime: the Docker engine knows no runtime {self.sandbox_runtime!r} (it knows "
                f"{', '.join(sorted(runtimes)) or 'none'}); register it in /etc/docker/daemon.json, e.g. "
                '{"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--platform=ptrace", '
                '"--network=none"]}}}, and send the daemon SIGHUP (scripts/setup.sh does both)',
                code="bad_config")
        return runtimes[self.sandbox_runtime]

    @property
    def _client(self) -> docker.DockerClient:
        with self._connecting:
            if self._connected is None:
                client = (docker.DockerClient(base_url=self._base_url, timeout=120) if self._base_url
                          else docker.from_env(timeout=120))
                if client.api.base_url.startswith("http+docker://"):
                    # A local socket: no proxy or .netrc from the environment applies to it,
                    # and requests would look them up again on every call.
                    client.api.trust_env = False
                self._connected = client
            return self._connected

    def close(self) -> None:
        if self._connected is not None:
            self._connected.close()

    @property
    def client(self) -> docker.DockerClient:
        """The SDK client, for the image builder in this package only."""
        return self._client

    @_translate
    def ping(self) -> str:
        return self._client.version()["Version"]

    def info(self) -> dict:
        """``docker info`` (runtimes, CDI devices), for GPU detection at start-up."""
        return self._client.info()

    def detect_disk_quota(self) -> disk.QuotaSupport:
        """Whether this engine's storage driver takes ``--storage-opt size`` (once; start-up).
        overlay2 on xfs needs the pquota mount option too, which only a try can show."""
        if self.disk_support is None:
            try:
                info = self._client.info()
            except Exception as exc:
                mapped = _errors(exc)
                if mapped is None:
                    raise
                raise mapped from exc
            support = disk.quota_support(info.get("Driver") or "", info.get("DriverStatus"))
            if support.enforced and support.storage.startswith("overlay"):
                support = self._probe_storage_opt(support)
            self.disk_support = support
            self._capabilities = replace(self._registered(), disk_quota=support.enforced,
                                         disk_storage=support.storage)
        return self.disk_support

    def _probe_storage_opt(self, support: disk.QuotaSupport) -> disk.QuotaSupport:
        images = self._client.images.list()
        if not images:
            return disk.QuotaSupport(False, support.storage + " (no image to probe pquota with)")
        try:
            probe = self._client.containers.create(images[0].id, ["true"], storage_opt={"size": "1G"},
                                                   labels={MANAGED_BY_PROBE: "disk-quota"})
        except docker.errors.APIError as exc:
            return disk.QuotaSupport(False, f"{support.storage} without pquota: {exc.explanation or exc}"[:200])
        probe.remove(force=True)
        return support

    def _storage_opt(self, spec: SandboxSpec) -> dict[str, str] | None:
        if spec.disk_bytes is None or not self.capabilities.disk_quota:
            return None
        image_bytes = int(self._client.images.get(spec.image).attrs.get("Size") or 0)
        return {"size": str(disk.storage_size(spec.disk_bytes, image_bytes))}

    @_translate
    def create(self, spec: SandboxSpec) -> str:
        if spec.network and self.egress_network is None:  # a request accepted under other settings
            raise RequestRejected(f"network: true ({self._network_note})", code="unsupported_by_runtime")
        storage_opt = self._storage_opt(spec)
        labels = {**spec.labels, LABEL_DISK: str(spec.disk_bytes)} if storage_opt else spec.labels
        log_config = None
        if spec.log_max_bytes:
            log_config = docker.types.LogConfig(type="json-file", config={
                "max-size": str(spec.log_max_bytes), "max-file": str(spec.log_max_files)})
        device_requests = []
        if spec.gpus:
            device_requests = [docker.types.DeviceRequest(device_ids=list(spec.gpus), capabilities=[["gpu"]])]
        api = self._client.api
        host_config = api.create_host_config(
            network_mode=self.egress_network if spec.network else "none",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            mem_limit=spec.memory_bytes,
            memswap_limit=spec.memory_bytes,
            nano_cpus=int(spec.cpu * 1e9),
            pids_limit=spec.pids,
            ipc_mode="private",
            init=False,  # the runner is the sandbox's init: not traceable, not killable from inside
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={spec.tmp_bytes}"},
            device_requests=device_requests,
            storage_opt=storage_opt,
            log_config=log_config,
            runtime=self.sandbox_runtime,  # None: the engine's default
        )
        # Through the engine's API directly: the SDK's model would inspect what it just made.
        created = api.create_container(
            spec.image,
            name=spec.name,
            labels=labels,
            user="1000:1000",
            # ... so it takes no SIGTERM: a daemon shutting down (or `docker stop`) kills at once
            # rather than wait out a grace period the run would spend finishing unobserved.
            stop_signal="SIGKILL",
            host_config=host_config,
            # Pooled: the bundle comes later on stdin, closed after the one client that writes it
            # (the SDK sets StdinOnce only for a non-detached config; create never attaches).
            detach=not spec.bundle_stdin,
            stdin_open=spec.bundle_stdin,
            environment={"GENESIS_BUNDLE_STDIN": "1"} if spec.bundle_stdin else None,
        )
        uid = created["Id"]
        if spec.bundle_stdin:
            return uid
        try:
            if not api.put_archive(uid, "/genesis/in", bundle_archive(spec.bundle)):
                raise RuntimeFailure(f"could not deliver the bundle to {spec.name}")
        except Exception:
            api.remove_container(uid, force=True)
            raise
        return uid

    @_translate
    def deliver(self, name: str, bundle: bytes, *, uid: str | None = None, start: bool = False,
                timeout_s: float | None = None) -> None:
        """Write the bundle to the waiting runner's stdin through the engine's attach
        stream and close it (``start``: start the sandbox first). The engine closes the
        sandbox's stdin after this one client: nobody can write to it again. ``timeout_s``:
        Docker keeps no runtime-side deadline (the controller's kills at it)."""
        if start:
            self._client.api.start(uid or name)
        sock = self._client.api.attach_socket(uid or name, params={"stdin": 1, "stream": 1})
        raw = getattr(sock, "_sock", sock)
        try:
            raw.sendall(bundle)
            raw.shutdown(socket.SHUT_WR)  # end of stdin: the engine closes the sandbox's
        finally:
            raw.close()
            sock.close()

    # Calls go to the engine's API by name or id: the SDK's container objects would inspect
    # the container first, one more round trip each (about ten per experiment).

    @_translate
    def start(self, name: str) -> None:
        self._client.api.start(name)

    @_translate
    def wait(self, name: str, *, timeout_s: float) -> SandboxState | None:
        try:
            self._client.api.wait(name, timeout=max(timeout_s, 0.01))
        except requests.exceptions.ConnectionError as exc:
            # docker-py reports a wait that outlived its HTTP timeout this way.
            if "timed out" not in str(exc).lower():
                raise
            return None
        return _state_of(self._client.api.inspect_container(name))

    @_translate
    def kill(self, name: str, *, uid: str | None = None) -> None:
        try:
            self._client.api.kill(uid or name)
        except docker.errors.APIError as exc:
            if "is not running" not in str(exc) or isinstance(exc, docker.errors.NotFound):
                raise

    @_translate
    def inspect(self, name: str) -> SandboxState:
        ended = self._ended.get(name)
        if ended is not None:
            return ended
        try:
            return _state_of(self._client.api.inspect_container(name))
        except docker.errors.NotFound:
            return SandboxState(name=name, status="missing")

    def _remember_ended(self, attrs: dict) -> bool:
        """Keep an exited container's final state; whether it had exited."""
        state = _state_of(attrs)
        if state.status == "exited":
            with self._ended_lock:
                self._ended[state.name] = state
                while len(self._ended) > ENDED_KEPT:
                    self._ended.pop(next(iter(self._ended)))
            return True
        return False

    @_translate
    def collect(self, name: str, *, max_file_bytes: int) -> SandboxOutput:
        api = self._client.api
        quota = None
        if self.capabilities.disk_quota:  # only an engine that can enforce a quota created one with it
            quota = (api.inspect_container(name).get("Config", {}).get("Labels") or {}).get(LABEL_DISK)
        tail = _log_tail(api, name)
        try:
            stream, _ = api.get_archive(name, "/genesis/out")
        except docker.errors.APIError as exc:
            if isinstance(exc, docker.errors.NotFound) or not disk.refused_full(
                    str(exc.explanation or exc), quota_bytes=int(quota) if quota else None):
                raise
            # btrfs re-applies the quota when it mounts the layer, and a full one refuses:
            # nothing can be read from it, and the layer is at its quota.
            return SandboxOutput(files={}, log_tail=tail, disk_used_bytes=int(quota), disk_quota_bytes=int(quota))
        files, truncated = read_out_archive(stream, max_file_bytes=max_file_bytes)
        used = None
        if quota:  # the engine's measure of the writable layer (a walk of it: only where capped)
            listed = api.containers(all=True, size=True, filters={"name": f"^/{name}$"})
            used = int(listed[0].get("SizeRw") or 0) if listed else None
        return SandboxOutput(files=files, log_tail=tail,
                             truncated=tuple(truncated), disk_used_bytes=used,
                             disk_quota_bytes=int(quota) if quota else None)

    async def logs(self, name: str, *, follow: bool = False, tail: int | None = None) -> AsyncIterator[str]:
        def produce():
            return _logs(self._client.api, name, stream=True, follow=follow,
                         tail=tail if tail is not None else "all")

        async for chunk in stream_in_thread(produce, _errors, what="docker logs"):
            yield chunk

    async def exits(self, labels: dict[str, str]) -> AsyncIterator[str]:
        """The engine's ``die`` events of containers carrying ``labels``, by name, each once the
        listing (:meth:`list`) shows the container stopped. The stream is read on a daemon
        thread of its own (it never ends by itself) and closed when the caller stops iterating."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        filters = {"type": "container", "event": "die", "label": [f"{k}={v}" for k, v in labels.items()]}
        try:
            stream = await asyncio.to_thread(self._client.api.events, decode=True, filters=filters)
        except Exception as exc:
            raise (_errors(exc) or RuntimeFailure(f"docker events: {exc}")) from exc

        def put(item) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def listed_exited(name: str) -> None:
            """The engine tells of a death before its listing (what the controller reads)
            shows it: tens of ms later under load, while it cleans up after the exit. An
            inspect waits for that (the engine holds the container meanwhile), so the
            listing agrees once it returns one that exited; otherwise the listing is
            waited for, briefly. (Were it still behind, the next periodic pass would see
            the exit: a later collection, not a lost one.)"""
            with contextlib.suppress(docker.errors.APIError):  # removed meanwhile: the listing says so
                if self._remember_ended(self._client.api.inspect_container(name)):
                    return
            for _ in range(EXIT_LISTING_TRIES):
                listed = self._client.api.containers(all=True, filters={"name": f"^/{name}$"})
                if not listed or listed[0].get("State") not in ("running", "restarting"):
                    return
                time.sleep(EXIT_LISTING_WAIT_S)

        def pump() -> None:
            try:
                for event in stream:
                    name = ((event.get("Actor") or {}).get("Attributes") or {}).get("name") or ""
                    if name:
                        listed_exited(name)
                    put(name)
            except Exception as exc:  # noqa: BLE001 - closed by the caller, or the engine went away
                put(_errors(exc) or RuntimeFailure(f"docker events: {exc}"))
            else:
                put(RuntimeFailure("docker events: the stream ended"))

        threading.Thread(target=pump, name="genesis:docker-events", daemon=True).start()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            with contextlib.suppress(Exception):
                stream.close()

    @_translate
    def remove(self, name: str, *, uid: str | None = None) -> bool:
        with self._ended_lock:
            self._ended.pop(name, None)
        try:
            self._client.api.remove_container(uid or name, force=True, v=True)
        except docker.errors.NotFound:
            return False
        return True

    @_translate
    def list(self, labels: dict[str, str]) -> list[SandboxState]:
        """One listing call, no per-container inspect: a sandbox removed
        meanwhile cannot fail the whole listing."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        return [_state_of_summary(c) for c in self._client.api.containers(all=True, filters=filters)]

    @_translate
    def disk_usage(self) -> int:
        """Bytes in the writable layers of Genesis's sandboxes."""
        listed = self._client.api.containers(all=True, size=True, filters={"label": "genesis.managed-by=genesis"})
        return sum(int(c.get("SizeRw") or 0) for c in listed)

    @_translate
    def usage(self, name: str) -> SandboxUsage | None:
        try:
            raw = self._client.api.stats(name, stream=False, one_shot=True)
        except (docker.errors.NotFound, ValueError):
            # ValueError: the engine sends an empty body for a sandbox that
            # stopped during the call; either way it is no longer running.
            return None
        return usage_of(raw)


def usage_of(raw: dict) -> SandboxUsage | None:
    """Docker's stats document (cgroup v1 or v2) as a :class:`SandboxUsage`."""
    memory = raw.get("memory_stats") or {}
    if not memory.get("usage"):
        return None  # not running
    stats = memory.get("stats") or {}
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    return SandboxUsage(
        cpu_seconds=((raw.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage", 0) / 1e9,
        memory_working_set_bytes=max(int(memory["usage"]) - int(inactive), 0),
        memory_limit_bytes=int(memory.get("limit") or 0),
        pids=int((raw.get("pids_stats") or {}).get("current") or 0),
    )
