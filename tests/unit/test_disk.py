"""Disk quotas, the pure parts: what a storage driver can cap, the size given to the
engine, when a run counts as out of disk, what start-up and ``describe`` say, and the
request's ``resources.disk`` at intake (orchestrator/domain/disk.py, intake.py)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pytest

from orchestrator.domain import disk
from orchestrator.domain.intake import IntakeLimits, parse_request
from orchestrator.errors import RequestRejected
from orchestrator.pipeline.passes import Failure, Run, failure_of, judge
from orchestrator.domain.models import Validation
from orchestrator.runtimes.base import SandboxOutput, SandboxState

MI = 2**20


@pytest.mark.parametrize("driver,status,enforced,storage", [
    ("btrfs", [["Build Version", "Btrfs v6.2"]], True, "btrfs"),
    ("overlay2", [["Backing Filesystem", "xfs"], ["Supports d_type", "true"]], True, "overlay2 on xfs"),
    ("overlay2", [["Backing Filesystem", "extfs"]], False, "overlay2 on extfs"),
    ("zfs", [], True, "zfs"),
    ("vfs", None, False, "vfs"),
    ("", [], False, ""),
])
def test_which_storage_drivers_can_cap_a_container(driver, status, enforced, storage):
    assert disk.quota_support(driver, status) == disk.QuotaSupport(enforced, storage)


def test_the_engine_is_given_the_images_size_plus_what_the_sandbox_may_write():
    assert disk.storage_size(200 * MI, 262_415_727) == 262_415_727 + 200 * MI


@pytest.mark.parametrize("used,quota,full", [
    (184 * MI, 200 * MI, True),  # where btrfs stopped dd under a 200 MiB quota
    (199 * MI, 200 * MI, True),
    (100 * MI, 200 * MI, False),
    (None, 200 * MI, False),  # not measured
    (500 * MI, None, False),  # no quota: nothing to exceed
])
def test_a_layer_within_btrfs_slack_of_its_quota_is_full(used, quota, full):
    assert disk.exceeded(used_bytes=used, quota_bytes=quota) is full


@pytest.mark.parametrize("error,quota,full", [
    # what the engine answered when collecting a layer its change had filled (btrfs re-applies the limit)
    ("Failed to limit qgroup for &{}: disk quota exceeded", 200 * MI, True),
    ("Failed to limit qgroup for &{}: disk quota exceeded", None, False),  # uncapped: not its quota
    ("Could not find the file /genesis/out in container", 200 * MI, False),
])
def test_an_engine_that_will_not_open_a_capped_layer_at_its_quota_means_full(error, quota, full):
    assert disk.refused_full(error, quota_bytes=quota) is full


def test_start_up_warns_or_refuses_only_where_quotas_cannot_be_enforced():
    assert disk.startup_problem(enforced=True, storage="btrfs", mode="refuse", runtime="docker") is None
    level, message = disk.startup_problem(enforced=False, storage="overlay2 on extfs", mode="warn", runtime="docker")
    assert level == "warning" and "overlay2 on extfs" in message and "no disk limit" in message
    level, message = disk.startup_problem(enforced=False, storage="overlay2 on extfs", mode="refuse",
                                          runtime="docker")
    assert level == "error" and "does not start" in message


def test_describe_note_says_when_disk_was_not_enforced():
    assert disk.note(enforced=False, storage="overlay2 on extfs") == " (not enforced: overlay2 on extfs)"
    assert disk.note(enforced=True, storage="btrfs") == ""
    assert disk.note(enforced=None, storage=None) == ""  # no sandbox yet: nothing known


# -- intake ---------------------------------------------------------------------------

def body(**resources) -> str:
    return json.dumps({"experiment_id": str(uuid.uuid4()), "instance_id": "i", "repo": "r", "base_ref": "main",
                       "changes": {"files": [{"path": "a.py", "content": "x\n"}]},
                       "resources": {"cpu": 1, "memory": "256Mi", **resources}})


def test_a_request_without_disk_gets_the_default_and_one_past_the_max_is_refused():
    limits = IntakeLimits(max_memory_bytes=2**30, default_disk="10Gi", max_disk_bytes=64 * 2**30)
    assert parse_request(body(), limits).resources.disk_bytes == 10 * 2**30
    assert parse_request(body(disk="2Gi"), limits).resources.disk_bytes == 2 * 2**30
    with pytest.raises(RequestRejected) as info:
        parse_request(body(disk="100Gi"), limits)
    assert info.value.code == "resources_exceeded" and "disk 100Gi" in str(info.value)
    with pytest.raises(RequestRejected) as info:
        parse_request(body(disk="1Mi"), limits)
    assert info.value.code == "invalid_request"
    assert parse_request(body(), IntakeLimits(max_memory_bytes=2**30)).resources.disk is None


def test_the_default_disk_reaches_a_request_with_no_resources_and_leaves_its_dict_alone():
    limits = IntakeLimits(max_memory_bytes=2**30, default_disk="10Gi", max_disk_bytes=64 * 2**30)
    data = json.loads(body())
    del data["resources"]
    assert parse_request(data, limits).resources.disk_bytes == 10 * 2**30
    assert "resources" not in data


# -- a run out of disk ----------------------------------------------------------------

APPLIED = 'GENESIS-APPLIED {"validation_started_ms": 1}\n'


def run(*, used=None, quota=None, log="", head="", files=None, reason=None, exit_code=1) -> Run:
    state = SandboxState(name="s", status="exited", exit_code=exit_code, reason=reason,
                         finished_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    output = SandboxOutput(files=files or {}, log_tail=log, disk_used_bytes=used, disk_quota_bytes=quota)
    return Run("s", state, output, head, log)


def test_a_layer_at_its_quota_fails_disk_exceeded_before_any_report_is_read():
    failure = failure_of(run(used=190 * MI, quota=200 * MI))
    assert failure is not None and failure.code == "disk_exceeded" and "190 MiB written of 200 MiB" in str(failure)
    assert failure_of(run(used=10 * MI, quota=200 * MI)) is None
    assert failure_of(run(reason="disk_exceeded")).code == "disk_exceeded"  # a pod evicted past its limit


def test_enospc_in_the_log_of_a_run_that_left_no_result_is_disk_exceeded_not_retried():
    with pytest.raises(Failure) as info:
        judge(run(quota=200 * MI, used=20 * MI, log="OSError: [Errno 28] No space left on device\n"),
              Validation(command=["true"], report="exit_code"))
    assert info.value.code == "disk_exceeded"


def test_the_log_alone_never_makes_an_unbounded_run_disk_exceeded():
    from orchestrator.errors import SandboxGone
    with pytest.raises(SandboxGone):  # no quota was set: the words are only words (retried as before)
        judge(run(log="No space left on device\n"), Validation(command=["true"], report="exit_code"))
