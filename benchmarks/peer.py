"""A published peer beside Genesis and raw Docker: llm-sandbox (PyPI), on
the same snapshot image, the same trivial and real validations, one after
another (what an agent waiting on each verdict sees).

* trivial: ``true`` in the sample monorepo's snapshot image;
* real: the sample monorepo's test suite (20 pytest tests) with a one-file
  change applied.

Genesis: an experiment end to end (recorded, admitted, sandbox created with
the change, tests run, graded against its cached baseline, torn down),
submit to verdict. llm-sandbox: a ``SandboxSession`` on the Docker backend
(open, copy the change in, run, close) as its defaults have it, and again
with ``container.stop`` given no grace period, since its default close
spends Docker's 10 s stop timeout on a shell that ignores SIGTERM. Raw
Docker: ``docker run --rm`` of the same command, the change bind-mounted
in. Every container carries the ``genesis.bench`` label.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.common import BENCH_LABEL, ROOT, RUN_ID, Report

CHANGED = "sparc/decompose.py"  # a file of the sample monorepo the change rewrites as it is
TRIVIAL, REAL = ["true"], ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
LIMITS = {"cpu": 1, "memory": "512Mi", "pids": 256}


def _genesis(app, body: dict) -> float:
    started = time.perf_counter()
    result = app.intake.submit(json.dumps(dict(body, experiment_id=str(uuid.uuid4()))).encode())
    asyncio.run(app.controller(leader=False).run_until_idle())
    seconds = time.perf_counter() - started
    view = app.store.get(result.view.id)
    assert view.phase.value == "Succeeded", (view.phase, view.message)
    return seconds


def _raw(image: str, command: list[str], change: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", "--network", "none", "--label", f"{BENCH_LABEL}={RUN_ID}",
                    "--cpus", "1", "--memory", "512m", "--pids-limit", "256", "-w", "/workspace",
                    "-v", f"{change}:/workspace/{CHANGED}:ro", "--entrypoint", command[0], image, *command[1:]],
                   check=True, capture_output=True)
    return time.perf_counter() - started


def _peer(image: str, command: list[str], change: Path, *, quick_stop: bool) -> float:
    from llm_sandbox import SandboxSession

    configs = {"network_mode": "none", "nano_cpus": 10**9, "mem_limit": "512m", "pids_limit": 256,
               "labels": {BENCH_LABEL: RUN_ID}, "entrypoint": ["/bin/sh"]}
    started = time.perf_counter()
    with SandboxSession(lang="python", image=image, keep_template=True, skip_environment_setup=True,
                        runtime_configs=configs, workdir="/workspace") as session:
        if quick_stop:
            stop = session.container.stop
            session.container.stop = lambda **kwargs: stop(timeout=0)
        session.copy_to_runtime(str(change), f"/workspace/{CHANGED}")
        result = session.execute_command(" ".join(command), workdir="/workspace")
        assert result.exit_code == 0, result.stderr[-2000:]
    return time.perf_counter() - started


def run(report: Report, *, runs: int) -> None:
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    runs = max(3, min(runs, 10))
    with tempfile.TemporaryDirectory(prefix="genesis-bench-peer-") as scratch_dir:
        scratch = Path(scratch_dir)
        subprocess.run([str(ROOT / "scripts" / "make-sample-repo.sh"), str(scratch / "repo")], check=True,
                       capture_output=True)
        change = scratch / "changed.py"
        change.write_text((scratch / "repo" / CHANGED).read_text() + "\n# an edit\n")
        change.chmod(0o644)
        config = scratch / "genesis.yaml"
        config.write_text(json.dumps({"home": str(scratch / "home"), "extra_labels": {BENCH_LABEL: RUN_ID},
                                      "repos": {"monorepo": {"path": str(scratch / "repo"),
                                                             "allow_validation_override": True}},
                                      "pass_interval_s": 0.05, "preserve_ttl_s": 0}))
        app = App(load_settings(config))
        files = {"files": [{"path": CHANGED, "content": change.read_text()}]}
        bodies = {"trivial": {"instance_id": "bench", "repo": "monorepo", "base_ref": "main", "changes": files,
                              "validation": {"command": TRIVIAL, "report": "exit_code"}, "resources": LIMITS},
                  "real": {"instance_id": "bench", "repo": "monorepo", "base_ref": "main", "changes": files,
                           "resources": LIMITS}}
        try:
            for body in bodies.values():
                _genesis(app, body)  # warm: snapshot image and baseline exist before timing
            image = app.store.images()[-1]["tag"]
            figures: dict[str, dict[str, list[float]]] = {}
            for kind, command in (("trivial", TRIVIAL), ("real", REAL)):
                samples = figures[kind] = {"genesis": [], "raw": [], "peer": [], "peer_quick": []}
                for _ in range(runs):
                    samples["genesis"].append(_genesis(app, bodies[kind]))
                    samples["raw"].append(_raw(image, command, change))
                    samples["peer_quick"].append(_peer(image, command, change, quick_stop=True))
                for _ in range(min(runs, 3)):  # ~10 s each, nearly all of it Docker's stop timeout
                    samples["peer"].append(_peer(image, command, change, quick_stop=False))
        finally:
            app.close()
    report.data["peer"] = figures
    for kind, samples in figures.items():
        med = {name: statistics.median(values) * 1000 for name, values in samples.items()}
        report.add(f"{kind} validation, one after another: Genesis, submit → verdict (ms)", f"{med['genesis']:.0f}",
                   f"{med['raw']:.0f} (docker run --rm)", f"{med['raw'] / med['genesis']:.2f}x")
        report.add("  llm-sandbox session, its defaults / stop without grace (ms)",
                   f"{med['peer']:.0f} / {med['peer_quick']:.0f}", f"{med['genesis']:.0f} (Genesis)",
                   f"{med['peer'] / med['genesis']:.2f}x / {med['peer_quick'] / med['genesis']:.2f}x")
