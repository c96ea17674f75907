"""What a failed step leads to (orchestrator.domain.failures), whatever the
exception and the record: properties from SPEC §5-§6, then a few examples.

Retried with backoff: the infrastructure's doing, within ``backoff_limit``
attempts and never after a cancel. Final: the experiment's own failures,
with their code, and crashes of Genesis, as ``runtime_error``. Nothing:
a record that is gone or finished.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.failures import Kind, StepFailure, after_failure, classify
from orchestrator.domain.models import Phase
from orchestrator.domain.planner import Desired, Fail, Limits, Retry
from orchestrator.errors import (
    GenesisError, ImageBuildError, NotFound, RequestRejected, RuntimeFailure, SandboxGone, StoreError,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
INFRASTRUCTURE = (RuntimeFailure, SandboxGone, StoreError)
CODES = ("internal", "build_failed", "invalid_request", "patch_failed", "not_found", "runtime_error",
         "sandbox_lost", "store_error", "already_finished", "bad_config")

text = st.text(max_size=800)


@st.composite
def exceptions(draw) -> BaseException:
    kind = draw(st.sampled_from(["infrastructure", "genesis", "foreign"]))
    message = draw(text)
    if kind == "infrastructure":
        cls = draw(st.sampled_from(INFRASTRUCTURE))
        if cls is StoreError:
            return StoreError(message, transient=draw(st.booleans()))
        return cls(message, code=draw(st.sampled_from((None,) + CODES)))
    if kind == "genesis":
        cls = draw(st.sampled_from((GenesisError, RequestRejected, NotFound, ImageBuildError)))
        return cls(message, code=draw(st.sampled_from((None,) + CODES)))
    return draw(st.sampled_from((ValueError, KeyError, AssertionError, ZeroDivisionError, OSError)))(message)


@st.composite
def records(draw) -> Desired | None:
    if draw(st.integers(0, 9)) == 0:
        return None  # the record is gone
    return Desired(id="e0", instance_id="i0", phase=draw(st.sampled_from(list(Phase))), priority=0,
                   created_at=NOW - timedelta(hours=1), attempt=draw(st.integers(0, 12)),
                   cancel_requested=draw(st.booleans()))


limits_ = st.builds(Limits, backoff_limit=st.integers(1, 8), backoff_base_s=st.floats(0.01, 60),
                    backoff_max_s=st.floats(0.01, 3600))


@given(exceptions(), records(), limits_)
def test_the_decision_is_one_allowed_action_within_the_rules(exc, record, limits):
    failure = classify(exc)
    action = after_failure(record, failure, now=NOW, limits=limits)
    assert action is None or isinstance(action, (Retry, Fail))
    if record is None or record.phase.finished or failure.kind is Kind.FINISHED:
        assert action is None, "acted on a record that needs nothing"
        return
    assert action is not None and action.experiment_id == record.id, "a live record's failure went unrecorded"
    if isinstance(action, Retry):
        assert failure.kind is Kind.INFRASTRUCTURE, "retried the experiment's own failure or a crash"
        assert record.attempt < limits.backoff_limit, "retried past the backoff limit"
        assert not record.cancel_requested, "retried a cancelled experiment"
        assert NOW < action.not_before <= NOW + timedelta(seconds=limits.backoff_max_s)
    else:
        allowed = {failure.code} | ({"sandbox_lost", "cancelled"} if failure.kind is Kind.INFRASTRUCTURE else set())
        assert action.code in allowed


@given(st.sampled_from(INFRASTRUCTURE), text, records(), limits_)
def test_the_infrastructures_failures_are_retried_until_the_limit(cls, message, record, limits):
    action = after_failure(record, classify(cls(message)), now=NOW, limits=limits)
    if record is None or record.phase.finished:
        assert action is None
    elif record.cancel_requested:
        assert action == Fail(record.id, "cancelled", action.message)
    elif record.attempt < limits.backoff_limit:
        assert isinstance(action, Retry)
    else:
        assert isinstance(action, Fail) and action.code == "sandbox_lost"


@given(exceptions())
def test_classification_follows_the_exception_tree(exc):
    failure = classify(exc)
    assert len(failure.message) <= 500
    if isinstance(exc, INFRASTRUCTURE):
        assert failure.kind is Kind.INFRASTRUCTURE
    elif not isinstance(exc, GenesisError):
        assert (failure.kind, failure.code) == (Kind.CRASH, "runtime_error")
        assert failure.message.startswith(type(exc).__name__)
    elif exc.code == "already_finished":
        assert failure.kind is Kind.FINISHED
    else:
        assert (failure.kind, failure.code) == (Kind.EXPERIMENT, exc.code)


# -- examples ---------------------------------------------------------------------


def running(attempt: int = 1, **kw) -> Desired:
    return Desired(id="e0", instance_id="i0", phase=Phase.RUNNING, priority=0, created_at=NOW, attempt=attempt, **kw)


def test_a_vanished_sandbox_is_retried_after_the_backoff():
    action = after_failure(running(attempt=2), classify(SandboxGone("gone")), now=NOW, limits=Limits())
    assert action == Retry("e0", "gone", NOW + timedelta(seconds=4))


def test_a_build_failure_is_final_with_its_code():
    failure = classify(ImageBuildError("no such base"))
    assert after_failure(running(), failure, now=NOW, limits=Limits()) == Fail("e0", "build_failed", "no such base")


def test_a_crash_is_final_as_runtime_error_never_retried():
    action = after_failure(running(attempt=0), classify(KeyError("spec")), now=NOW, limits=Limits())
    assert action == Fail("e0", "runtime_error", "KeyError: 'spec'")


@pytest.mark.parametrize("phase", [Phase.SUCCEEDED, Phase.FAILED])
def test_a_record_finished_meanwhile_needs_nothing(phase):
    record = Desired(id="e0", instance_id="i0", phase=phase, priority=0, created_at=NOW)
    assert after_failure(record, classify(RuntimeFailure("down")), now=NOW, limits=Limits()) is None
    finished = StepFailure(Kind.FINISHED, "already_finished", "experiment e0 is already Succeeded")
    assert after_failure(running(), finished, now=NOW, limits=Limits()) is None
