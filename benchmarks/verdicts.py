"""Verdict figures: what two passes and reruns cost, flaky tests, the hostile corpus.

1. verdict cost against one run of the validation command. A repository
   whose suite takes about 20 s (40 tests of 0.5 s); through a real App
   (baseline cached first), the time from pass A's start to the finalized
   record, beside ``docker run --rm`` of the same command in the same
   snapshot image with the same limits, for three changes: one that touches
   no test file and fails nothing (one pass), one that edits a test file
   (two passes), and one real regression (pass A and its reruns).
2. flaky tests: a suite with a test that fails 35 % of the time, and an
   upstream good change submitted ``runs`` times (at most 50): how many
   verdicts were not ``merge``, in all and after the test was first seen
   flaky (labelled on its baseline key).
3. the hostile corpus of tests/integration/test_hostile_corpus.py: every
   technique once, how many were ``merge``.

Everything created carries ``genesis.bench=<run>`` and is removed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.common import BENCH_LABEL, ROOT, RUN_ID, Report, stats_ms

CPU, MEMORY, PIDS = 1, "1Gi", 256
COMMIT_AS = ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"]
SLOW_SUITE = "import time\nimport pytest\nfrom pkg import VALUE\n\n@pytest.mark.parametrize('n', range(40))\n" \
             "def test_work(n):\n    time.sleep(0.5)\n    assert n >= 0\n\n" \
             "def test_value():\n    assert VALUE < 100\n"
FLAKY_SUITE = "import random\n\ndef test_stable():\n    assert True\n\n" \
              "def test_flaky():\n    assert random.random() >= 0.35\n"
VALIDATION = ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml=/genesis/out/junit.xml"]


def _repo(root: Path, tests: str) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (root / "tests" / "test_suite.py").write_text(tests)
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), *COMMIT_AS, "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), *COMMIT_AS, "commit", "-q", "-m", "base"], check=True)
    return root


def _app(home: Path, repos: dict):
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    home.mkdir(parents=True, exist_ok=True)
    config = home / "genesis.yaml"
    config.write_text(json.dumps({
        "home": str(home), "extra_labels": {BENCH_LABEL: RUN_ID}, "pass_interval_s": 0.2,
        "installation": f"bench-verdicts-{RUN_ID}", "repos": repos, "preserve_ttl_s": 60,
    }))
    return App(load_settings(config))


def _run(app, repo: str, files: list[dict]):
    """Submit one experiment and drive it to the end; returns the final view."""
    body = {"experiment_id": str(uuid.uuid4()), "instance_id": "bench", "repo": repo, "base_ref": "main",
            "changes": {"files": files}, "resources": {"cpu": CPU, "memory": MEMORY, "pids": PIDS},
            "timeout_ms": 600_000}
    result = app.intake.submit(json.dumps(body).encode())
    assert result.error is None, result.error
    asyncio.run(app.controller(leader=False).run_until_idle(timeout_s=900))
    return app.store.get(body["experiment_id"])


def _verdict_seconds(app, view) -> float:
    """From pass A's start (SandboxRunning) to the finalized record."""
    started = next(c.last_transition_time for c in app.store.get(view.id).conditions
                   if c.reason == "SandboxRunning")
    return (view.finished_at - started).total_seconds()


def _direct_run(image: str) -> float:
    command = ["docker", "run", "--rm", "--network", "none", "--user", "1000:1000",
               "--label", f"{BENCH_LABEL}={RUN_ID}", "--cpus", str(CPU), "--memory", "1g", "--memory-swap", "1g",
               "--pids-limit", str(PIDS), "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--init",
               "--tmpfs", "/tmp:rw,nosuid,nodev,size=256m", "--tmpfs", "/genesis/out:rw,nosuid,nodev,uid=1000,gid=1000",
               "--entrypoint", VALIDATION[0], image, *VALIDATION[1:]]
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, check=False)
    return time.perf_counter() - started


