"""What the controller does when one of an experiment's steps raises.

Two pure functions beside the planner: :func:`classify` says what an
exception means (the infrastructure's doing, the experiment's own failure,
a crash of Genesis, or a record that finished meanwhile), and
:func:`after_failure` turns that and the record into at most one planner
action. The controller applies it after removing the attempt's sandboxes;
nothing here does I/O.

The rules (SPEC §5-§6), property-tested in tests/unit/test_failures.py:

- the infrastructure's doing (the runtime, a vanished sandbox, the
  database) is retried with backoff up to ``backoff_limit`` attempts, then
  ``sandbox_lost``; a cancelled experiment is never retried
  (:func:`orchestrator.domain.planner.retry_or_fail`, shared with the planner's
  own lost and stuck records);
- a failure with its own code (the change's, the request's, a build's) is
  final, with that code;
- a crash (an exception that is not Genesis's) is final as ``runtime_error``:
  retrying a bug only repeats it;
- a record that is gone or already finished needs nothing;
- a step stopped because its controller no longer leads (``not_leader``)
  needs nothing from it: the leader of the current generation re-drives it.

A run's verdict-bearing failures (timeout, oom_killed, tampering_suspected,
...) never reach here: the pipeline concludes them itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from orchestrator.domain.planner import Desired, Fail, Limits, Retry, retry_or_fail
from orchestrator.errors import GenesisError, NotLeader, RuntimeFailure, StoreError

MESSAGE_CHARS = 500  # what of an error's text goes into the record's condition and audit trail


class Kind(str, enum.Enum):
    INFRASTRUCTURE = "infrastructure"  # runtime, sandbox or database: not the experiment's doing
    EXPERIMENT = "experiment"  # a failure of the experiment, with a code of its own
    CRASH = "crash"  # not Genesis's own exception: a bug
    FINISHED = "finished"  # the record finished under the step (another path concluded it)
    SUPERSEDED = "superseded"  # this controller's term ended: the current leader owns the record


@dataclass(frozen=True)
class StepFailure:
    """An exception of a step, as the decision needs it."""

    kind: Kind
    code: str
    message: str


def classify(exc: BaseException) -> StepFailure:
    """What ``exc`` means for the experiment whose step raised it."""
    message = f"{exc}"[:MESSAGE_CHARS]
    if isinstance(exc, NotLeader):
        return StepFailure(Kind.SUPERSEDED, exc.code, message)
    if isinstance(exc, (RuntimeFailure, StoreError)):
        return StepFailure(Kind.INFRASTRUCTURE, exc.code, message)
    if isinstance(exc, GenesisError):
        kind = Kind.FINISHED if exc.code == "already_finished" else Kind.EXPERIMENT
        return StepFailure(kind, exc.code, message)
    return StepFailure(Kind.CRASH, "runtime_error", f"{type(exc).__name__}: {exc}"[:MESSAGE_CHARS])


def after_failure(record: Desired | None, failure: StepFailure, *, now: datetime,
                  limits: Limits) -> Retry | Fail | None:
    """The one action a failed step leads to, or ``None`` when nothing is left to do."""
    if record is None or record.phase.finished or failure.kind in (Kind.FINISHED, Kind.SUPERSEDED):
        return None
    if failure.kind is Kind.INFRASTRUCTURE:
        return retry_or_fail(record, failure.message, now=now, limits=limits)
    return Fail(record.id, failure.code, failure.message)
