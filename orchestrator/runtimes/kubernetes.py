"""The Kubernetes runtime: one Pod per sandbox, through the official client.

The Pod itself is made in :mod:`orchestrator.runtimes.kubernetes_pods`
(pure); this module only talks to the API server, with exactly these calls
(the orchestrator's Role grants them and nothing else):

    pods             create, get, list, watch, patch, delete
    pods/log         get
    events           list      (why a pod failed or waits: FailedScheduling, ...)
    networkpolicies  create, delete   (networking.k8s.io; a pod's own egress, with sandbox_egress)

Lifecycle on the API: ``create`` POSTs the Pod behind a scheduling gate;
``start`` removes the gate with a patch carrying the resourceVersion it read
(a stale write gets 409 and is retried on a fresh read); ``kill`` lowers
``activeDeadlineSeconds`` to 1 so the kubelet stops the container and the
Pod, its status and its log stay readable for ``collect``; ``remove``
deletes it. ``list`` and ``wait`` read a watch-fed cache
(:class:`PodInformer`) that resumes from the last resourceVersion and
relists on 410 Gone, so a controller pass costs no API call.

Every ``ApiException`` and connection error is translated here into
:mod:`orchestrator.errors`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from typing import AsyncIterator, Callable

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from tenacity import (Retrying, retry_if_exception, retry_if_exception_type, retry_if_result, stop_after_attempt,
                      wait_exponential)

from orchestrator.domain.capabilities import Capabilities
from orchestrator.errors import RequestRejected, RuntimeFailure, SandboxGone
from orchestrator.runtimes.base import (LOG_TAIL_BYTES, LOG_TAIL_LINES, Runtime, SandboxOutput, SandboxSpec, SandboxState,
                                        SandboxUsage)
from orchestrator.runtimes.kubernetes_pods import (BUNDLE_ANNOTATION, BUNDLE_DIGEST_ANNOTATION, BundleTooLarge,
                                                   PodOptions, egress_policy, encode_bundle, label_selector,
                                                   pod_manifest, state_of)
from orchestrator.runtimes.outputs import files_from_log, split_log
from orchestrator.runtimes.threads import stream_in_thread, translated

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 5  # attempts in all when a write is stale (409); each one re-reads first
CONFLICT = 409
GONE = 410
# A failing watch is retried from 0.5 s doubling to 30 s: quick after a blip, gentle on a struggling API server.
WATCH_BACKOFF_MIN_S = 0.5
WATCH_BACKOFF_MAX_S = 30.0


def _errors(exc: Exception) -> RuntimeFailure | None:
    """Client exceptions as Genesis's own (None: not a client error)."""
    if isinstance(exc, ApiException):
        return _failure(exc)
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        return RuntimeFailure(f"kubernetes API unreachable: {exc}")
    return None


_translate = translated(_errors)


def _failure(exc: ApiException) -> RuntimeFailure:
    message = _status_message(exc)
    if exc.status == 404:
        return SandboxGone(f"kubernetes: {message}")
    return RuntimeFailure(f"kubernetes: {exc.status} {message}")


def _status_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body or "{}").get("message") or exc.reason or ""
    except (ValueError, AttributeError):
        return str(exc.reason or exc.body or "")


def _json(response) -> dict:
    return json.loads(response.data or b"{}")


