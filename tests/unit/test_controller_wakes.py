"""Which step ends wake a controller pass (``orchestrator.controller.loop.ends_quietly``)."""

import pytest

from orchestrator.controller.loop import ends_quietly
from orchestrator.domain.models import Phase
from orchestrator.domain.records import ExperimentView


def view(phase: Phase) -> ExperimentView:
    return ExperimentView.model_construct(id="e1", phase=phase)


def test_a_start_that_left_its_sandbox_running_wakes_no_pass():
    assert ends_quietly(view(Phase.RUNNING), exit_events=True, exits_since=0)


def test_an_exit_told_of_while_the_start_ran_wakes_a_pass():
    # That exit's pass found the step in flight and left the sandbox alone: only a pass now collects it.
    assert not ends_quietly(view(Phase.RUNNING), exit_events=True, exits_since=1)


def test_without_exit_events_every_end_wakes_a_pass():
    assert not ends_quietly(view(Phase.RUNNING), exit_events=False, exits_since=0)


@pytest.mark.parametrize("phase", [Phase.BUILDING, Phase.COLLECTING, Phase.SUCCEEDED, Phase.FAILED])
def test_any_other_phase_wakes_a_pass(phase):
    # Waiting for a baseline, a verdict that frees a slot, a failure: the planner has work.
    assert not ends_quietly(view(phase), exit_events=True, exits_since=0)


@pytest.mark.parametrize("result", [None, "done", 3])
def test_a_step_that_raised_or_returned_no_record_wakes_a_pass(result):
    assert not ends_quietly(result, exit_events=True, exits_since=0)
