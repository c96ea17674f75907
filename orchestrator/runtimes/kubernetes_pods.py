"""Pure translation between Genesis sandboxes and Kubernetes Pods.

``pod_manifest`` turns a :class:`SandboxSpec` into the Pod the kubernetes
runtime creates; ``state_of`` turns a Pod (as the API server returns it, a
plain dict) back into a :class:`SandboxState`. No I/O here, so both are
tested on dicts and every manifest is validated against the official schema.

How the pod keeps Docker's contract with a read-only root filesystem:

- the bundle travels in an annotation, gzip + base64, and the downward API
  mounts it at ``/genesis/in/bundle.gz.b64`` (the orchestrator's RBAC stops
  at pods: no ConfigMaps, no exec);
- ``/genesis/work`` is an emptyDir the runner first fills from the image's
  ``/workspace`` (``GENESIS_SEED_FROM``); ``/genesis/out`` and ``/tmp`` are
  emptyDirs too;
- results come back in the log: the runner prints ``/genesis/out`` between
  ``GENESIS-OUT`` markers and its result behind ``GENESIS-RESULT``;
- the pod is created behind a scheduling gate, so ``create`` and ``start``
  stay two steps: ``start`` removes the gate.

Kubernetes has no per-pod pids limit in the Pod API (it is the kubelet's
``podPidsLimit``); ``SandboxSpec.pids`` is therefore not set here: the runtime
declares the node's limit (``kubernetes.pod_pids_limit``) and intake refuses
requests past it.

A sandbox with ``network: true`` carries the label ``genesis.sandbox`` and gets
its own NetworkPolicy (:func:`egress_policy`), owned by the pod: egress to any
IPv4 address but the ranges of :mod:`orchestrator.domain.egress` (and
``egress_except``), plus DNS to the cluster's DNS pods. The namespace's
default-deny policy still holds everything else; policies only ever add.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import datetime

from orchestrator.domain.egress import BLOCKED_RANGES
from orchestrator.runtimes.base import SandboxSpec, SandboxState

CONTAINER = "sandbox"
START_GATE = "genesis/start"
BUNDLE_ANNOTATION = "genesis/bundle"
BUNDLE_DIGEST_ANNOTATION = "genesis/bundle-sha256"
# Annotations of one object may total 256 KiB; leave room for the others.
MAX_BUNDLE_ANNOTATION_BYTES = 240 * 1024
OUT_TO_LOG_BYTES = 8 * 2**20  # what the runner may print of /genesis/out (kubelet rotates at 10 MiB)
WORK_DIR = "/genesis/work"
SANDBOX_LABEL = "genesis.sandbox"  # on pods with network: what their own NetworkPolicy selects
LABEL_VALUE_MAX = 63
DNS_PORT = 53

# Pod and container reasons that mean the infrastructure ended the sandbox,
# not the change (base.DISRUPTED_REASONS): the attempt is retried.
_IMAGE_WAITING = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"}
_CONFIG_WAITING = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
_DISRUPTION_CONDITIONS = {
    "PreemptionByScheduler": "preempted", "PreemptionByKubeScheduler": "preempted",
    "DeletionByTaintManager": "node_lost", "EvictionByEvictionAPI": "evicted",
    "DeletionByPodGC": "node_lost", "TerminationByKubelet": "evicted",
}


class BundleTooLarge(ValueError):
    """The compressed bundle does not fit in a Pod annotation."""


@dataclass(frozen=True)
class PodOptions:
    """The cluster-side choices (from ``KubernetesSettings``) a Pod is made with."""

    namespace: str
    image_prefix: str | None = None  # a registry: pods pull <prefix>/<snapshot tag>
    image_pull_policy: str = "Never"
    image_pull_secrets: tuple[str, ...] = ()
    runtime_class: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict, ...] = ()
    gpu_tolerations: tuple[dict, ...] = ()
    gpu_resource: str = "nvidia.com/gpu"
    workspace_size: str = "4Gi"
    deadline_slack_s: int = 60
    egress_except: tuple[str, ...] = ()  # beyond BLOCKED_RANGES
    dns_namespace: str | None = "kube-system"
    dns_pod_labels: dict[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})


def encode_bundle(bundle: bytes) -> str:
    """gzip + base64, as the runner reads ``bundle.gz.b64``; raises BundleTooLarge."""
    encoded = base64.b64encode(gzip.compress(bundle, mtime=0)).decode()
    if len(encoded) > MAX_BUNDLE_ANNOTATION_BYTES:
        raise BundleTooLarge(f"the change is {len(encoded)} bytes compressed; a pod annotation holds at most "
                             f"{MAX_BUNDLE_ANNOTATION_BYTES}")
    return encoded


def quantity_cpu(cpu: float) -> str:
    return f"{max(1, math.ceil(cpu * 1000))}m"


def pod_image(options: PodOptions, image: str) -> str:
    return f"{options.image_prefix.rstrip('/')}/{image}" if options.image_prefix else image


def pod_manifest(spec: SandboxSpec, options: PodOptions) -> dict:
    """The Pod for one sandbox. Raises BundleTooLarge for a bundle that cannot travel."""
    bundle = encode_bundle(spec.bundle)
    limits: dict[str, str] = {"cpu": quantity_cpu(spec.cpu), "memory": str(spec.memory_bytes)}
    if spec.gpus:
        limits[options.gpu_resource] = str(len(spec.gpus))
    if spec.disk_bytes is not None:
        # The kubelet evicts a pod past it: its writable layer, its logs and the disk-backed
        # emptyDirs (the workspace, seeded with a copy of the tree, and /genesis/out).
        limits["ephemeral-storage"] = str(spec.disk_bytes)
    node_selector = {**options.node_selector, **(options.gpu_node_selector if spec.gpus else {})}
    tolerations = [*options.tolerations, *(options.gpu_tolerations if spec.gpus else ())]
    pod_spec: dict = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 5,
        "schedulingGates": [{"name": START_GATE}],
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [{
            "name": CONTAINER,
            "image": pod_image(options, spec.image),
            "imagePullPolicy": options.image_pull_policy,
            "workingDir": WORK_DIR,
            "env": [
                {"name": "GENESIS_WORKSPACE", "value": WORK_DIR},
                {"name": "GENESIS_SEED_FROM", "value": "/workspace"},
                {"name": "GENESIS_OUT_TO_LOG", "value": str(OUT_TO_LOG_BYTES)},
                {"name": "HOME", "value": "/tmp"},
            ],
            "resources": {"requests": dict(limits), "limits": limits},  # ephemeral-storage: resources.disk
            "securityContext": {
                "allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
                "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": [
                {"name": "bundle", "mountPath": "/genesis/in", "readOnly": True},
                {"name": "work", "mountPath": WORK_DIR},
                {"name": "out", "mountPath": "/genesis/out"},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }],
        "volumes": [
            {"name": "bundle", "downwardAPI": {"defaultMode": 0o444, "items": [{
                "path": "bundle.gz.b64", "fieldRef": {"fieldPath": f"metadata.annotations['{BUNDLE_ANNOTATION}']"},
            }]}},
            {"name": "work", "emptyDir": {"sizeLimit": options.workspace_size}},
            {"name": "out", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": str(spec.tmp_bytes)}},
        ],
    }
    if spec.timeout_s is not None:
        pod_spec["activeDeadlineSeconds"] = max(1, math.ceil(spec.timeout_s)) + options.deadline_slack_s
    if options.runtime_class:
        pod_spec["runtimeClassName"] = options.runtime_class
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if options.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in options.image_pull_secrets]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": spec.name,
            "namespace": options.namespace,
            "labels": {**spec.labels, SANDBOX_LABEL: sandbox_label(spec.name)} if spec.network else dict(spec.labels),
            "annotations": {BUNDLE_ANNOTATION: bundle,
                            BUNDLE_DIGEST_ANNOTATION: hashlib.sha256(spec.bundle).hexdigest()},
        },
        "spec": pod_spec,
    }


def sandbox_label(name: str) -> str:
    """A label value for one sandbox: its name, or (past 63 characters) a prefix and a digest."""
    if len(name) <= LABEL_VALUE_MAX:
        return name
    return f"{name[:LABEL_VALUE_MAX - 17].rstrip('-.')}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def egress_policy(pod: dict, options: PodOptions) -> dict:
    """The NetworkPolicy that gives one pod (as created: it has a UID) its egress.

    Owned by the pod, so the garbage collector deletes it with the pod even if Genesis
    does not. Egress only: nothing may connect to the sandbox (default-deny stays).
    """
    meta = pod["metadata"]
    name = meta["name"]
    rules: list[dict] = [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0",
                                              "except": list(dict.fromkeys((*BLOCKED_RANGES,
                                                                            *options.egress_except)))}}]}]
    if options.dns_namespace:
        rules.append({
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": options.dns_namespace}},
                    "podSelector": {"matchLabels": dict(options.dns_pod_labels)}}],
            "ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}],
        })
    labels = {key: value for key, value in (meta.get("labels") or {}).items()}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name, "namespace": options.namespace, "labels": labels,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": meta["uid"]}],
        },
        "spec": {"podSelector": {"matchLabels": {SANDBOX_LABEL: labels[SANDBOX_LABEL]}},
                 "policyTypes": ["Egress"], "egress": rules},
    }


def label_selector(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _container_status(pod: dict) -> dict:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            return status
    return {}


def _disruption(pod: dict) -> str | None:
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return _DISRUPTION_CONDITIONS.get(condition.get("reason") or "", "disrupted")
    reason = status.get("reason") or ""
    if reason == "Evicted" and _DISK_EVICTION.search(status.get("message") or ""):
        return "disk_exceeded"  # its own writes past resources.disk: the change's doing, not retried
    if reason == "Evicted":
        return "evicted"
    if reason in {"NodeLost", "Shutdown", "Terminated", "NodeShutdown"}:
        return "node_lost"
    if reason.startswith("OutOf") or reason in {"UnexpectedAdmissionError", "NodeAffinity", "Preempting"}:
        return "preempted" if reason == "Preempting" else "admission_rejected"
    return None


# The kubelet's words when a pod outgrows its own ephemeral-storage limit or an emptyDir's
# sizeLimit; not "The node was low on resource: ephemeral-storage" (node pressure: disrupted).
_DISK_EVICTION = re.compile(r"ephemeral local storage usage exceeds the total limit|"
                            r"exceeded its local ephemeral storage limit|Usage of EmptyDir volume .* exceeds the limit")


def state_of(pod: dict) -> SandboxState:
    """A Pod as a SandboxState: gated → created; Pending/Running → running;
    Succeeded/Failed (or a container that can never start) → exited with a reason."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    spec = pod.get("spec") or {}
    phase = status.get("phase") or "Pending"
    container = _container_status(pod)
    terminated = (container.get("state") or {}).get("terminated") or {}
    waiting = (container.get("state") or {}).get("waiting") or {}
    common = dict(name=meta.get("name", ""), uid=meta.get("uid"), labels=dict(meta.get("labels") or {}),
                  image=(spec.get("containers") or [{}])[0].get("image"),
                  started_at=_time(status.get("startTime")))
    if phase in ("Succeeded", "Failed"):
        oom = terminated.get("reason") == "OOMKilled"
        reason = _disruption(pod)
        if oom:
            reason = "oom_killed"
        elif status.get("reason") == "DeadlineExceeded":
            reason = "deadline_exceeded"
        elif reason is None and phase == "Failed" and not terminated:
            reason = "disrupted"  # failed before its container ever ran
        exit_code = terminated.get("exitCode")
        return SandboxState(status="exited", exit_code=exit_code if exit_code is not None else -1,
                            oom_killed=oom, finished_at=_time(terminated.get("finishedAt")), reason=reason,
                            message=status.get("message") or terminated.get("message"), **common)
    if waiting.get("reason") in _IMAGE_WAITING | _CONFIG_WAITING:
        reason = "image_unavailable" if waiting["reason"] in _IMAGE_WAITING else "disrupted"
        return SandboxState(status="exited", exit_code=-1, reason=reason,
                            message=f"{waiting['reason']}: {waiting.get('message', '')}".strip(), **common)
    if spec.get("schedulingGates") and phase == "Pending":
        return SandboxState(status="created", **common)
    return SandboxState(status="running", **common)