def api_client(*, kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """In-cluster config inside a pod, else the kubeconfig (``kubeconfig`` or ~/.kube/config)."""
    try:
        if kubeconfig is None:
            k8s_config.load_incluster_config()
            return k8s.ApiClient()
    except k8s_config.ConfigException:
        pass
    configuration = k8s.Configuration()
    try:
        k8s_config.load_kube_config(config_file=kubeconfig, context=context,
                                    client_configuration=configuration)
    except (k8s_config.ConfigException, OSError) as exc:
        raise RuntimeFailure(f"no Kubernetes configuration: {exc}", code="bad_config") from exc
    return k8s.ApiClient(configuration)


class PodInformer:
    """A cache of this installation's pods, kept by LIST then WATCH.

    The watch resumes from the last resourceVersion it saw when a stream
    ends (server timeout, dropped connection) and relists when the server
    answers 410 Gone (that version was compacted away). Own writes go into
    the cache at once (``put``/``drop``), so a pod just created is listed
    before its watch event arrives.
    """

    def __init__(self, core: k8s.CoreV1Api, namespace: str, selector: dict[str, str], *,
                 watch_timeout_s: int, request_timeout_s: float) -> None:
        self._core = core
        self._namespace = namespace
        self._selector = label_selector(selector)
        self.selector = dict(selector)
        self._watch_timeout_s = watch_timeout_s
        self._request_timeout_s = request_timeout_s
        self._pods: dict[str, dict] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.resource_version: str | None = None
        self.synced = False
        self.healthy = False
        self.relists = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="genesis-pod-informer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def wait_synced(self, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.synced and self.healthy, timeout=timeout_s)

    def pods(self) -> list[dict]:
        with self._changed:
            return list(self._pods.values())

    def get(self, name: str) -> dict | None:
        with self._changed:
            return self._pods.get(name)

    def put(self, pod: dict) -> None:
        with self._changed:
            self._store(pod)

    def drop(self, name: str) -> None:
        with self._changed:
            self._pods.pop(name, None)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout=timeout_s)

    def _store(self, pod: dict) -> None:
        """Keep the newer of two versions of a pod (own writes race the watch)."""
        name = pod["metadata"]["name"]
        old = self._pods.get(name)
        if old is None or _newer_or_equal(pod, old):
            self._pods[name] = pod
        self._changed.notify_all()

    def _relist(self) -> None:
        listed = _json(self._core.list_namespaced_pod(
            self._namespace, label_selector=self._selector, _preload_content=False,
            _request_timeout=self._request_timeout_s))
        with self._changed:
            self._pods = {p["metadata"]["name"]: p for p in listed.get("items") or []}
            self.resource_version = (listed.get("metadata") or {}).get("resourceVersion")
            self.synced = self.healthy = True
            self._changed.notify_all()
        self.relists += 1

    def _watch_once(self) -> None:
        watcher = k8s_watch.Watch()
        stream = watcher.stream(
            self._core.list_namespaced_pod, self._namespace, label_selector=self._selector,
            resource_version=self.resource_version, allow_watch_bookmarks=True,
            timeout_seconds=self._watch_timeout_s,
            # The client side gives up a little after the server should have.
            _request_timeout=(self._request_timeout_s, self._watch_timeout_s + 10))
        try:
            for event in stream:
                if self._stop.is_set():
                    return
                pod = event["raw_object"]
                version = (pod.get("metadata") or {}).get("resourceVersion")
                with self._changed:
                    if event["type"] == "DELETED":
                        self._pods.pop(pod["metadata"]["name"], None)
                        self._changed.notify_all()
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self._store(pod)
                    if version:
                        self.resource_version = version
                    self.healthy = True
        finally:
            watcher.stop()

    def _run(self) -> None:
        """Sync until stopped. A failure marks the cache unhealthy and is retried with backoff
        (tenacity, the wait cut short by ``stop``), and so is a watch that ends with the cache still
        unhealthy (no event since the failure); one that ends healthy starts the backoff afresh."""
        retrying = Retrying(retry=retry_if_exception_type() | retry_if_result(lambda healthy: not healthy),
                            wait=wait_exponential(multiplier=WATCH_BACKOFF_MIN_S, max=WATCH_BACKOFF_MAX_S),
                            sleep=self._stop.wait)
        while not self._stop.is_set():
            retrying(self._sync)

    def _sync(self) -> bool:
        """Relist when needed, then watch until a stream ends: True when the cache ended healthy (or stopping).

        410 Gone relists and a quiet stream's read timeout resumes, both at once and within one
        attempt, so neither waits nor resets the backoff; any other failure is raised to be retried."""
        while not self._stop.is_set():
            try:
                if not self.synced or self.resource_version is None:
                    self._relist()
                self._watch_once()
                return self.healthy
            except ApiException as exc:
                if exc.status != GONE:
                    self._unhealthy(exc)
                    raise
                log.info("pod watch expired (410 Gone); relisting", extra={"namespace": self._namespace})
                self.synced = False
            except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
                continue  # a quiet stream ran out: resume from the same resourceVersion
            except Exception as exc:  # the informer must outlive any single failure
                self._unhealthy(exc)
                raise
        return True

    def _unhealthy(self, exc: Exception) -> None:
        log.warning("pod watch failed; retrying", extra={"namespace": self._namespace, "error": str(exc)[:300]})
        with self._changed:
            self.healthy = False
            self._changed.notify_all()


