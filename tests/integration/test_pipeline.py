"""The Docker pipeline end to end: verdicts, preservation, rollback, caches,
and the promise that nothing outside the sandbox changes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from helpers import TEST_LABEL, RUN_ID, example, hostile, request_body, run_experiment, sandboxes_of

pytestmark = pytest.mark.docker


def tree_digest(path: Path) -> str:
    """Digest of every file under ``path`` (names, modes and bytes), .git included."""
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            full = Path(root) / name
            digest.update(str(full.relative_to(path)).encode())
            digest.update(oct(full.lstat().st_mode).encode())
            digest.update(full.read_bytes() if not full.is_symlink() else os.readlink(full).encode())
    return digest.hexdigest()


def image_workspace_digest(docker_client, tag: str) -> str:
    script = ("import hashlib,os\nh=hashlib.sha256()\nfor r,d,f in sorted(os.walk('/workspace')):\n"
              " d.sort()\n for n in sorted(f):\n  p=os.path.join(r,n); h.update(p.encode()); "
              "h.update(open(p,'rb').read())\nprint(h.hexdigest())")
    out = docker_client.containers.run(tag, ["-c", script], entrypoint="python3", remove=True,
                                       network_mode="none", labels={TEST_LABEL: RUN_ID})
    return out.decode().strip()


def test_good_change_merges_and_is_preserved_bad_change_rolls_back(app, docker_client):
    good = run_experiment(app, example("good-change.yaml"))
    bad = run_experiment(app, example("bad-change.yaml"))

    assert good.phase.value == "Succeeded" and bad.phase.value == "Succeeded", (good.message, bad.message)
    assert good.recommendation.value in ("merge", "merge_with_adaptations")
    assert bad.recommendation.value == "rollback"

    g, b = good.outcome.metrics, bad.outcome.metrics
    assert (g.success_rate, g.regression, g.test_count) == (1.0, 0.0, 20)
    assert g.llm_reduction == pytest.approx(1 / 3)  # one of three call sites removed
    assert b.failures == 4 and b.regression == pytest.approx(4 / 20)
    assert bad.outcome.baseline.success_rate == 1.0 and bad.outcome.baseline.test_count == 20
    assert g.memory_peak_mb and g.memory_peak_mb > 5 and g.cpu_usage_percent and g.cpu_usage_percent > 0

    kept = sandboxes_of(docker_client, good.id)
    assert len(kept) == 1 and kept[0].status == "exited"
    assert good.outcome.sandbox.preserved and good.preserved_until is not None
    assert sandboxes_of(docker_client, bad.id) == []
    diff = (app.settings.artifacts_dir / good.id / "change.diff").read_text()
    assert "+    return \"complex\" if len(task.split()) > 6 else \"simple\"" in diff

    deleted = [h for h in app.store.history(bad.id) if h.action == "deleted"]
    assert deleted and deleted[-1].duration_ms is not None


def test_main_repository_and_snapshot_image_are_untouched(app, docker_client, sample_repo):
    before_repo = tree_digest(sample_repo)
    first = run_experiment(app, example("bad-change.yaml"))
    image = docker_client.images.get(first.image)
    before_image = (image.id, image_workspace_digest(docker_client, first.image))

    second = run_experiment(app, example("good-change.yaml"))

    assert tree_digest(sample_repo) == before_repo
    after = docker_client.images.get(second.image)
    assert (after.id, image_workspace_digest(docker_client, second.image)) == before_image


def test_snapshot_image_and_baseline_are_built_once_per_commit(app, docker_client):
    run_experiment(app, request_body())
    images_before = {i.id for i in docker_client.images.list(filters={"label": f"{TEST_LABEL}={RUN_ID}"})}
    uses_before = {i["tag"]: i["uses"] for i in app.store.images()}

    view = run_experiment(app, request_body())

    images_after = {i.id for i in docker_client.images.list(filters={"label": f"{TEST_LABEL}={RUN_ID}"})}
    assert images_after == images_before
    assert app.store.images()[-1]["uses"] == uses_before[view.image] + 1
    running = next(c.message for c in view.conditions if c.type == "Running")  # the snapshot's note rides along
    assert f"snapshot {view.image} (cache hit" in running
    created = [h.sandbox_name for h in app.store.history(view.id) if h.action == "created"]
    assert created == [view.sandbox_name]  # no baseline sandbox the second time


def test_command_without_junit_is_judged_by_exit_code_and_custom_metrics_flow(app):
    script = ("import json\njson.dump({'fitness': 0.73, 'bogus': 'text'}, "
              "open('/genesis/out/metrics.json', 'w'))\n")
    view = run_experiment(app, hostile(script))
    metrics = view.outcome.metrics
    assert (metrics.test_count, metrics.success_rate) == (1, 1.0)
    assert metrics.custom == {"fitness": 0.73}


def test_resource_figures_come_from_cgroup_accounting(app):
    script = ("import time\nblock = bytearray(200 * 2**20)\nfor i in range(0, len(block), 4096):\n"
              "    block[i] = 1\nend = time.time() + 1.0\nwhile time.time() < end:\n    pass\n")
    view = run_experiment(app, hostile(script, resources={"cpu": 1, "memory": "512Mi", "pids": 64}))
    metrics = view.outcome.metrics
    assert 200 <= metrics.memory_peak_mb < 512
    assert 50 <= metrics.cpu_usage_percent <= 110


@pytest.mark.parametrize("overrides,code", [
    ({"repo": "nope"}, "unknown_repo"),
    ({"base_ref": "0123456789abcdef0123456789abcdef01234567"}, "unknown_commit"),
    ({"base_ref": "--upload-pack=evil"}, "unknown_commit"),
    ({"changes": {"files": [{"path": "../escape.py", "content": "x"}]}}, "invalid_path"),
    ({"changes": {"files": ["sparc/mathutil.py"]}}, "empty_change"),
    ({"resources": {"cpu": 4096}}, "invalid_request"),
    ({"resources": {"cpu": 64}}, "resources_exceeded"),
    ({"resources": {"gpu": 1}}, "resources_exceeded"),
    ({"resources": {"memory": "100Ti"}}, "resources_exceeded"),
])
def test_bad_requests_are_recorded_with_a_specific_code(app, overrides, code):
    body = request_body(**overrides)
    result = app.intake.submit(json.dumps(body).encode())
    assert result.error is not None and result.error.code == code
    stored = app.store.get(body["experiment_id"])
    assert stored.phase.value == "Failed" and stored.reason == code
    assert stored.outcome.error.code == code
    assert any(row["experiment_id"] == body["experiment_id"] for row in app.store.outbox())


def test_oversized_and_garbage_bodies_are_recorded_not_crashed(app):
    huge = json.dumps(request_body(description="x" * (5 * 2**20))).encode()
    for raw, code in ((huge, "body_too_large"), (b"\xff\xfe not json", "invalid_json"), (b"[1,2]", "invalid_request")):
        result = app.intake.submit(raw)
        assert result.error.code == code
        assert app.store.get(result.view.id).reason == code


def test_duplicate_is_acknowledged_and_conflict_is_rejected(app):
    body = request_body()
    first = app.intake.submit(json.dumps(body).encode())
    again = app.intake.submit(json.dumps(body).encode())
    assert first.created and not again.created and again.error is None
    changed = dict(body, description="something else")
    conflict = app.intake.submit(json.dumps(changed).encode())
    assert conflict.error.code == "conflict"
    assert app.store.get(body["experiment_id"]).spec.description == ""
    assert any(h.action == "conflict" for h in app.store.history(body["experiment_id"]))


def test_branch_is_resolved_to_a_commit_at_intake(app, sample_repo):
    import subprocess
    head = subprocess.run(["git", "-C", str(sample_repo), "rev-parse", "main"], capture_output=True,
                          text=True, check=True).stdout.strip()
    result = app.intake.submit(json.dumps(request_body(base_ref="main")).encode())
    assert result.view.commit == head