def cost(report: Report, scratch: Path, *, runs: int) -> None:
    app = _app(scratch / "cost-home", {"slow": {"path": str(_repo(scratch / "slow", SLOW_SUITE))}})
    try:
        first = _run(app, "slow", [{"path": "pkg/__init__.py", "content": "VALUE = 2\n"}])  # fills the baseline cache
        image = first.image
        changes = {
            "no test edits, nothing fails (1 pass)": [{"path": "pkg/__init__.py", "content": "VALUE = 3\n"}],
            "test edits (2 passes)": [{"path": "tests/test_more.py", "content": "def test_more():\n    pass\n"}],
            "one real regression (pass A + reruns)": [{"path": "pkg/__init__.py", "content": "VALUE = 1000\n"}],
        }
        direct = [_direct_run(image) for _ in range(max(runs, 1))]
        base = stats_ms([d * 1000 for d in direct])["median_ms"] / 1000
        report.add("verdict cost: one validation run, docker run --rm (s)", f"{base:.1f}", f"{base:.1f}", "1.00x")
        data = {"direct_s": direct}
        for name, files in changes.items():
            seconds, passes = [], []
            for _ in range(max(runs, 1)):
                view = _run(app, "slow", files)
                seconds.append(_verdict_seconds(app, view))
                doc = view.outcome.tests or {}
                passes.append(f"{doc.get('passes')} pass(es), {doc.get('reruns')} rerun(s), "
                              f"{view.recommendation.value if view.recommendation else view.reason}")
            median = stats_ms([s * 1000 for s in seconds])["median_ms"] / 1000
            data[name] = {"seconds": seconds, "runs": passes}
            goal = "  goal <= 1.05x" if "1 pass" in name else ""
            report.add(f"  {name} (s)", f"{median:.1f} [{passes[0]}]", f"{base:.1f} (docker run)",
                       f"{median / base:.2f}x{goal}")
        report.data["verdict_cost"] = data
    finally:
        app.close()


def flaky(report: Report, scratch: Path, *, runs: int) -> None:
    app = _app(scratch / "flaky-home", {"flaky": {"path": str(_repo(scratch / "flaky", FLAKY_SUITE))}})
    count = min(max(runs, 1), 50)
    wrong, wrong_after, first_seen = 0, 0, None
    try:
        for index in range(count):
            view = _run(app, "flaky", [{"path": "pkg/__init__.py", "content": f"VALUE = {index}\n"}])
            merged = view.recommendation is not None and view.recommendation.value == "merge"
            if not merged:
                wrong += 1
                wrong_after += first_seen is not None
            labelled = (view.outcome.tests or {}).get("FLAKY", {}).get("count", 0) or \
                any("test_flaky" in t for t in _stored_flaky(app))
            if first_seen is None and labelled:
                first_seen = index
    finally:
        app.close()
    report.add(f"flaky test (fails 35 %): verdicts not merge, of {count}", str(wrong), "goal <= 1", "")
    report.add("  after the test was first seen flaky", str(wrong_after),
               f"first seen at run {first_seen if first_seen is not None else '-'}", "goal 0")
    report.data["flaky"] = {"runs": count, "misjudged": wrong, "misjudged_after_seen": wrong_after,
                            "first_seen": first_seen}


def _stored_flaky(app) -> list[str]:
    from sqlalchemy import select

    from orchestrator.store.tables import BaselineRow

    with app.store._tx() as session:
        return [t for row in session.scalars(select(BaselineRow)) for t in (row.flaky or [])]


def corpus(report: Report) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    spec = importlib.util.spec_from_file_location("hostile_corpus",
                                                  ROOT / "tests" / "integration" / "test_hostile_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with tempfile.TemporaryDirectory(prefix="genesis-bench-corpus-") as scratch:
        home = Path(scratch)
        repo = module.make_repo(home / "monorepo")
        app = _app(home, {"monorepo": {"path": str(repo)}})
        try:
            broken = module.broken_source(app)
            merges, outcomes = 0, {}
            for name, files in module.techniques(app).items():
                view = _run(app, "monorepo", [{"path": "sparc/decompose.py", "content": broken}, *files])
                outcome = view.outcome
                merges += outcome.recommendation.value == "merge"
                outcomes[name] = outcome.error.code if outcome.error else outcome.recommendation.value
        finally:
            app.close()
    report.add(f"hostile corpus: techniques tried, merges", f"{len(outcomes)} tried, {merges} merged", "goal 0", "")
    report.data["corpus"] = outcomes


def run(report: Report, *, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="genesis-bench-verdicts-") as scratch:
        cost(report, Path(scratch), runs=min(runs, 3))
        flaky(report, Path(scratch), runs=runs)
    corpus(report)
