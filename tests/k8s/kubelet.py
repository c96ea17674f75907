"""A test kubelet: runs the emulator's Pods as real Docker containers.

With no cluster here, this is what makes a Pod the kubernetes runtime
creates actually run: it reads Pods from the API emulator like a kubelet
(over HTTP), honours the parts of the spec a sandbox depends on (image,
env, workingDir, runAsUser/Group, readOnlyRootFilesystem, dropped
capabilities, no privilege escalation, cpu/memory limits, downward-API
annotation files, emptyDirs, activeDeadlineSeconds, scheduling gates,
``nvidia.com/gpu`` it does not have), and writes Pod status back through
the ``pods/status`` subresource: phase, startTime, container states with
``OOMKilled`` and exit codes, ``DeadlineExceeded``, and an ``Unschedulable``
condition plus a FailedScheduling Event when GPUs are asked for.

It is a stand-in, not Kubernetes: emptyDirs are tmpfs mounts, the network
is Docker's ``none`` (a NetworkPolicy on a real cluster), and there is no
scheduler, admission or Pod Security. Containers carry the test run's label.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
import threading
import time

import docker
import docker.errors
import requests

KUBELET_LABEL = "genesis.test-kubelet-pod"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_quantity(value: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3}
    for suffix, factor in units.items():
        if str(value).endswith(suffix):
            return float(str(value)[: -len(suffix)]) * factor
    return float(value)


class DockerKubelet:
    def __init__(self, api_url: str, namespace: str, client: docker.DockerClient, labels: dict[str, str], *,
                 gpus: int = 0, interval_s: float = 0.1) -> None:
        self.api = api_url
        self.namespace = namespace
        self.client = client
        self.labels = labels
        self.gpus = gpus
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-kubelet", daemon=True)
        self._dirs: dict[str, str] = {}
        self._started: dict[str, float] = {}
        self._unschedulable: set[str] = set()
        self._mine: set[str] = set()  # ids of the containers this kubelet launched
        self.errors: list[str] = []
        self.http = requests.Session()

    def __enter__(self) -> "DockerKubelet":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        for container in self.client.containers.list(all=True, filters={"label": KUBELET_LABEL}):
            if container.labels.get("genesis.test-kubelet-ns") == self.namespace:
                container.remove(force=True)
        for path in self._dirs.values():
            shutil.rmtree(path, ignore_errors=True)

    # -- the API side -----------------------------------------------------------

    def _pods(self) -> list[dict]:
        response = self.http.get(f"{self.api}/api/v1/namespaces/{self.namespace}/pods", timeout=10)
        response.raise_for_status()
        return response.json().get("items") or []

    def _status(self, name: str, status: dict) -> None:
        self.http.patch(f"{self.api}/api/v1/namespaces/{self.namespace}/pods/{name}/status",
                        json={"status": status}, headers={"Content-Type": "application/merge-patch+json"},
                        timeout=10).raise_for_status()

    def _event(self, pod: str, reason: str, message: str) -> None:
        self.http.post(f"{self.api}/api/v1/namespaces/{self.namespace}/events", timeout=10, json={
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{pod}.{int(time.time() * 1000)}", "namespace": self.namespace},
            "involvedObject": {"kind": "Pod", "name": pod, "namespace": self.namespace},
            "reason": reason, "message": message, "type": "Warning", "lastTimestamp": _now(),
        }).raise_for_status()

    def logs(self, namespace: str, name: str) -> str:
        try:
            return self._container(name).logs(stdout=True, stderr=True).decode("utf-8", "replace")
        except (docker.errors.NotFound, LookupError):
            return ""

    # -- the node side ------------------------------------------------------------

    def _container(self, name: str):
        found = self.client.containers.list(all=True, filters={"label": f"{KUBELET_LABEL}={name}"})
        if not found:
            raise LookupError(name)
        return found[0]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as exc:  # keep going, but let the test see it
                self.errors.append(repr(exc))
            self._stop.wait(self.interval_s)

    def _sync(self) -> None:
        pods = self._pods()
        names = {p["metadata"]["name"] for p in pods}
        for container in self.client.containers.list(all=True, filters={"label": KUBELET_LABEL}):
            # Only its own: a kubelet of an earlier test still winding down must
            # not take the containers of this test's pods for deleted ones.
            if container.id in self._mine and container.labels[KUBELET_LABEL] not in names:
                container.remove(force=True)  # the pod was deleted
                self._mine.discard(container.id)
        for pod in pods:
            self._sync_pod(pod)

    def _sync_pod(self, pod: dict) -> None:
        name, spec, status = pod["metadata"]["name"], pod["spec"], pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed") or spec.get("schedulingGates"):
            return
        limits = spec["containers"][0].get("resources", {}).get("limits", {})
        if int(limits.get("nvidia.com/gpu", 0)) > self.gpus:
            if name not in self._unschedulable:
                self._unschedulable.add(name)
                message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
                self._status(name, {"phase": "Pending", "conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]})
                self._event(name, "FailedScheduling", message)
            return
        try:
            container = self._container(name)
        except LookupError:
            self._launch(pod)
            return
        container.reload()
        state = container.attrs["State"]
        deadline = spec.get("activeDeadlineSeconds")
        if state["Status"] == "running" and deadline and time.time() - self._started[name] > deadline:
            container.kill()
            container.wait(timeout=10)
            self._status(name, {"phase": "Failed", "reason": "DeadlineExceeded",
                                "message": "Pod was active on the node longer than the specified deadline",
                                "containerStatuses": [self._terminated(container, reason="Error")]})
        elif state["Status"] == "exited":
            code = state["ExitCode"]
            reason = "OOMKilled" if state.get("OOMKilled") else ("Completed" if code == 0 else "Error")
            self._status(name, {"phase": "Succeeded" if code == 0 else "Failed",
                                "containerStatuses": [self._terminated(container, reason=reason)]})

    def _terminated(self, container, *, reason: str) -> dict:
        container.reload()
        state = container.attrs["State"]
        return {"name": "sandbox", "ready": False, "restartCount": 0, "image": container.attrs["Config"]["Image"],
                "imageID": container.image.id, "state": {"terminated": {
                    "exitCode": state["ExitCode"], "reason": reason, "finishedAt": _now(),
                    "startedAt": state["StartedAt"][:19] + "Z"}}}

    def _launch(self, pod: dict) -> None:
        name, spec = pod["metadata"]["name"], pod["spec"]
        (box,) = spec["containers"]
        pod_sc, sc = spec.get("securityContext") or {}, box.get("securityContext") or {}
        if name not in self._dirs:  # not setdefault: its default would make (and leak) a folder every call
            self._dirs[name] = tempfile.mkdtemp(prefix="genesis-kubelet-")
        workdir = self._dirs[name]
        volumes, tmpfs = {}, {}
        mounts = {m["name"]: m for m in box.get("volumeMounts") or []}
        for volume in spec.get("volumes") or []:
            mount = mounts.get(volume["name"])
            if mount is None:
                continue
            if "downwardAPI" in volume:
                folder = os.path.join(workdir, volume["name"])
                os.makedirs(folder, exist_ok=True)
                for item in volume["downwardAPI"]["items"]:
                    key = item["fieldRef"]["fieldPath"].split("['", 1)[1].rstrip("']")
                    with open(os.path.join(folder, item["path"]), "w") as handle:
                        handle.write(pod["metadata"]["annotations"][key])
                os.chmod(folder, 0o755)
                volumes[folder] = {"bind": mount["mountPath"], "mode": "ro"}
            elif "emptyDir" in volume:
                size = int(parse_quantity(volume["emptyDir"].get("sizeLimit", "1Gi")))
                group = pod_sc.get("fsGroup", 0)
                tmpfs[mount["mountPath"]] = f"rw,nosuid,nodev,size={size},uid={pod_sc.get('runAsUser', 0)},gid={group}"
        limits = box.get("resources", {}).get("limits", {})
        memory = int(parse_quantity(limits["memory"])) if "memory" in limits else None
        user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        container = self.client.containers.create(
            box["image"], name=f"kubelet-{self.namespace}-{name}"[:120],
            labels={**self.labels, KUBELET_LABEL: name, "genesis.test-kubelet-ns": self.namespace},
            environment={e["name"]: e["value"] for e in box.get("env") or []},
            working_dir=box.get("workingDir"), user=f"{user}:{group}" if user is not None else None,
            read_only=bool(sc.get("readOnlyRootFilesystem")),
            cap_drop=sc.get("capabilities", {}).get("drop") or None,
            security_opt=["no-new-privileges"] if sc.get("allowPrivilegeEscalation") is False else None,
            mem_limit=memory, memswap_limit=memory,
            nano_cpus=int(parse_quantity(limits["cpu"]) * 1e9) if "cpu" in limits else None,
            pids_limit=1024, network_mode="none", init=False, volumes=volumes, tmpfs=tmpfs, detach=True)
        self._mine.add(container.id)
        container.start()
        self._started[name] = time.time()
        self._status(name, {"phase": "Running", "startTime": _now(), "conditions": [
            {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "sandbox", "ready": True, "restartCount": 0, "image": box["image"],
                                   "imageID": "", "state": {"running": {"startedAt": _now()}}}]})
