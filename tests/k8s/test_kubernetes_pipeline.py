"""Genesis end to end on the kubernetes runtime: the same requests and the
same verdicts as on Docker, with ``runtime: kubernetes`` and a kubeconfig
pointing at the API emulator, whose Pods the Docker-backed test kubelet runs.
Sandboxes are Pods here: the preserved one stays, the rolled-back one is
deleted through the API."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import NAMESPACE
from helpers import RUN_ID, TEST_LABEL, example, hostile, run_experiment

pytestmark = pytest.mark.docker


@pytest.fixture
def kube_app(tmp_path, apiserver, kubelet, sample_repo):
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": apiserver.url}}],
        "users": [{"name": "genesis", "user": {"token": "not-checked-by-the-emulator"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "genesis"}}],
    }))
    config = tmp_path / "genesis.yaml"
    config.write_text(json.dumps({
        "home": str(tmp_path / "home"), "runtime": "kubernetes", "repos": {"monorepo": {"path": str(sample_repo), "allow_validation_override": True}},
        "extra_labels": {TEST_LABEL: RUN_ID}, "pass_interval_s": 0.2, "preserve_ttl_s": 3600,
        "kubernetes": {"namespace": NAMESPACE, "kubeconfig": str(kubeconfig), "watch_timeout_s": 5},
    }))
    application = App(load_settings(config))
    application.config_path = config
    yield application
    application.close()


def pods_of(apiserver, experiment_id: str) -> list[dict]:
    def find(server):
        return [obj.raw for (res, ns, _), obj in server.objects.items()
                if ns == NAMESPACE and not obj.deleted and res.plural == "pods"
                and (obj.raw["metadata"].get("labels") or {}).get("genesis.experiment-id") == experiment_id]
    return apiserver.call(find)


def test_good_change_merges_bad_change_rolls_back_on_pods(kube_app, apiserver):
    assert kube_app.runtime.name == "kubernetes"
    good = run_experiment(kube_app, example("good-change.yaml"))
    bad = run_experiment(kube_app, example("bad-change.yaml"))
    assert good.phase.value == "Succeeded" and bad.phase.value == "Succeeded", (good.message, bad.message)
    assert good.recommendation.value in ("merge", "merge_with_adaptations")
    assert bad.recommendation.value == "rollback"
    g, b = good.outcome.metrics, bad.outcome.metrics
    assert (g.success_rate, g.regression, g.test_count) == (1.0, 0.0, 20)
    assert b.failures == 4 and b.regression == pytest.approx(4 / 20)
    assert good.outcome.sandbox.runtime == "kubernetes" and good.outcome.sandbox.preserved
    kept = pods_of(apiserver, good.id)
    assert [p["metadata"]["name"] for p in kept] == [good.sandbox_name]
    assert kept[0]["status"]["phase"] == "Succeeded"
    assert pods_of(apiserver, bad.id) == []
    # The JUnit report came back through the log; the diff is Genesis's own.
    out = kube_app.settings.artifacts_dir / good.id / "out"
    diff = (kube_app.settings.artifacts_dir / good.id / "change.diff").read_text()
    assert "return \"complex\" if len(task.split()) > 6" in diff
    assert (out / "junit.xml").exists()


def test_a_memory_hog_is_oom_killed_on_a_pod(kube_app):
    view = run_experiment(kube_app, hostile("x = []\nwhile True:\n    x.append(bytearray(2**24))\n",
                                            resources={"cpu": 1, "memory": "128Mi", "pids": 128}))
    assert view.phase.value == "Failed" and view.outcome.error.code == "oom_killed", view.message


def test_describe_shows_why_a_gpu_pod_waits(kube_app, apiserver, capsys):
    """A GPU experiment on a node without GPUs stays pending; describe says why."""
    from helpers import request_body
    from orchestrator.cli.main import main

    kube_app.settings = kube_app.settings.model_copy(update={"gpus": ["0"]})
    config = json.loads(kube_app.config_path.read_text())
    kube_app.config_path.write_text(json.dumps({**config, "gpus": ["0"]}))
    body = request_body(resources={"cpu": 1, "memory": "256Mi", "gpu": 1}, timeout_ms=4000)
    view = run_experiment(kube_app, body)
    assert view.phase.value == "Failed" and view.outcome.error.code == "timeout", view.message
    assert main(["--config", str(kube_app.config_path), "describe", "experiment", view.id]) == 0
    printed = capsys.readouterr().out
    assert "Events:" in printed and "FailedScheduling: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu." \
        in printed, printed


def test_an_evicted_pod_is_retried_and_a_crashing_change_is_not(kube_app, apiserver):
    """Infrastructure disruptions are retried; what the change does is judged."""
    import threading
    import time

    import requests

    evicted: list[str] = []
    stop = threading.Event()

    def evict_first_experiment_pod():
        while not stop.is_set() and not evicted:
            for pod in apiserver.call(lambda s: [o.raw for (r, ns, _), o in s.objects.items()
                                                 if r.plural == "pods" and not o.deleted]):
                labels = pod["metadata"].get("labels") or {}
                if labels.get("genesis.role") == "experiment" and (pod.get("status") or {}).get("phase") == "Running":
                    requests.patch(f"{apiserver.url}/api/v1/namespaces/{NAMESPACE}/pods/"
                                   f"{pod['metadata']['name']}/status", timeout=5,
                                   headers={"Content-Type": "application/merge-patch+json"},
                                   json={"status": {"phase": "Failed", "reason": "Evicted",
                                                    "message": "The node was low on resource: memory."}})
                    evicted.append(pod["metadata"]["name"])
            time.sleep(0.05)

    thread = threading.Thread(target=evict_first_experiment_pod, daemon=True)
    thread.start()
    try:
        view = run_experiment(kube_app, hostile("import time\ntime.sleep(3)\nprint('done')\n"))
    finally:
        stop.set()
        thread.join(5)
    assert len(evicted) == 1, evicted
    assert view.phase.value == "Succeeded", view.message
    assert view.attempt >= 1 and view.sandbox_name != evicted[0]  # a new pod for the new attempt
    history = kube_app.store.history(view.id)
    assert any(h.action == "deleted" and h.reason == "disrupted: evicted" and h.sandbox_name == evicted[0]
               for h in history), [(h.action, h.reason) for h in history]
    crash = run_experiment(kube_app, hostile("import os\nos.abort()\n"))
    assert crash.phase.value == "Succeeded" and crash.recommendation.value == "rollback"
    assert crash.attempt == view.attempt - 1  # judged on its first attempt, never retried


def test_a_warm_pool_of_gated_pods_serves_the_next_experiment(kube_app, apiserver):
    """Pods are pooled warm: created behind their scheduling gate with no bundle; a claim
    writes the bundle into the pod as it lifts the gate. Same verdict, same pod spec."""
    import asyncio
    import time

    def pool_pods() -> list[dict]:
        def find(server):
            return [obj.raw for (res, ns, _), obj in server.objects.items()
                    if ns == NAMESPACE and not obj.deleted and res.plural == "pods"
                    and (obj.raw["metadata"].get("labels") or {}).get("genesis.role") == "pool"]
        return apiserver.call(find)

    def finished(experiment_id: str) -> bool:
        return kube_app.store.get(experiment_id).phase.value in ("Succeeded", "Failed")

    async def until(predicate, what: str, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.1)

    def submit(body: dict) -> str:
        return kube_app.intake.submit(json.dumps(body).encode()).view.id

    async def scenario():
        controller = kube_app.controller(leader=False)
        running = asyncio.create_task(controller.run())
        try:
            first = submit(example("good-change.yaml"))
            await until(lambda: finished(first), "the first experiment")
            await until(lambda: [p for p in pool_pods() if p["spec"].get("schedulingGates")], "a gated pool pod")
            gated = next(p for p in pool_pods() if p["spec"].get("schedulingGates"))
            second = submit(example("good-change.yaml"))
            await until(lambda: finished(second), "the claimed experiment")
            return first, second, gated
        finally:
            controller.shutdown()
            await running

    first, second, gated = asyncio.run(scenario())
    one, two = kube_app.store.get(first), kube_app.store.get(second)
    assert two.sandbox_name == gated["metadata"]["name"]
    claims = [h for h in kube_app.store.history(second) if h.action == "claimed"]
    assert len(claims) == 1 and "warm" in claims[0].reason
    assert (two.recommendation, two.outcome.metrics.test_count) == (one.recommendation, 20)
    cold = pods_of(apiserver, first)[0]["spec"]["containers"][0]
    assert gated["spec"]["containers"][0]["resources"] == cold["resources"]
    assert gated["spec"]["containers"][0]["securityContext"] == cold["securityContext"]
    # Stopped: the unclaimed pool pods were deleted; the claimed one is kept (merge).
    assert [p["metadata"]["name"] for p in pool_pods()] == [two.sandbox_name]
