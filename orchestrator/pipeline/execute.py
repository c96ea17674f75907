"""Run one recorded experiment to its verdict, and roll back or preserve.

Steps, each a phase transition on the record (SPEC §5): Building (snapshot
image, baseline), Running (the sandbox with the change), Collecting
(results and cgroup figures), then Succeeded or Failed. The sandbox is torn
down on ``rollback`` and every failure, and preserved (stopped, artifacts
exported) on ``merge*`` until its TTL.

The decisions in here are delegated to pure functions (scoring, policy);
this module sequences I/O and records it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from orchestrator.domain import results
from orchestrator.domain.junit import TestReport
from orchestrator.domain.llm_calls import LlmPatterns, count_file, llm_reduction
from orchestrator.domain.models import ExperimentRequest, Outcome, Phase, SandboxInfo, Validation
from orchestrator.domain.records import CachedBaseline, ExperimentView
from orchestrator.domain.scoring import RunFacts, baseline_of, score
from orchestrator.errors import GenesisError, ImageBuildError, RuntimeFailure, SandboxGone
from orchestrator.pipeline import artifacts, lifecycle
from orchestrator.runtimes.base import (
    LABEL_ATTEMPT, LABEL_EXPERIMENT, LABEL_INSTANCE, LABEL_ROLE, MANAGED_BY, MANAGED_BY_VALUE,
    Runtime, SandboxOutput, SandboxSpec, SandboxState,
)
from orchestrator.settings import Settings
from orchestrator.snapshots import git
from orchestrator.snapshots.builder import SnapshotBuilder
from orchestrator.store.repository import Store, utcnow

log = logging.getLogger(__name__)
CANCEL_POLL_S = 1.0  # how often a waiting sandbox checks for `genesis delete`


@dataclass(frozen=True)
class SandboxRun:
    state: SandboxState
    output: SandboxOutput | None
    result: results.RunnerResult
    timed_out: bool
    cancelled: bool
    created_wall_ms: int


class Failure(Exception):
    """An experiment ends as Failed with ``code``; raised inside ``run``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def sandbox_name(experiment_id: str, attempt: int) -> str:
    return f"genesis-{experiment_id}-a{attempt}"


def baseline_key(*, repo: str, commit: str, validation: Validation, image: str) -> str:
    doc = json.dumps([repo, commit, validation.command, validation.workdir, image])
    return hashlib.sha256(doc.encode()).hexdigest()


