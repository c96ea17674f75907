"""Figures for the kubernetes runtime, beside the baseline each one names.

1. listing sandboxes for a controller pass: the runtime's watch-fed cache
   against a direct LIST with the same label selector, N pods in the API
   emulator (tests/k8s/kubeapi.py: kmock's emulator over localhost HTTP).
2. API requests per sandbox lifecycle (create, start, wait, collect, remove).
3. the read-only root's price: on Kubernetes the runner copies /workspace
   into an emptyDir before applying the change. The pod's container
   settings (read-only root, emptyDirs as tmpfs, the same env) are run
   with Docker on a 10 MB and a large synthetic repo; the runner's own
   ``workspace_copy_ms`` against the Docker runtime's copy-on-write setup.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from kubernetes import client as k8s

from benchmarks.common import BENCH_LABEL, RUN_ID, ROOT, Report, git, stats_ms
from benchmarks.sandbox import CHANGE, VALIDATION, synthetic_repo
from orchestrator.runtimes.base import SandboxSpec
from orchestrator.runtimes.docker import DockerRuntime
from orchestrator.runtimes.docker_images import DockerImages
from orchestrator.runtimes.kubernetes import KubernetesRuntime
from orchestrator.runtimes.kubernetes_pods import PodOptions, encode_bundle, pod_manifest
from orchestrator.settings import PROJECT_ROOT, RepoConfig
from orchestrator.snapshots.builder import SnapshotBuilder

sys.path.insert(0, str(ROOT / "tests" / "k8s"))
from kubeapi import RunningApiServer  # noqa: E402 - the emulator lives with the tests

NAMESPACE = "genesis-sandboxes"
SELECTOR = {"genesis.managed-by": "genesis", "genesis.installation": "bench"}


def _spec(name: str) -> SandboxSpec:
    return SandboxSpec(name=name, image="genesis/snapshot:bench", labels={**SELECTOR, BENCH_LABEL: RUN_ID},
                       bundle=json.dumps({"changes": CHANGE, "validation": VALIDATION}).encode(),
                       cpu=1, memory_bytes=2**28, pids=128, timeout_s=60)


def _runtime(server: RunningApiServer) -> KubernetesRuntime:
    configuration = k8s.Configuration()
    configuration.host = server.url
    return KubernetesRuntime(k8s.ApiClient(configuration), PodOptions(namespace=NAMESPACE), selector=SELECTOR,
                             watch_timeout_s=60, request_timeout_s=30)


def listing(report: Report, *, pods: int, runs: int) -> None:
    with RunningApiServer() as server:
        session = requests.Session()
        for index in range(pods):
            session.post(f"{server.url}/api/v1/namespaces/{NAMESPACE}/pods", timeout=10,
                         json=pod_manifest(_spec(f"genesis-bench-{index}"), PodOptions(namespace=NAMESPACE)))
        runtime = _runtime(server)
        assert len(asyncio.run(runtime.list(SELECTOR))) == pods  # synced
        core = k8s.CoreV1Api(runtime._api)
        cached, direct = [], []
        for _ in range(runs):
            started = time.perf_counter()
            asyncio.run(runtime.list(SELECTOR))
            cached.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            core.list_namespaced_pod(NAMESPACE, label_selector="genesis.installation=bench,genesis.managed-by=genesis",
                                     _preload_content=False).data
            direct.append((time.perf_counter() - started) * 1000)
        c, d = stats_ms(cached), stats_ms(direct)
        report.data["k8s_list"] = {"pods": pods, "cache": c, "direct_list": d}
        report.add(f"k8s list {pods} pods, watch cache vs LIST (ms)", f"{c['median_ms']:.1f}", f"{d['median_ms']:.1f}",
                   f"{c['median_ms'] / d['median_ms']:.2f}x")
        # 2. requests per lifecycle, the kubelet's status write done by hand
        before = len(server.requests())
        name = "genesis-bench-lifecycle"
        asyncio.run(runtime.create(_spec(name)))
        asyncio.run(runtime.start(name))
        session.patch(f"{server.url}/api/v1/namespaces/{NAMESPACE}/pods/{name}/status", timeout=10,
                      headers={"Content-Type": "application/merge-patch+json"},
                      json={"status": {"phase": "Succeeded", "containerStatuses": [{
                          "name": "sandbox", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
                          "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}})
        asyncio.run(runtime.wait(name, timeout_s=10))
        asyncio.run(runtime.collect(name, max_file_bytes=2**20))
        asyncio.run(runtime.remove(name))
        calls = [r for r in server.requests()[before:] if r.headers.get("User-Agent", "").startswith("OpenAPI")]
        report.data["k8s_requests_per_sandbox"] = len(calls)
        report.add("k8s API requests per sandbox (create..remove)", str(len(calls)), "-", "")
        runtime.close()


def _pod_like_run(image: str, bundle_dir: str) -> dict:
    """The runner with the pod's container settings; returns its result document."""
    out = subprocess.run(
        ["docker", "run", "--rm", "--read-only", "--network", "none", "--user", "1000:1000",
         "--label", f"{BENCH_LABEL}={RUN_ID}", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
         "--tmpfs", "/genesis/work:rw,size=4g,uid=1000,gid=1000", "--tmpfs", "/genesis/out:rw,uid=1000,gid=1000",
         "--tmpfs", "/tmp:rw,size=256m", "-v", f"{bundle_dir}:/genesis/in:ro", "-w", "/genesis/work",
         "-e", "GENESIS_WORKSPACE=/genesis/work", "-e", "GENESIS_SEED_FROM=/workspace", image],
        capture_output=True, text=True, check=True).stdout
    line = [x for x in out.splitlines() if x.startswith("GENESIS-RESULT ")][-1]
    return json.loads(line[len("GENESIS-RESULT "):])


