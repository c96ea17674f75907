"""One validation run in its own sandbox, and what Genesis believes about it.

Every run (the baseline's repetitions, an experiment's pass A and pass B,
and the reruns of pass A) starts from a pristine sandbox: the snapshot
image plus a set of file writes, never a workspace a run has written.

What a run's evidence is made of, most trusted first (see
:mod:`orchestrator.domain.evidence`): the runtime's record of the sandbox
(exit status, end time, OOM kill, disruption), the runner's first log line
(``GENESIS-APPLIED``), then what the validation's processes wrote (the
JUnit report, the runner's closing document, the test runner's summary, the
audit hook's ``GENESIS-AUDIT`` lines), which are only cross-checked. The
cause wins over the symptom (SPEC §5): cancelled, timeout, oom_killed,
disk_exceeded (the runtime measured the writable layer at its quota),
patch_failed and the infrastructure's own doing are decided before any
report is read.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import aclosing
from dataclasses import dataclass, replace

from orchestrator.domain import disk, evidence, results
from orchestrator.domain.junit import TestReport, from_exit_code, parse_junit
from orchestrator.domain.models import Validation
from orchestrator.domain.records import AuditLine
from orchestrator.domain.scoring import RunFacts
from orchestrator.errors import GenesisError, RequestRejected, SandboxGone
from orchestrator.pipeline import lifecycle
from orchestrator.pipeline.pools import Pools, profile_of
from orchestrator.runtimes.base import LABEL_ROLE, Runtime, SandboxOutput, SandboxSpec, SandboxState
from orchestrator.store.aio import AsyncStore
from orchestrator.telemetry import metrics

CANCEL_POLL_S = 1.0  # how often a run this step waits for checks for `genesis delete`
HEAD_BYTES = 1 << 20  # how much of a log's beginning is read for the runner's first line
AUDIT_MARKER = "GENESIS-AUDIT "
HEAD_WAIT_S = 10.0  # how long, after the sandbox ended, its log's beginning may still take


class Failure(Exception):
    """An experiment ends as Failed with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Run:
    """A finished sandbox, as collected."""

    name: str
    state: SandboxState
    output: SandboxOutput
    head: str  # the log's beginning (the runner's first line is there)
    log: str  # the log's tail (the runtime's, SandboxOutput.log_tail)
    timed_out: bool = False
    cancelled: bool = False


@dataclass(frozen=True)
class Evidence:
    """What Genesis believes about one run."""

    report: TestReport
    facts: RunFacts
    audit: tuple[str, ...]


def failure_of(run: Run) -> Failure | None:
    """The cause, when the run ended for a reason other than its tests (decided first)."""
    result = results.parse_runner_result(run.output.files, run.output.log_tail)
    if run.cancelled:
        return Failure("cancelled", "cancelled by request while running")
    if run.timed_out or run.state.reason == "deadline_exceeded":
        return Failure("timeout", "the sandbox ran past timeout_ms and was killed")
    if run.state.oom_killed:
        return Failure("oom_killed", "the sandbox exceeded its memory limit and was killed by the kernel")
    if run.state.reason == "disk_exceeded" or disk.exceeded(used_bytes=run.output.disk_used_bytes,
                                                          quota_bytes=run.output.disk_quota_bytes):
        return Failure("disk_exceeded", _disk_message(run))
    if evidence.applied_marker(run.head) is None and result.status == "patch_failed":
        return Failure("patch_failed", result.message or "the change did not apply")
    return None