class Executor:
    def __init__(self, *, settings: Settings, store: Store, runtime: Runtime, snapshots: SnapshotBuilder,
                 actor: str = "worker", llm_patterns: LlmPatterns | None = None) -> None:
        self.settings = settings
        self.store = store
        self.runtime = runtime
        self.snapshots = snapshots
        self.actor = actor
        self.patterns = llm_patterns or LlmPatterns()

    async def run(self, experiment_id: str) -> ExperimentView:
        view = self.store.get(experiment_id)
        if view.phase.finished:
            return view
        ctx = {"experiment_id": view.id, "instance_id": view.instance_id, "trace_id": view.trace_id}
        try:
            if view.cancel_requested:
                raise Failure("cancelled", "cancelled before it started")
            return await self._run(view, ctx)
        except Failure as failure:
            log.warning("experiment_failed", extra={**ctx, "code": failure.code, "reason": str(failure)})
            return self.fail(self.store.get(experiment_id), failure.code, str(failure))

    async def _run(self, view: ExperimentView, ctx: dict) -> ExperimentView:
        spec = view.spec
        assert spec is not None and view.commit is not None
        repo = self.settings.repos.get(spec.repo)
        if repo is None:
            raise Failure("unknown_repo", f"repo {spec.repo!r} is no longer configured")
        log.info("experiment_start", extra=ctx)
        view = self.store.transition(view.id, Phase.BUILDING, reason="BuildingSnapshot", actor=self.actor,
                                     message=f"{spec.repo}@{view.commit[:12]}", attempt=view.attempt + 1)
        try:
            snap = await self.snapshots.ensure(repo_name=spec.repo, repo_path=repo.path, commit=view.commit,
                                               toolchain=repo.toolchain)
        except ImageBuildError as exc:
            raise Failure("build_failed", str(exc)) from exc
        self.store.touch_image(tag=snap.tag, repo=spec.repo, commit=view.commit, toolchain=repo.toolchain,
                               size_bytes=snap.size_bytes, build_seconds=snap.seconds if snap.built else None)
        validation = spec.validation or repo.validation
        self.store.transition(view.id, Phase.BUILDING, reason="SnapshotReady", actor=self.actor, image=snap.tag,
                              message=f"{snap.tag} ({'built' if snap.built else 'cache hit'} in {snap.seconds:.2f}s)")
        baseline = await self._baseline(view, spec, snap.tag, validation)
        name = sandbox_name(view.id, view.attempt)
        self.store.transition(view.id, Phase.RUNNING, reason="SandboxStarting", message=name,
                              actor=self.actor, sandbox_name=name)
        labels = self._labels(view, role="experiment", attempt=view.attempt)
        bundle = {"changes": spec.changes.model_dump(mode="json", exclude_none=True),
                  "validation": validation.model_dump(mode="json")}
        run = await self._sandbox(name=name, image=snap.tag, labels=labels, bundle=bundle, spec=spec,
                                  experiment_id=view.id)
        startup = ""
        if run.result.validation_started_ms is not None:
            startup = f"; validation started {run.result.validation_started_ms - run.created_wall_ms} ms after create"
        self.store.transition(view.id, Phase.COLLECTING, reason="Collecting", actor=self.actor,
                              message=f"validation exit {run.result.exit_code}{startup}")
        return await self._conclude(view, spec, run, baseline, snap.tag, ctx)

    # -- sandboxes ----------------------------------------------------------------

    def _labels(self, view: ExperimentView, *, role: str, attempt: int) -> dict[str, str]:
        return {**self.settings.extra_labels, MANAGED_BY: MANAGED_BY_VALUE, LABEL_EXPERIMENT: view.id, LABEL_INSTANCE: view.instance_id,
                LABEL_ROLE: role, LABEL_ATTEMPT: str(attempt)}

    async def _sandbox(self, *, name: str, image: str, labels: dict[str, str], bundle: dict,
                       spec: ExperimentRequest, experiment_id: str) -> SandboxRun:
        """Create, start and wait for one sandbox; kill it at the deadline or on cancel."""
        res = spec.resources
        sandbox = SandboxSpec(name=name, image=image, labels=labels, bundle=json.dumps(bundle).encode(),
                              cpu=res.cpu, memory_bytes=res.memory_bytes, pids=res.pids, network=spec.network)
        # A leftover of a crashed attempt under this name: never run twice.
        await self._teardown(experiment_id, name, reason="leftover of an interrupted run")
        created_wall_ms = int(time.time() * 1000)
        try:
            await self.runtime.create(sandbox)
            self._audit(experiment_id, name, "created", f"image {image}",
                        details={"cpu": res.cpu, "memory_bytes": res.memory_bytes, "pids": res.pids,
                                 "network": spec.network})
            self._audit(experiment_id, name, "changes_applied", "bundle delivered to /genesis/in",
                        details={"bundle_bytes": len(sandbox.bundle)})
            await self.runtime.start(name)
            self._audit(experiment_id, name, "started", "validation sandbox started")
            state, timed_out, cancelled = await self._wait(name, experiment_id, spec.timeout_ms / 1000)
            output = await self.runtime.collect(name, max_file_bytes=self.settings.max_output_file_bytes)
        except RuntimeFailure as exc:
            await self._teardown(experiment_id, name, reason="runtime error")
            if self.store.get(experiment_id).cancel_requested:
                raise Failure("cancelled", "cancelled by request while running") from exc
            code = "sandbox_lost" if isinstance(exc, SandboxGone) else "runtime_error"
            raise Failure(code, str(exc)) from exc
        result = results.parse_runner_result(output.files, output.log_tail)
        return SandboxRun(state=state, output=output, result=result, timed_out=timed_out,
                          cancelled=cancelled, created_wall_ms=created_wall_ms)

    async def _wait(self, name: str, experiment_id: str, timeout_s: float) -> tuple[SandboxState, bool, bool]:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await self.runtime.kill(name)
                self._audit(experiment_id, name, "stopped", f"killed at the {timeout_s:.1f}s timeout")
                return await self.runtime.inspect(name), True, False
            state = await self.runtime.wait(name, timeout_s=min(CANCEL_POLL_S, remaining))
            cancelled = self.store.get(experiment_id).cancel_requested
            if state is not None:
                # A sandbox killed by `genesis delete` also ends up here.
                self._audit(experiment_id, name, "stopped", f"exited with {state.exit_code}",
                            details={"oom_killed": state.oom_killed})
                return state, False, cancelled
            if cancelled:
                await self.runtime.kill(name)
                self._audit(experiment_id, name, "stopped", "killed: cancelled by request")
                return await self.runtime.inspect(name), False, True

    async def _teardown(self, experiment_id: str, name: str, *, reason: str) -> float | None:
        """Delete the sandbox (rollback); returns how long it took, in ms."""
        return await lifecycle.remove_sandbox(self.runtime, self.store, experiment_id=experiment_id, name=name,
                                              actor=self.actor, reason=reason)

    # -- baseline -----------------------------------------------------------------

    async def _baseline(self, view: ExperimentView, spec: ExperimentRequest, image: str,
                        validation: Validation) -> CachedBaseline:
        key = baseline_key(repo=spec.repo, commit=view.commit or "", validation=validation, image=image)
        cached = self.store.baseline(key)
        if cached is not None:
            return cached
        self.store.transition(view.id, Phase.BUILDING, reason="RunningBaseline", actor=self.actor,
                              message="validation on the unmodified snapshot")
        name = f"genesis-baseline-{key[:16]}"
        run = await self._sandbox(name=name, image=image, labels=self._labels(view, role="baseline", attempt=0),
                                  bundle={"changes": {}, "validation": validation.model_dump(mode="json")},
                                  spec=spec, experiment_id=view.id)
        await self._teardown(view.id, name, reason="baseline collected")
        if run.cancelled:
            raise Failure("cancelled", "cancelled while the baseline ran")
        files = run.output.files if run.output else {}
        report = results.test_report(files, run.result.exit_code)
        baseline = CachedBaseline(key=key, cases=report.cases, parse_errors=list(report.parse_errors),
                                  runtime_ms=run.result.runtime_ms, exit_code=run.result.exit_code or 0,
                                  llm_count=await asyncio.to_thread(self._tree_llm_count, spec.repo, view.commit),
                                  created_at=utcnow())
        if run.result.status == "completed" and not run.timed_out and not run.state.oom_killed:
            self.store.put_baseline(baseline, repo=spec.repo, commit=view.commit or "",
                                    command=validation.command, image=image)
        return baseline

    def _tree_llm_count(self, repo_name: str, commit: str | None) -> int:
        repo = self.settings.repos[repo_name]
        extensions = tuple(self.patterns.extensions())
        paths = [p for p in git.list_files(repo.path, commit or "HEAD") if p.endswith(extensions)]
        blobs = git.read_blobs(repo.path, commit or "HEAD", paths)
        return sum(count_file(path, data, self.patterns) for path, data in blobs.items())

    # -- verdict ------------------------------------------------------------------

    async def _conclude(self, view: ExperimentView, spec: ExperimentRequest, run: SandboxRun,
                        baseline: CachedBaseline, image: str, ctx: dict) -> ExperimentView:
        name = sandbox_name(view.id, view.attempt)
        output = run.output
        full_log = await self._full_log(name)
        if output is not None:
            artifacts.export(self.settings.artifacts_dir, view.id, output, full_log=full_log)
        failure = self._run_failure(run)
        if failure is not None:
            await self._teardown(view.id, name, reason=f"rollback: {failure.code}")
            log.info("rollback_initiated", extra={**ctx, "code": failure.code})
            raise failure
        log.info("tests_completed", extra={**ctx, "exit_code": run.result.exit_code})
        files = output.files if output else {}
        report = results.test_report(files, run.result.exit_code)
        facts = results.run_facts(run.result, files)
        base_report = TestReport(cases=baseline.cases, parse_errors=tuple(baseline.parse_errors))
        base_facts = RunFacts(runtime_ms=baseline.runtime_ms, exit_code=baseline.exit_code)
        changed = results.changed_llm_count(baseline.llm_count, files, self.patterns)
        metrics = score(report=report, facts=facts, baseline_report=base_report, baseline_facts=base_facts,
                        llm_reduction=llm_reduction(baseline.llm_count, changed))
        log.info("metrics_measured", extra={**ctx, "success_rate": metrics.success_rate,
                                            "regression": metrics.regression})
        recommendation, why = self.settings.policy.decide(metrics)
        preserved_until = None
        if recommendation.preserves_sandbox:
            preserved_until = utcnow() + timedelta(seconds=self.settings.preserve_ttl_s)
            self._audit(view.id, name, "preserved", f"{recommendation.value}: kept for review",
                        details={"until": preserved_until.isoformat(),
                                 "artifacts": str(self.settings.artifacts_dir / view.id)})
        else:
            await self._teardown(view.id, name, reason="rollback: " + why)
            log.info("rollback_initiated", extra=ctx)
        outcome = Outcome(
            experiment_id=view.id, instance_id=view.instance_id, status="success", recommendation=recommendation,
            metrics=metrics, baseline=baseline_of(base_report, base_facts), trace_id=view.trace_id,
            sandbox=SandboxInfo(runtime=self.runtime.name, image=image, name=name,
                                preserved=preserved_until is not None, preserved_until=preserved_until),
            timestamp=utcnow(),
        )
        final = self.store.finalize(outcome, phase=Phase.SUCCEEDED, reason=recommendation.value, message=why,
                                    preserved_until=preserved_until, actor=self.actor)
        log.info("experiment_complete", extra={**ctx, "recommendation": recommendation.value})
        return final

    @staticmethod
    def _run_failure(run: SandboxRun) -> Failure | None:
        if run.cancelled:
            return Failure("cancelled", "cancelled by request while running")
        if run.timed_out:
            return Failure("timeout", "the sandbox ran past timeout_ms and was killed")
        if run.state.oom_killed:
            return Failure("oom_killed", "the sandbox exceeded its memory limit and was killed by the kernel")
        status = run.result.status
        if status == "patch_failed":
            return Failure("patch_failed", run.result.message or "the change did not apply")
        if status != "completed":
            return Failure("runtime_error", f"the sandbox runner did not complete ({status}): "
                                            f"{run.result.message or 'exit ' + str(run.state.exit_code)}")
        return None

    async def _full_log(self, name: str) -> str | None:
        try:
            chunks = [chunk async for chunk in self.runtime.logs(name, tail=5000)]
        except GenesisError:
            return None
        return "".join(chunks)

    def fail(self, view: ExperimentView, code: str, message: str) -> ExperimentView:
        return lifecycle.fail(self.store, view, code=code, message=message, actor=self.actor,
                              runtime_name=self.runtime.name)

    def _audit(self, experiment_id: str, name: str, action: str, reason: str, **kw) -> None:
        self.store.audit(experiment_id=experiment_id, sandbox_name=name, action=action, actor=self.actor,
                         reason=reason, **kw)