def workspace_copy(report: Report, *, runs: int, big_mb: int) -> None:
    runtime = DockerRuntime()
    builder = SnapshotBuilder(DockerImages(runtime.client), images_dir=PROJECT_ROOT / "images",
                              base_image=os.environ.get("GENESIS_BASE_IMAGE", "genesis/base:bookworm"),
                              extra_labels={BENCH_LABEL: RUN_ID})
    with tempfile.TemporaryDirectory(prefix="genesis-bench-") as scratch:
        bundle_dir = Path(scratch) / "in"
        bundle_dir.mkdir()
        (bundle_dir / "bundle.gz.b64").write_text(
            encode_bundle(json.dumps({"changes": CHANGE, "validation": VALIDATION}).encode()))
        bundle_dir.chmod(0o755)
        figures = {}
        for megabytes in (10, big_mb):
            repo = synthetic_repo(Path(scratch), megabytes=megabytes)
            snap = asyncio.run(builder.ensure(repo_name=f"bench-{RUN_ID}-{megabytes}mb", repo=RepoConfig(path=repo),
                                              commit=git(repo, "rev-parse", "HEAD").strip()))
            results = [_pod_like_run(snap.tag, str(bundle_dir)) for _ in range(runs)]
            assert all(r["status"] == "completed" for r in results), results[-1]
            figures[megabytes] = (stats_ms([r["workspace_copy_ms"] for r in results]),
                                  stats_ms([r["validation_started_ms"] - r["runner_started_ms"] for r in results]))
    (small_copy, small_setup), (big_copy, big_setup) = figures[10], figures[big_mb]
    report.data["k8s_workspace_copy"] = {"10MB": {"copy": small_copy, "setup": small_setup},
                                         f"{big_mb}MB": {"copy": big_copy, "setup": big_setup}}
    report.add(f"k8s pod setup in the runner, {big_mb}MB vs 10MB repo (ms)", f"{big_setup['median_ms']:.0f}",
               f"{small_setup['median_ms']:.0f}", f"{big_setup['median_ms'] / max(small_setup['median_ms'], 1):.1f}x")
    report.add(f"  of which the /workspace copy (read-only root), {big_mb}MB / 10MB (ms)",
               f"{big_copy['median_ms']:.0f}", f"{small_copy['median_ms']:.0f}",
               "docker runtime: 0 (copy-on-write)")
    runtime.close()


def run(report: Report, *, runs: int, big_mb: int, pods: int = 500) -> None:
    listing(report, pods=pods, runs=runs)
    workspace_copy(report, runs=max(3, runs // 4), big_mb=big_mb)