def judge(run: Run, validation: Validation) -> Evidence:
    """The run's evidence, or ``SandboxGone`` (the infrastructure's doing: retried)
    or a :class:`Failure` (``tampering_suspected``, ``evidence_inconsistent``)."""
    if run.state.disrupted:
        raise SandboxGone(f"sandbox {run.name} was ended by the infrastructure ({run.state.reason}: "
                          f"{run.state.message or 'no message'})")
    files = run.output.files
    audit = tuple(line[len(AUDIT_MARKER):][:400] for line in (run.head + "\n" + run.log).splitlines()
                  if line.startswith(AUDIT_MARKER))
    if audit:  # the cause: whatever else the run left is its symptom
        raise Failure("tampering_suspected", "the change reached into the test runner or its evidence at run "
                                             "time: " + "; ".join(sorted(set(audit))[:5]))
    result = results.parse_runner_result(files, run.output.log_tail)
    applied = evidence.applied_marker(run.head)
    if applied is None or result.status != "completed":
        if run.output.disk_quota_bytes and disk.full_in_log(run.head + "\n" + run.log):
            # The runner could not even write its result: the quota is the cause. The log is
            # the change's word, but it can only make this run a failure, never a verdict.
            raise Failure("disk_exceeded", _disk_message(run))
        # Killed from outside (daemon restart, host OOM, a node going away), or a
        # runner killed by what it ran: never a verdict, retried up to the backoff limit.
        raise SandboxGone(f"sandbox {run.name} ended without a result ({result.status}, "
                          f"exit {run.state.exit_code})")
    exit_code = run.state.exit_code if run.state.exit_code is not None else -1
    engine_ms = None
    if run.state.finished_at is not None:
        engine_ms = max(int(run.state.finished_at.timestamp() * 1000) - applied.validation_started_ms, 0)
    documents = results.junit_documents(files)
    if validation.report == "junit":
        report = parse_junit(documents) if documents else TestReport()
    else:
        report = from_exit_code(exit_code)
    why = evidence.inconsistency(report_kind=validation.report, report=report, has_report=bool(documents),
                                 truncated=list(run.output.truncated), exit_code=exit_code,
                                 runner_exit=result.exit_code, runner_runtime_ms=result.runtime_ms,
                                 engine_runtime_ms=engine_ms, log_text=run.log)
    if why is not None:
        raise Failure("evidence_inconsistent", f"{run.name}: {why}")
    facts = results.run_facts(result, files)
    return Evidence(report=report, facts=facts, audit=audit)


def _disk_message(run: Run) -> str:
    quota, used = run.output.disk_quota_bytes, run.output.disk_used_bytes
    figures = f" ({used // 2**20} MiB written of {quota // 2**20} MiB)" if quota and used is not None else ""
    return (f"the sandbox ran out of its disk quota (resources.disk){figures}: writes failed with ENOSPC"
            + (f"; {run.state.message}" if run.state.message else ""))


@dataclass(frozen=True)
class Launched:
    name: str  # the sandbox's name: the requested one, or the pooled sandbox claimed
    created_wall_ms: int
    tier: str  # hot | warm (claimed from a pool) | cold (made for it)
    audits: tuple[AuditLine, ...] = ()  # its lines, for the caller's next write (see Sandboxes.launch)


