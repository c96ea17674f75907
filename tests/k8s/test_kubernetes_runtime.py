"""The kubernetes runtime through the real client against the API emulator:
the exact requests it sends, stale writes (409), expired watches (410),
how Pod phases and container reasons map to sandbox states, and the Pods
it generates validated against the official schema.

What only a real cluster shows is listed in docs/kubernetes.md.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from kubernetes_validate.utils import latest_version, validate

from kubeapi import PODS
from conftest import NAMESPACE, kube_runtime_for
from helpers import RUN_ID, wait_until
from orchestrator.errors import RequestRejected, RuntimeFailure, SandboxGone
from orchestrator.runtimes.base import SandboxSpec
from orchestrator.domain.egress import BLOCKED_RANGES
from orchestrator.runtimes.kubernetes_pods import (SANDBOX_LABEL, START_GATE, PodOptions, egress_policy,
                                                   pod_manifest, sandbox_label, state_of)

# The session's installation (tests/conftest.py): the runtime's pod cache selects on it.
INSTALLATION = f"test-{RUN_ID}"
LABELS = {"genesis.managed-by": "genesis", "genesis.installation": INSTALLATION, "genesis.experiment-id": "exp-1",
          "genesis.instance-id": "agent-7", "genesis.role": "experiment", "genesis.attempt": "1"}
PODS_URL = f"/api/v1/namespaces/{NAMESPACE}/pods"
POLICIES_URL = f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies"


def spec(name: str = "genesis-exp-1-a1", **overrides) -> SandboxSpec:
    fields = dict(name=name, image="genesis/snapshot:monorepo-abc-123", labels=dict(LABELS),
                  bundle=json.dumps({"changes": {"files": [{"path": "a.py", "content": "x = 1\n"}]},
                                     "validation": {"command": ["python3", "-m", "pytest"]}}).encode(),
                  cpu=1.5, memory_bytes=512 * 2**20, pids=256, timeout_s=300)
    fields.update(overrides)
    return SandboxSpec(**fields)


def run(coro):
    return asyncio.run(coro)


def requests_after(apiserver, start: int) -> list:
    return [r for r in apiserver.requests()[start:] if r.resource is not None or "/version" in str(r.url)]


def sent(request) -> dict:
    """The body exactly as the client sent it (the emulator stamps its parsed copy)."""
    return json.loads(request.body)


def set_status(apiserver, name: str, status: dict) -> None:
    """What a kubelet would write (pods/status)."""
    import requests
    requests.patch(f"{apiserver.url}{PODS_URL}/{name}/status", json={"status": status},
                   headers={"Content-Type": "application/merge-patch+json"}, timeout=5).raise_for_status()


# -- generated Pods ---------------------------------------------------------------------

@pytest.mark.parametrize("gpus,options", [
    ((), PodOptions(namespace=NAMESPACE)),
    (("0", "1"), PodOptions(namespace=NAMESPACE, runtime_class="nvidia", image_prefix="registry.local:5000",
                            image_pull_policy="IfNotPresent", image_pull_secrets=("regcred",),
                            node_selector={"genesis/pool": "sandboxes"},
                            gpu_node_selector={"nvidia.com/gpu.present": "true"},
                            tolerations=({"key": "dedicated", "operator": "Equal", "value": "genesis",
                                          "effect": "NoSchedule"},),
                            gpu_tolerations=({"key": "nvidia.com/gpu", "operator": "Exists",
                                              "effect": "NoSchedule"},))),
], ids=["cpu", "gpu"])
def test_generated_pods_validate_strictly(gpus, options):
    pod = pod_manifest(spec(gpus=gpus), options)
    validate(pod, latest_version(), strict=True)  # raises on any unknown or mistyped field
    box = pod["spec"]["containers"][0]
    assert pod["spec"]["restartPolicy"] == "Never" and pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["activeDeadlineSeconds"] == 300 + options.deadline_slack_s
    assert pod["spec"]["schedulingGates"] == [{"name": START_GATE}]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert box["securityContext"]["readOnlyRootFilesystem"] is True
    assert box["securityContext"]["allowPrivilegeEscalation"] is False
    assert box["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert box["resources"]["limits"]["cpu"] == "1500m" and box["resources"]["limits"]["memory"] == str(512 * 2**20)
    assert pod["metadata"]["labels"] == LABELS
    if gpus:
        assert box["resources"]["limits"]["nvidia.com/gpu"] == "2" == box["resources"]["requests"]["nvidia.com/gpu"]
        assert pod["spec"]["runtimeClassName"] == "nvidia"
        assert pod["spec"]["nodeSelector"] == {"genesis/pool": "sandboxes", "nvidia.com/gpu.present": "true"}
        assert {t["key"] for t in pod["spec"]["tolerations"]} == {"dedicated", "nvidia.com/gpu"}
        assert box["image"] == "registry.local:5000/genesis/snapshot:monorepo-abc-123"
        assert box["imagePullPolicy"] == "IfNotPresent" and pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    else:
        assert "nvidia.com/gpu" not in box["resources"]["limits"]
        assert "runtimeClassName" not in pod["spec"] and "nodeSelector" not in pod["spec"]
        assert box["imagePullPolicy"] == "Never" and box["image"] == "genesis/snapshot:monorepo-abc-123"


def test_resources_disk_becomes_the_pods_ephemeral_storage_request_and_limit():
    pod = pod_manifest(spec(disk_bytes=2 * 2**30), PodOptions(namespace=NAMESPACE))
    validate(pod, latest_version(), strict=True)
    box = pod["spec"]["containers"][0]
    assert box["resources"]["limits"]["ephemeral-storage"] == str(2 * 2**30)
    assert box["resources"]["requests"]["ephemeral-storage"] == str(2 * 2**30)
    unbounded = pod_manifest(spec(), PodOptions(namespace=NAMESPACE))["spec"]["containers"][0]
    assert "ephemeral-storage" not in unbounded["resources"]["limits"]


def test_an_unknown_field_would_fail_validation():
    pod = pod_manifest(spec(), PodOptions(namespace=NAMESPACE))
    pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(Exception, match="readOnlyRootFS"):
        validate(pod, latest_version(), strict=True)


def test_a_bundle_too_large_for_an_annotation_is_rejected(kube_runtime):
    import os
    noise = os.urandom(300 * 1024).hex()  # incompressible
    with pytest.raises(RequestRejected) as caught:
        run(kube_runtime.create(spec(bundle=json.dumps({"changes": {"files": [{"path": "x", "content": noise}]},
                                                        "validation": {"command": ["true"]}}).encode())))
    assert caught.value.code == "bundle_too_large"


# -- exact requests -------------------------------------------------------------------------

def test_create_and_start_send_exactly_these_requests(apiserver, kube_runtime):
    start = len(apiserver.requests())
    run(kube_runtime.create(spec()))
    created_version = apiserver.call(lambda s: s.revision)
    run(kube_runtime.start("genesis-exp-1-a1"))
    seen = requests_after(apiserver, start)
    assert [(r.method.value, r.url.path) for r in seen] == [
        ("POST", PODS_URL), ("GET", f"{PODS_URL}/genesis-exp-1-a1"), ("PATCH", f"{PODS_URL}/genesis-exp-1-a1")]
    posted, patched = sent(seen[0]), sent(seen[2])
    expected = pod_manifest(spec(), kube_runtime.options)
    assert posted["spec"] == expected["spec"] and posted["metadata"]["labels"] == LABELS
    assert patched == {"metadata": {"resourceVersion": str(created_version)}, "spec": {"schedulingGates": None}}
    assert seen[2].headers["Content-Type"] == "application/strategic-merge-patch+json"
    pod = apiserver.call(lambda s: s.current(NAMESPACE, "genesis-exp-1-a1"))
    assert "schedulingGates" not in pod["spec"]
    # A second start is a no-op read: the gate is already gone.
    before = len(apiserver.requests())
    run(kube_runtime.start("genesis-exp-1-a1"))
    assert [r.method.value for r in requests_after(apiserver, before)] == ["GET"]


def test_a_stale_write_gets_409_and_is_retried_on_a_fresh_read(apiserver, kube_runtime):
    run(kube_runtime.create(spec()))

    def kubelet_writes_first(request):
        # Between the runtime's read and its patch, a status update lands.
        if request.method.value == "PATCH" and request.subresource is None and not fired:
            fired.append(True)
            obj = apiserver.server.objects[(PODS, NAMESPACE, "genesis-exp-1-a1")]
            apiserver.server.revision += 1
            obj.patch({"metadata": {"resourceVersion": str(apiserver.server.revision)},
                       "status": {"phase": "Pending"}})

    fired: list = []
    apiserver.call(lambda s: setattr(s, "before_write", kubelet_writes_first))
    start = len(apiserver.requests())
    run(kube_runtime.start("genesis-exp-1-a1"))
    seen = requests_after(apiserver, start)
    assert [r.method.value for r in seen] == ["GET", "PATCH", "GET", "PATCH"]
    first, second = sent(seen[1])["metadata"]["resourceVersion"], sent(seen[3])["metadata"]["resourceVersion"]
    assert int(second) > int(first)  # the retry carries the version it re-read
    assert "schedulingGates" not in apiserver.call(lambda s: s.current(NAMESPACE, "genesis-exp-1-a1"))["spec"]


def test_a_write_stale_every_time_is_retried_up_to_the_limit_then_fails(apiserver, kube_runtime):
    from orchestrator.runtimes.kubernetes import CONFLICT_RETRIES

    run(kube_runtime.create(spec()))

    def kubelet_always_writes_first(request):
        if request.method.value == "PATCH" and request.subresource is None:
            obj = apiserver.server.objects[(PODS, NAMESPACE, "genesis-exp-1-a1")]
            apiserver.server.revision += 1
            obj.patch({"metadata": {"resourceVersion": str(apiserver.server.revision)}})

    apiserver.call(lambda s: setattr(s, "before_write", kubelet_always_writes_first))
    start = len(apiserver.requests())
    with pytest.raises(RuntimeFailure, match="409"):
        run(kube_runtime.start("genesis-exp-1-a1"))
    assert [r.method.value for r in requests_after(apiserver, start)] == ["GET", "PATCH"] * CONFLICT_RETRIES
    assert apiserver.call(lambda s: s.current(NAMESPACE, "genesis-exp-1-a1"))["spec"]["schedulingGates"]
    # Anything but a 409 is not retried: a pod that is gone is one read.
    start = len(apiserver.requests())
    with pytest.raises(RuntimeFailure, match="no sandbox"):
        run(kube_runtime.start("genesis-nobody-a1"))
    assert [r.method.value for r in requests_after(apiserver, start)] == ["GET"]


def test_a_create_that_already_happened_is_idempotent_but_a_foreign_pod_is_not(apiserver, kube_runtime):
    run(kube_runtime.create(spec()))
    run(kube_runtime.create(spec()))  # a retried create of the same sandbox (409 AlreadyExists → ours)
    other = spec(bundle=b'{"changes": {}, "validation": {"command": ["false"]}}')
    with pytest.raises(RuntimeFailure, match="already exists"):
        run(kube_runtime.create(other))
    posts = [r for r in apiserver.requests() if r.method.value == "POST"]
    assert len(posts) == 3


def test_watch_resumes_from_its_version_and_relists_on_410(apiserver, settings):
    runtime = kube_runtime_for(apiserver, settings)
    runtime.informer._watch_timeout_s = 1  # short streams: each ends and is resumed
    try:
        run(runtime.create(spec("genesis-a-a1")))
        assert [s.name for s in run(runtime.list(settings.sandbox_selector()))] == ["genesis-a-a1"]
        informer = runtime.informer
        version = informer.resource_version
        wait_until(lambda: len(_watches(apiserver)) >= 2, timeout_s=10, what="a resumed watch")
        assert all(w.params.get("resourceVersion") == version for w in _watches(apiserver)[:2])
        assert all(w.params["labelSelector"] == f"genesis.installation={INSTALLATION},genesis.managed-by=genesis"
                   for w in _watches(apiserver))
        assert informer.relists == 1
        # etcd compacts: the version the watch holds is gone; the next watch gets 410 and relists.
        apiserver.call(lambda s: s.compact())
        lists_before = len(_lists(apiserver))
        wait_until(lambda: informer.relists == 2, timeout_s=15, what="a relist after 410 Gone")
        assert len(_lists(apiserver)) == lists_before + 1
        # The relist saw a pod created behind the runtime's back while the watch was expired.
        import requests
        requests.post(f"{apiserver.url}{PODS_URL}", timeout=5,
                      json=pod_manifest(spec("genesis-b-a1"), runtime.options)).raise_for_status()
        wait_until(lambda: {s.name for s in run(runtime.list(settings.sandbox_selector()))} ==
                   {"genesis-a-a1", "genesis-b-a1"}, timeout_s=10, what="the new pod through the watch")
        newer = [w for w in _watches(apiserver) if int(w.params.get("resourceVersion") or 0) > int(version)]
        assert newer, "the watch after the relist starts from the relisted version"
    finally:
        runtime.close()


def _watches(apiserver):
    return [r for r in apiserver.requests() if r.params.get("watch") == "true"]


def _lists(apiserver):
    return [r for r in apiserver.requests()
            if r.method.value == "GET" and r.url.path == PODS_URL and r.params.get("watch") != "true"]


# -- phases and reasons -----------------------------------------------------------------------

TERMINATED = {"name": "sandbox", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
              "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": "2026-01-01T00:00:05Z"}}}


def _terminated(code: int, reason: str) -> dict:
    return {**TERMINATED, "state": {"terminated": {**TERMINATED["state"]["terminated"], "exitCode": code,
                                                   "reason": reason}}}


@pytest.mark.parametrize("status,expected", [
    ({"phase": "Succeeded", "containerStatuses": [_terminated(0, "Completed")]},
     dict(status="exited", exit_code=0, oom_killed=False, reason=None, disrupted=False)),
    ({"phase": "Failed", "containerStatuses": [_terminated(137, "OOMKilled")]},
     dict(status="exited", exit_code=137, oom_killed=True, reason="oom_killed", disrupted=False)),
    ({"phase": "Failed", "reason": "DeadlineExceeded", "message": "Pod was active on the node longer than the "
      "specified deadline", "containerStatuses": [_terminated(137, "Error")]},
     dict(status="exited", exit_code=137, oom_killed=False, reason="deadline_exceeded", disrupted=False)),
    ({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."},
     dict(status="exited", exit_code=-1, oom_killed=False, reason="evicted", disrupted=True)),
    # Past its own resources.disk: the change's doing (disk_exceeded), not the node's.
    ({"phase": "Failed", "reason": "Evicted", "message": "Pod ephemeral local storage usage exceeds the total "
      "limit of containers 209715200. "},
     dict(status="exited", exit_code=-1, oom_killed=False, reason="disk_exceeded", disrupted=False)),
    ({"phase": "Failed", "reason": "Evicted", "message": 'Usage of EmptyDir volume "work" exceeds the limit "4Gi". '},
     dict(status="exited", exit_code=-1, oom_killed=False, reason="disk_exceeded", disrupted=False)),
    ({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: ephemeral-storage. "},
     dict(status="exited", exit_code=-1, oom_killed=False, reason="evicted", disrupted=True)),
    ({"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True",
                                         "reason": "PreemptionByScheduler"}],
      "containerStatuses": [_terminated(143, "Error")]},
     dict(status="exited", exit_code=143, oom_killed=False, reason="preempted", disrupted=True)),
    ({"phase": "Failed", "reason": "OutOfnvidia.com/gpu"},
     dict(status="exited", exit_code=-1, reason="admission_rejected", disrupted=True)),
    ({"phase": "Pending", "containerStatuses": [{**TERMINATED, "state": {"waiting": {
        "reason": "ErrImageNeverPull", "message": "image not present with pull policy of Never"}}}]},
     dict(status="exited", reason="image_unavailable", disrupted=True)),
    ({"phase": "Running"}, dict(status="running", reason=None)),
    ({"phase": "Pending"}, dict(status="running", reason=None)),
], ids=["succeeded", "oom", "deadline", "evicted", "disk-own-limit", "disk-emptydir", "evicted-node-disk",
      "preempted", "admission", "image", "running", "pending"])
def test_phases_and_reasons_map_to_sandbox_states(apiserver, kube_runtime, status, expected):
    run(kube_runtime.create(spec()))
    run(kube_runtime.start("genesis-exp-1-a1"))
    set_status(apiserver, "genesis-exp-1-a1", status)
    if expected["status"] == "exited":
        state = run(kube_runtime.wait("genesis-exp-1-a1", timeout_s=10))  # woken by the watch
    else:
        assert run(kube_runtime.wait("genesis-exp-1-a1", timeout_s=1)) is None
        state = run(kube_runtime.inspect("genesis-exp-1-a1"))
    for key, value in expected.items():
        assert getattr(state, key) == value, (key, state)


def test_gated_pod_is_created_not_running():
    pod = pod_manifest(spec(), PodOptions(namespace=NAMESPACE))
    pod["status"] = {"phase": "Pending"}
    assert state_of(pod).status == "created"


# -- network: a pod's own egress policy ----------------------------------------------------

def test_the_egress_policy_validates_selects_its_pod_only_and_is_owned_by_it():
    options = PodOptions(namespace=NAMESPACE, egress_except=("203.0.113.10/32", "10.0.0.0/8"))
    pod = pod_manifest(spec(network=True), options)
    validate(pod, latest_version(), strict=True)
    assert pod["metadata"]["labels"] == {**LABELS, SANDBOX_LABEL: "genesis-exp-1-a1"}
    pod["metadata"]["uid"] = "uid-1"
    policy = egress_policy(pod, options)
    validate(policy, latest_version(), strict=True)
    assert policy["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "genesis-exp-1-a1",
                                                      "uid": "uid-1"}]
    assert policy["spec"]["podSelector"] == {"matchLabels": {SANDBOX_LABEL: "genesis-exp-1-a1"}}
    assert policy["spec"]["policyTypes"] == ["Egress"]  # nothing may connect in: default-deny stays
    anywhere, dns = policy["spec"]["egress"]
    assert anywhere == {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [*BLOCKED_RANGES, "203.0.113.10/32"]}}]}
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert len(egress_policy(pod, PodOptions(namespace=NAMESPACE, dns_namespace=None))["spec"]["egress"]) == 1
    assert "genesis.sandbox" not in pod_manifest(spec(), options)["metadata"]["labels"]  # no network, no label


def test_a_long_sandbox_name_still_makes_a_valid_unique_label():
    long_a, long_b = "genesis-" + "a" * 70 + "-a1", "genesis-" + "a" * 70 + "-a2"
    assert len(sandbox_label(long_a)) <= 63 and sandbox_label(long_a) != sandbox_label(long_b)
    validate(pod_manifest(spec(long_a[:63], network=True), PodOptions(namespace=NAMESPACE)), latest_version(),
             strict=True)


def test_a_network_pod_gets_its_policy_before_it_runs_and_loses_it_with_the_pod(apiserver, egress_runtime):
    start = len(apiserver.requests())
    uid = run(egress_runtime.create(spec(network=True)))
    seen = requests_after(apiserver, start)
    assert [(r.method.value, r.url.path) for r in seen] == [("POST", PODS_URL), ("POST", POLICIES_URL)]
    policy = sent(seen[1])
    assert policy["metadata"]["name"] == "genesis-exp-1-a1" and policy["metadata"]["ownerReferences"][0]["uid"] == uid
    assert "203.0.113.10/32" in policy["spec"]["egress"][0]["to"][0]["ipBlock"]["except"]
    run(egress_runtime.start("genesis-exp-1-a1"))
    start = len(apiserver.requests())
    assert run(egress_runtime.remove("genesis-exp-1-a1", uid=uid)) is True
    assert [(r.method.value, r.url.path) for r in requests_after(apiserver, start)] == [
        ("DELETE", f"{PODS_URL}/genesis-exp-1-a1"), ("DELETE", f"{POLICIES_URL}/genesis-exp-1-a1")]


def test_a_policy_left_by_an_earlier_pod_of_the_name_is_replaced(apiserver, egress_runtime):
    import requests
    stale = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": "genesis-exp-1-a1", "ownerReferences": [
                 {"apiVersion": "v1", "kind": "Pod", "name": "genesis-exp-1-a1", "uid": "gone"}]},
             "spec": {"podSelector": {}}}
    requests.post(f"{apiserver.url}{POLICIES_URL}", json=stale, timeout=5).raise_for_status()
    start = len(apiserver.requests())
    uid = run(egress_runtime.create(spec(network=True)))
    assert [(r.method.value, r.url.path.rsplit("/", 1)[-1]) for r in requests_after(apiserver, start)] == [
        ("POST", "pods"), ("POST", "networkpolicies"), ("DELETE", "genesis-exp-1-a1"), ("POST", "networkpolicies")]
    now = requests.get(f"{apiserver.url}{POLICIES_URL}/genesis-exp-1-a1", timeout=5).json()
    assert now["metadata"]["ownerReferences"][0]["uid"] == uid


def test_pods_without_network_get_no_policy_and_a_runtime_without_egress_refuses_network(
        apiserver, egress_runtime, kube_runtime):
    start = len(apiserver.requests())
    run(egress_runtime.create(spec("genesis-quiet-a1")))
    assert [r.url.path for r in requests_after(apiserver, start)] == [PODS_URL]
    start = len(apiserver.requests())
    with pytest.raises(RequestRejected) as refused:
        run(kube_runtime.create(spec("genesis-net-a1", network=True)))
    assert refused.value.code == "unsupported_by_runtime" and requests_after(apiserver, start) == []


def test_kill_lowers_the_deadline_of_a_running_pod_and_deletes_a_gated_one(apiserver, kube_runtime):
    run(kube_runtime.create(spec("genesis-run-a1")))
    run(kube_runtime.start("genesis-run-a1"))
    set_status(apiserver, "genesis-run-a1", {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"})
    uid = run(kube_runtime.inspect("genesis-run-a1")).uid
    start = len(apiserver.requests())
    run(kube_runtime.kill("genesis-run-a1", uid=uid))
    patch = [r for r in requests_after(apiserver, start) if r.method.value == "PATCH"]
    assert [sent(p) for p in patch] == [{"metadata": {"uid": uid}, "spec": {"activeDeadlineSeconds": 1}}]
    run(kube_runtime.create(spec("genesis-gated-a1")))
    run(kube_runtime.kill("genesis-gated-a1"))
    assert run(kube_runtime.inspect("genesis-gated-a1")).status == "missing"


def test_kill_and_remove_by_uid_leave_a_later_pod_of_the_same_name_alone(apiserver, kube_runtime):
    # A former leader holding the UID of the pod it created must not reach the
    # pod a new leader created under the same name since.
    old = run(kube_runtime.create(spec("genesis-same-a1")))
    assert run(kube_runtime.remove("genesis-same-a1", uid=old)) is True
    new = run(kube_runtime.create(spec("genesis-same-a1")))
    assert new != old
    assert run(kube_runtime.remove("genesis-same-a1", uid=old)) is False
    with pytest.raises(SandboxGone):
        run(kube_runtime.kill("genesis-same-a1", uid=old))
    assert run(kube_runtime.inspect("genesis-same-a1")).uid == new
    assert run(kube_runtime.remove("genesis-same-a1", uid=new)) is True


def test_a_gpu_pod_that_cannot_be_scheduled_waits_and_says_why(apiserver, kube_runtime, kubelet, snapshot_image):
    run(kube_runtime.create(spec("genesis-gpu-a1", image=snapshot_image, gpus=("0",))))
    run(kube_runtime.start("genesis-gpu-a1"))
    wait_until(lambda: run(kube_runtime.events("genesis-gpu-a1")), timeout_s=10, what="a FailedScheduling event")
    assert run(kube_runtime.events("genesis-gpu-a1")) == [
        "FailedScheduling: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."]
    assert run(kube_runtime.wait("genesis-gpu-a1", timeout_s=1)) is None  # pending, not failed
    run(kube_runtime.remove("genesis-gpu-a1"))


def test_the_deadline_backstop_ends_a_pod_as_deadline_exceeded(kube_runtime, kubelet, snapshot_image):
    from dataclasses import replace

    bundle = json.dumps({"changes": {}, "validation": {"command": ["sleep", "600"]}}).encode()
    # activeDeadlineSeconds = timeout + slack (60 s by default); a short slack keeps the test short.
    kube_runtime.options = replace(kube_runtime.options, deadline_slack_s=1)
    run(kube_runtime.create(spec("genesis-slow-a2", image=snapshot_image, bundle=bundle, timeout_s=1)))
    run(kube_runtime.start("genesis-slow-a2"))
    state = run(kube_runtime.wait("genesis-slow-a2", timeout_s=60))
    assert state is not None and state.reason == "deadline_exceeded" and not state.disrupted
    run(kube_runtime.remove("genesis-slow-a2"))


def test_ping_reads_the_server_version(kube_runtime):
    assert run(kube_runtime.ping()).startswith("v1.")


def test_an_unreachable_api_server_is_a_runtime_failure(settings):
    from kubernetes import client as k8s

    from orchestrator.runtimes.kubernetes import KubernetesRuntime
    configuration = k8s.Configuration()
    configuration.host = "http://127.0.0.1:9"  # nothing listens on the discard port
    runtime = KubernetesRuntime(k8s.ApiClient(configuration), PodOptions(namespace=NAMESPACE),
                                selector=settings.sandbox_selector(), request_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(RuntimeFailure):
        run(runtime.inspect("genesis-x-a1"))
    assert time.monotonic() - started < 30
    runtime.close()


# -- RBAC: derived from the calls, compared with the Role -------------------------------------

def _verb(request) -> str:
    if request.method.value == "GET":
        if request.params.get("watch") == "true":
            return "watch"
        return "get" if request.name else "list"
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[request.method.value]


def test_the_role_grants_exactly_what_the_runtime_calls(apiserver, egress_runtime, kubelet, snapshot_image):
    """Drive every runtime method, collect the (resource, verb) pairs the emulator saw
    from the runtime (not from the test kubelet), and compare with the Role's rules.
    The runtime may give pods a network (sandbox_egress): the most it ever calls."""
    from deploy.rbac import EXPECTED_RULES

    kube_runtime = egress_runtime

    agent = "genesis-runtime-under-test"
    kube_runtime._api.user_agent = agent
    selector = {"genesis.managed-by": "genesis", "genesis.installation": INSTALLATION}
    quick = json.dumps({"changes": {}, "validation": {"command": ["true"]}}).encode()
    slow = json.dumps({"changes": {}, "validation": {"command": ["sleep", "600"]}}).encode()
    run(kube_runtime.ping())
    run(kube_runtime.create(spec("genesis-rbac-a1", image=snapshot_image, bundle=quick, network=True)))
    run(kube_runtime.start("genesis-rbac-a1"))
    assert run(kube_runtime.wait("genesis-rbac-a1", timeout_s=60)) is not None
    run(kube_runtime.inspect("genesis-rbac-a1"))
    run(kube_runtime.list(selector))
    run(kube_runtime.list({**selector, "genesis.experiment-id": "exp-1"}))
    run(kube_runtime.collect("genesis-rbac-a1", max_file_bytes=2**20))
    assert run(_all(kube_runtime.logs("genesis-rbac-a1")))
    assert run(_all(kube_runtime.logs("genesis-rbac-a1", follow=True)))
    run(kube_runtime.events("genesis-rbac-a1"))
    run(kube_runtime.create(spec("genesis-rbac-a2", image=snapshot_image, bundle=slow)))
    run(kube_runtime.start("genesis-rbac-a2"))
    wait_until(lambda: run(kube_runtime.inspect("genesis-rbac-a2")).started_at is not None, timeout_s=30,
               what="the slow pod to run")
    run(kube_runtime.kill("genesis-rbac-a2"))
    for name in ("genesis-rbac-a1", "genesis-rbac-a2"):
        run(kube_runtime.remove(name))
    used: dict[tuple[str, str], set[str]] = {}
    for request in apiserver.requests():
        if request.headers.get("User-Agent") != agent or request.resource is None:
            continue
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        used.setdefault((request.resource.group or "", resource), set()).add(_verb(request))
    assert {key: frozenset(verbs) for key, verbs in used.items()} == EXPECTED_RULES


async def _all(stream):
    return "".join([chunk async for chunk in stream])