def _conflict(exc: BaseException) -> bool:
    """A 409: the write carried a resourceVersion someone else has since replaced."""
    return isinstance(exc, ApiException) and exc.status == CONFLICT


def _newer_or_equal(new: dict, old: dict) -> bool:
    """resourceVersions are opaque, but the API server's are integers; compare when both are."""
    a = (new.get("metadata") or {}).get("resourceVersion") or ""
    b = (old.get("metadata") or {}).get("resourceVersion") or ""
    if a.isdigit() and b.isdigit():
        return int(a) >= int(b)
    return True


def _terminal(pod: dict | None) -> bool:
    return pod is not None and state_of(pod).status == "exited"


class KubernetesRuntime(Runtime):
    """:class:`orchestrator.runtimes.base.Runtime` over the Kubernetes API.

    What it cannot honour it declares: a network only with ``egress`` (else the
    sandbox namespace's default-deny NetworkPolicy holds), GPUs only as a count
    the device plugin fills, pids only as the node's limit (``pod_pids_limit``,
    when stated), no disk measurement; pods pull snapshots from ``options.image_prefix``.
    """

    name = "kubernetes"

    def __init__(self, api: k8s.ApiClient, options: PodOptions, *, selector: dict[str, str],
                 watch_timeout_s: int = 300, request_timeout_s: float = 30.0, egress: bool = False,
                 pod_pids_limit: int | None = None) -> None:
        self.egress = egress
        self.capabilities = Capabilities(
            gpus="count", events=True, image_registry=options.image_prefix, disk_quota=True,
            disk_storage="ephemeral-storage limits", network=egress,
            network_note="" if egress else "sandbox_egress is off: the namespace's default-deny policy holds",
            pids="node" if pod_pids_limit else "none", max_pids=pod_pids_limit,
            pools="warm")  # gated pods: the bundle goes in with the gate lifted (no stdin to a pod)
        self._api = api
        self._core = k8s.CoreV1Api(api)
        self._networking = k8s.NetworkingV1Api(api)
        self.options = options
        self.namespace = options.namespace
        self._timeout = request_timeout_s
        self.informer = PodInformer(self._core, options.namespace, selector,
                                    watch_timeout_s=watch_timeout_s, request_timeout_s=request_timeout_s)

    def close(self) -> None:
        self.informer.stop()
        self._api.close()

    # -- reading --------------------------------------------------------------

    def _read(self, name: str) -> dict | None:
        try:
            pod = _json(self._core.read_namespaced_pod(name, self.namespace, _preload_content=False,
                                                       _request_timeout=self._timeout))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        self.informer.put(pod)
        return pod

    def _cache(self) -> PodInformer:
        self.informer.start()
        if not self.informer.wait_synced(self._timeout):
            raise RuntimeFailure(f"kubernetes: cannot list pods in {self.namespace} (watch not synced)")
        return self.informer

    @_translate
    def ping(self) -> str:
        return k8s.VersionApi(self._api).get_code(_request_timeout=self._timeout).git_version

    @_translate
    def inspect(self, name: str) -> SandboxState:
        pod = self._read(name)
        return state_of(pod) if pod is not None else SandboxState(name=name, status="missing")

    @_translate
    def list(self, labels: dict[str, str]) -> list[SandboxState]:
        if not set(self.informer.selector.items()) <= set(labels.items()):
            listed = _json(self._core.list_namespaced_pod(self.namespace, label_selector=label_selector(labels),
                                                          _preload_content=False, _request_timeout=self._timeout))
            return [state_of(p) for p in listed.get("items") or []]
        wanted = set(labels.items())
        return [state_of(p) for p in self._cache().pods()
                if wanted <= set(((p.get("metadata") or {}).get("labels") or {}).items())]

    @_translate
    def wait(self, name: str, *, timeout_s: float) -> SandboxState | None:
        informer = self._cache()
        if informer.get(name) is None and self._read(name) is None:
            raise SandboxGone(f"kubernetes: no sandbox {name}")
        informer.wait_for(lambda: informer.get(name) is None or _terminal(informer.get(name)), timeout_s)
        pod = informer.get(name)
        if pod is None:
            raise SandboxGone(f"kubernetes: sandbox {name} was deleted while waited on")
        return state_of(pod) if _terminal(pod) else None

    @_translate
    def events(self, name: str) -> list[str]:
        """The API server's events about one pod, oldest first ("Reason: message")."""
        listed = _json(self._core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}", _preload_content=False,
            _request_timeout=self._timeout))
        items = sorted(listed.get("items") or [], key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return [f"{e.get('reason', '')}: {e.get('message', '')}" for e in items]

    # -- writing --------------------------------------------------------------

    @_translate
    def create(self, spec: SandboxSpec) -> str:
        if spec.network and not self.egress:  # a request accepted under other settings
            raise RequestRejected("network: true (sandbox_egress is off)", code="unsupported_by_runtime")
        try:
            body = pod_manifest(spec, self.options)
        except BundleTooLarge as exc:
            raise RequestRejected(str(exc), code="bundle_too_large") from exc
        try:
            created = _json(self._core.create_namespaced_pod(self.namespace, body, _preload_content=False,
                                                             _request_timeout=self._timeout))
        except ApiException as exc:
            if exc.status != 409:
                raise
            # AlreadyExists: a retried create of the same sandbox is done; anything else is not ours.
            existing = self._read(spec.name)
            digest = BUNDLE_DIGEST_ANNOTATION
            if existing is None or (existing["metadata"].get("annotations") or {}).get(digest) != \
                    body["metadata"]["annotations"][digest]:
                raise RuntimeFailure(f"kubernetes: a different pod named {spec.name} already exists") from exc
            created = existing
        else:
            self.informer.put(created)
        if spec.network:
            self._give_egress(created)
        return created["metadata"].get("uid", "")

    def _give_egress(self, pod: dict) -> None:
        """The pod's own NetworkPolicy, made while the pod is still gated (before it runs: until the
        policy is in place, default-deny holds). One left by an earlier pod of the same name (its
        owner not yet collected) is replaced."""
        body = egress_policy(pod, self.options)
        try:
            self._networking.create_namespaced_network_policy(self.namespace, body, _preload_content=False,
                                                              _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status != CONFLICT:
                raise
            self._delete_policy(pod["metadata"]["name"])
            self._networking.create_namespaced_network_policy(self.namespace, body, _preload_content=False,
                                                              _request_timeout=self._timeout)

    def _delete_policy(self, name: str) -> None:
        try:
            self._networking.delete_namespaced_network_policy(name, self.namespace, _preload_content=False,
                                                              _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status != 404:
                raise

    @_translate
    def start(self, name: str) -> None:
        """Remove the scheduling gate; a 409 (someone wrote in between) is retried on a fresh read."""
        retrying = Retrying(retry=retry_if_exception(_conflict), stop=stop_after_attempt(CONFLICT_RETRIES),
                            before_sleep=lambda _: log.info("stale write on start; re-reading",
                                                            extra={"sandbox": name}),
                            reraise=True)
        retrying(self._ungate, name)

    @_translate
    def deliver(self, name: str, bundle: bytes, *, uid: str | None = None, start: bool = False,
                timeout_s: float | None = None) -> None:
        """A pooled pod's bundle (annotations the downward API mounts) written with its gate
        lifted, in one update: the pod never runs without it. Pods are only pooled gated
        (warm), so ``start`` is implied."""
        try:
            encoded = encode_bundle(bundle)
        except BundleTooLarge as exc:
            raise RequestRejected(str(exc), code="bundle_too_large") from exc
        annotations = {BUNDLE_ANNOTATION: encoded, BUNDLE_DIGEST_ANNOTATION: hashlib.sha256(bundle).hexdigest()}
        deadline = None if timeout_s is None else \
            max(1, math.ceil(timeout_s)) + self.options.deadline_slack_s  # as pod_manifest sets it
        retrying = Retrying(retry=retry_if_exception(_conflict), stop=stop_after_attempt(CONFLICT_RETRIES),
                            reraise=True)
        retrying(self._ungate, name, annotations=annotations, deadline_s=deadline)

    def _ungate(self, name: str, *, annotations: dict[str, str] | None = None, deadline_s: int | None = None) -> None:
        pod = self._read(name)
        if pod is None:
            raise SandboxGone(f"kubernetes: no sandbox {name}")
        if not (pod.get("spec") or {}).get("schedulingGates"):
            if annotations:  # started without its bundle: it cannot get one now
                raise RuntimeFailure(f"kubernetes: pooled sandbox {name} is no longer gated")
            return
        metadata = {"resourceVersion": pod["metadata"].get("resourceVersion")}
        if annotations:
            metadata["annotations"] = annotations
        patch = {"metadata": metadata, "spec": {"schedulingGates": None}}
        if deadline_s is not None:
            patch["spec"]["activeDeadlineSeconds"] = deadline_s
        self.informer.put(_json(self._core.patch_namespaced_pod(
            name, self.namespace, patch, _preload_content=False, _request_timeout=self._timeout)))

    @_translate
    def kill(self, name: str, *, uid: str | None = None) -> None:
        """Stop the container but keep the pod: lower activeDeadlineSeconds to 1.

        A pod no kubelet has started (still gated, or unschedulable: no
        ``startTime``, so no deadline can run) has nothing to stop and no
        output; it is deleted instead. With ``uid``, a pod of that name but
        another UID is not ours (SandboxGone); the patch names the UID, which
        the API server checks (409), so a pod replaced in between is not touched.
        """
        pod = self._read(name)
        if pod is None or (uid and pod["metadata"].get("uid") != uid):
            raise SandboxGone(f"kubernetes: no sandbox {name}" + (f" with uid {uid}" if uid else ""))
        if _terminal(pod):
            return
        if (pod.get("spec") or {}).get("schedulingGates") or not (pod.get("status") or {}).get("startTime"):
            self._delete(name, pod["metadata"].get("uid"))
            return
        patch = {"metadata": {"uid": pod["metadata"].get("uid")}, "spec": {"activeDeadlineSeconds": 1}}
        self.informer.put(_json(self._core.patch_namespaced_pod(
            name, self.namespace, patch, _preload_content=False, _request_timeout=self._timeout)))

    def _delete(self, name: str, uid: str | None) -> bool:
        """Delete, with a UID precondition when ``uid`` is known: 409 means another pod now has the name.
        Its NetworkPolicy goes too, where pods may have one (the garbage collector would delete it
        through its owner reference; this does not wait for that)."""
        options = k8s.V1DeleteOptions(grace_period_seconds=0, propagation_policy="Background",
                                      preconditions=k8s.V1Preconditions(uid=uid) if uid else None)
        try:
            self._core.delete_namespaced_pod(name, self.namespace, body=options, _preload_content=False,
                                             _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 404 or (exc.status == 409 and uid):
                if exc.status == 404:
                    self.informer.drop(name)
                return False
            raise
        self.informer.drop(name)
        if self.egress:
            self._delete_policy(name)
        return True

    @_translate
    def remove(self, name: str, *, uid: str | None = None) -> bool:
        return self._delete(name, uid)

    # -- output ---------------------------------------------------------------

    def _log_text(self, name: str, *, tail: int | None = None) -> str:
        response = self._core.read_namespaced_pod_log(
            name, self.namespace, container="sandbox", tail_lines=tail, _preload_content=False,
            _request_timeout=self._timeout)
        return response.data.decode("utf-8", "replace")

    @_translate
    def collect(self, name: str, *, max_file_bytes: int) -> SandboxOutput:
        text = self._log_text(name)
        files, truncated, rest = files_from_log(text, max_file_bytes=max_file_bytes)
        tail = "".join(rest.splitlines(keepends=True)[-LOG_TAIL_LINES:])[-LOG_TAIL_BYTES:]
        return SandboxOutput(files=files, log_tail=tail, truncated=tuple(truncated))

    @_translate
    def _log_lines(self, name: str) -> list[str]:
        return split_log(self._log_text(name))[0].splitlines(keepends=True)

    async def logs(self, name: str, *, follow: bool = False, tail: int | None = None) -> AsyncIterator[str]:
        """Log text without the runner's GENESIS-OUT block; ``follow`` streams until the pod ends."""
        if not follow:
            lines = await self._log_lines(name)
            yield "".join(lines[-tail:] if tail else lines)
            return

        def produce():
            return self._core.read_namespaced_pod_log(
                name, self.namespace, container="sandbox", follow=True, tail_lines=tail,
                _preload_content=False).stream(amt=None)

        async for chunk in stream_in_thread(produce, _errors, what="kubernetes logs"):
            kept, _ = split_log(chunk)
            if kept:
                yield kept

    async def usage(self, name: str) -> SandboxUsage | None:
        """Not sampled on Kubernetes: the kubelet's cAdvisor metrics cover it (no metrics.k8s.io RBAC)."""
        return None


def from_settings(settings) -> KubernetesRuntime:
    """The runtime for ``settings.kubernetes`` (see ``KubernetesSettings``)."""
    kube = settings.kubernetes
    options = PodOptions(
        namespace=kube.namespace, image_prefix=kube.registry,
        image_pull_policy=kube.image_pull_policy or ("IfNotPresent" if kube.registry else "Never"),
        image_pull_secrets=tuple(kube.image_pull_secrets), runtime_class=kube.runtime_class,
        node_selector=dict(kube.node_selector), gpu_node_selector=dict(kube.gpu_node_selector),
        tolerations=tuple(kube.tolerations), gpu_tolerations=tuple(kube.gpu_tolerations),
        gpu_resource=kube.gpu_resource, workspace_size=kube.workspace_size, deadline_slack_s=kube.deadline_slack_s,
        egress_except=tuple(kube.egress_except), dns_namespace=kube.dns_namespace,
        dns_pod_labels=dict(kube.dns_pod_labels),
    )
    api = api_client(kubeconfig=str(kube.kubeconfig) if kube.kubeconfig else None, context=kube.context)
    return KubernetesRuntime(api, options, selector=settings.sandbox_selector(),
                             watch_timeout_s=kube.watch_timeout_s, request_timeout_s=kube.request_timeout_s,
                             egress=settings.sandbox_egress, pod_pids_limit=kube.pod_pids_limit)