class Sandboxes:
    """Creates (or claims), waits for, collects and removes the sandboxes of one step."""

    def __init__(self, *, runtime: Runtime, store: AsyncStore, actor: str, max_file_bytes: int,
                 pools: Pools | None = None) -> None:
        self.runtime, self.store, self.actor, self.max_file_bytes = runtime, store, actor, max_file_bytes
        self.pools = pools
        self._uids: dict[str, str] = {}  # name -> the runtime's id of what this process created
        self._heads: dict[str, asyncio.Task] = {}  # name -> its log's beginning, read while it runs

    def uid(self, name: str) -> str | None:
        """The runtime's id of the sandbox this process created as ``name``."""
        return self._uids.get(name)

    async def launch(self, spec: SandboxSpec, *, experiment_id: str, pooled: bool = False,
                     resumed: bool = False) -> Launched:
        """Create (bundle delivered) and start one sandbox, or with ``pooled`` claim a
        ready one of its profile from the warm pools (:mod:`orchestrator.pipeline.pools`).

        A leftover under this name (an interrupted attempt whose leader's lease
        has lapsed, since this process now holds it) is removed by its own id
        first; creation is then a compare-and-set on the name, so a former
        leader that wakes up and creates it too fails instead of sharing it.

        The launch's audit lines (created, changes_applied, started) come back in
        ``Launched.audits`` for the caller to write with its next change of the record,
        in one transaction; if the launch fails, they are written before the error leaves.

        ``resumed``: a start run again after one was cut short (a restart, a takeover). A pooled
        sandbox that start had claimed may be running its bundle: it is removed before
        another is claimed, so the experiment never has two at once."""
        created_wall_ms = int(time.time() * 1000)
        started = time.monotonic()
        if pooled and resumed and self.pools is not None and self.pools.enabled:
            for name, uid in await self.store.claimed_by(experiment_id):
                await self.teardown(experiment_id, name, uid=uid or None, reason="leftover of an interrupted run")
        if pooled and self.pools is not None and self.pools.enabled:
            claimed = await self.pools.claim(spec, experiment_id=experiment_id)
            if claimed is not None:
                self._uids[claimed.name] = claimed.uid or ""
                applied = AuditLine(claimed.name, "changes_applied", "bundle delivered on stdin",
                                    {"bundle_bytes": len(spec.bundle), "tier": claimed.tier,
                                     "claim_ms": round(claimed.seconds * 1000, 1)})
                self._heads[claimed.name] = asyncio.create_task(self._log_head(claimed.name, follow=True))
                metrics.observe_phase("sandbox_start", time.monotonic() - started)
                return Launched(claimed.name, created_wall_ms, claimed.tier, (applied,))
            if profile_of(spec) is not None:
                metrics.POOL_CLAIMS.labels(tier="cold").inc()
        leftover = await self.runtime.inspect(spec.name)
        if leftover.status != "missing":
            await self.teardown(experiment_id, spec.name, uid=leftover.uid, reason="leftover of an interrupted run")
        # Where the engine can hand a started sandbox its bundle on stdin (Docker: a hot pool's
        # way), a cold one gets it so too: writing /genesis/in through the engine's archive
        # call costs tens of ms of the engine's CPU (it runs a helper process for each).
        capabilities = self.runtime.capabilities
        on_stdin = capabilities.pools == "hot"
        try:
            uid = self._uids[spec.name] = await self.runtime.create(replace(spec, bundle_stdin=on_stdin))
        except RequestRejected as exc:  # e.g. bundle_too_large: the change cannot travel to this runtime
            raise Failure(exc.code, str(exc)) from exc
        lines = [AuditLine(spec.name, "created", f"image {spec.image}", {
            "cpu": spec.cpu, "memory_bytes": spec.memory_bytes, "pids": spec.pids, "network": spec.network,
            "disk_bytes": spec.disk_bytes, "disk_enforced": capabilities.disk_quota,
            "disk_storage": capabilities.disk_storage, "pids_enforced": capabilities.pids,
            "pids_node_limit": capabilities.max_pids})]
        try:
            if on_stdin:
                await self.runtime.deliver(spec.name, spec.bundle, uid=uid, start=True, timeout_s=spec.timeout_s)
                lines.append(AuditLine(spec.name, "changes_applied", "bundle delivered on stdin",
                                       {"bundle_bytes": len(spec.bundle), "tier": "cold"}))
            else:
                lines.append(AuditLine(spec.name, "changes_applied", "bundle delivered to /genesis/in",
                                       {"bundle_bytes": len(spec.bundle)}))
                await self.runtime.start(spec.name)  # by name: a pod is started by name; the fence checked it is ours
        except BaseException:
            await self.store.audit_lines(experiment_id, lines, actor=self.actor)  # what it got to, kept
            raise
        # The runner's first line is read as it comes: the engine rotates its log at a
        # fixed size, so after a flood on stdout the beginning is gone by the end.
        self._heads[spec.name] = asyncio.create_task(self._log_head(spec.name, follow=True))
        metrics.observe_phase("sandbox_start", time.monotonic() - started)
        lines.append(AuditLine(spec.name, "started", f"{spec.labels.get(LABEL_ROLE, 'experiment')} started"))
        return Launched(spec.name, created_wall_ms, "cold", tuple(lines))

    async def run(self, spec: SandboxSpec, *, experiment_id: str, timeout_s: float) -> Run:
        """Launch, wait (killing at the deadline or on cancel), collect and remove one sandbox."""
        launched = await self.launch(spec, experiment_id=experiment_id)
        await self.store.audit_lines(experiment_id, launched.audits, actor=self.actor)
        state, timed_out, cancelled = await self._run_to_exit(spec.name, experiment_id, timeout_s)
        if state.status == "missing" and (timed_out or cancelled):
            run = Run(spec.name, state, SandboxOutput(files={}, log_tail=""), "", "", timed_out, cancelled)
        else:
            run = await self.collect(spec.name, state, timed_out=timed_out, cancelled=cancelled)
        await self.teardown(experiment_id, spec.name, reason="run collected")
        return run

    async def collect(self, name: str, state: SandboxState, *, timed_out: bool = False,
                      cancelled: bool = False) -> Run:
        # The engine's reads side by side: its archive read alone takes tens of ms.
        output, head = await asyncio.gather(self.runtime.collect(name, max_file_bytes=self.max_file_bytes),
                                            self._early_head(name))
        if not head or evidence.APPLIED_MARKER not in head:  # e.g. launched by a former process
            head = await self._log_head(name)
        return Run(name, state, output, head, output.log_tail, timed_out, cancelled)

    async def _run_to_exit(self, name: str, experiment_id: str, timeout_s: float) -> tuple[SandboxState, bool, bool]:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await self.runtime.kill(name, uid=self.uid(name))
                await self.audit(experiment_id, name, "stopped", f"killed at the {timeout_s:.1f}s timeout")
                return await self.runtime.inspect(name), True, False
            state = await self.runtime.wait(name, timeout_s=min(CANCEL_POLL_S, remaining))
            cancelled = (await self.store.get(experiment_id)).cancel_requested
            if state is not None:
                await self.audit(experiment_id, name, "stopped", f"exited with {state.exit_code}",
                           details={"oom_killed": state.oom_killed})
                return state, False, cancelled
            if cancelled:
                await self.runtime.kill(name, uid=self.uid(name))
                await self.audit(experiment_id, name, "stopped", "killed: cancelled by request")
                return await self.runtime.inspect(name), False, True

    async def _early_head(self, name: str) -> str | None:
        task = self._heads.pop(name, None)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            return None  # launched under another event loop (a controller before this one): read anew
        try:
            return await asyncio.wait_for(asyncio.shield(task), HEAD_WAIT_S)
        except asyncio.TimeoutError:
            return None
        finally:
            task.cancel()

    async def _log_head(self, name: str, *, follow: bool = False) -> str:
        """The log's beginning: up to the runner's first marker, at most HEAD_BYTES
        (``follow``: waiting for it while the sandbox runs)."""
        seen: list[str] = []
        size = 0
        try:
            async with aclosing(self.runtime.logs(name, follow=follow)) as chunks:
                async for chunk in chunks:
                    seen.append(chunk)
                    size += len(chunk)
                    recent = "".join(seen[-2:])  # a marker may straddle two chunks
                    if size >= HEAD_BYTES or evidence.APPLIED_MARKER in recent or results.RESULT_MARKER in recent:
                        break
        except GenesisError:
            pass
        return "".join(seen)[:HEAD_BYTES]

    async def teardown(self, experiment_id: str, name: str, *, reason: str, uid: str | None = None) -> float | None:
        """Delete the sandbox (rollback) by its id: ``uid`` as recorded, or the one this
        process created under ``name``. Returns how long it took, in ms."""
        uid = uid or self._uids.get(name)
        head = self._heads.pop(name, None)
        if head is not None:
            head.cancel()
        removed = await lifecycle.remove_sandbox(self.runtime, self.store, experiment_id=experiment_id, name=name,
                                                 uid=uid, actor=self.actor, reason=reason)
        if self._uids.get(name) == uid:
            self._uids.pop(name, None)
        return removed

    async def audit(self, experiment_id: str, name: str, action: str, reason: str, **kw) -> None:
        await self.store.audit(experiment_id=experiment_id, sandbox_name=name, action=action, actor=self.actor,
                         reason=reason, **kw)


def bundle(writes: list[dict], validation: Validation, *, pytest_plugins: list[str],
           test_timeout_s: float | None, seccomp: str = "default") -> bytes:
    """What the runner reads from /genesis/in/bundle.json (``seccomp``: "strict" stacks
    Genesis's own filter on the validation)."""
    return json.dumps({"changes": {"files": writes}, "validation": validation.model_dump(mode="json"),
                       "pytest_plugins": pytest_plugins, "test_timeout_s": test_timeout_s,
                       "seccomp": seccomp}).encode()
