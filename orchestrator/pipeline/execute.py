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
from orchestrator.domain.environment import REPO_FILE, environment_failure, repo_modules
from orchestrator.domain.junit import TestReport
from orchestrator.domain.llm_calls import LlmPatterns, count_file, llm_reduction
from orchestrator.domain.models import ExperimentRequest, Outcome, Phase, SandboxInfo, Validation
from orchestrator.domain.records import CachedBaseline, ExperimentView
from orchestrator.domain.policy import capped_for_dependencies
from orchestrator.domain.scoring import RunFacts, baseline_of, score
from orchestrator.errors import GenesisError, ImageBuildError, RequestRejected, SandboxGone
from orchestrator.pipeline import artifacts, lifecycle
from orchestrator.pipeline.intake import dependency_changes
from orchestrator.runtimes.base import (
    LABEL_ATTEMPT, LABEL_EXPERIMENT, LABEL_INSTANCE, LABEL_ROLE,
    Runtime, SandboxOutput, SandboxSpec, SandboxState,
)
from orchestrator.settings import RepoConfig, Settings
from orchestrator.snapshots import catalog, git, repofile
from orchestrator.snapshots.builder import Snapshot, SnapshotBuilder
from orchestrator.store.repository import Store, utcnow
from orchestrator.telemetry import metrics

log = logging.getLogger(__name__)
CANCEL_POLL_S = 1.0  # how often a waiting baseline checks for `genesis delete`


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
                 actor: str = "controller", llm_patterns: LlmPatterns | None = None) -> None:
        self.settings = settings
        self.store = store
        self.runtime = runtime
        self.snapshots = snapshots
        self.actor = actor
        self.patterns = llm_patterns or LlmPatterns()
        # One baseline run per key at a time: concurrent experiments on one
        # commit wait for the first and then read the cache.
        self._baseline_locks: dict[str, asyncio.Lock] = {}

    # -- steps the controller drives ---------------------------------------------

    async def start(self, experiment_id: str) -> ExperimentView:
        """Building → Running: snapshot image, baseline, then the sandbox with the change.

        Idempotent for one attempt: an interrupted start is simply run again
        (deterministic image tags and sandbox names; leftovers are removed).
        Infrastructure errors (``RuntimeFailure``) propagate for the
        controller to retry; failures of the change finalize the experiment.
        """
        view = self.store.get(experiment_id)
        if view.phase is not Phase.BUILDING:
            return view
        ctx = self._ctx(view)
        try:
            if view.cancel_requested:
                raise Failure("cancelled", "cancelled before it started")
            return await self._start(view, ctx)
        except Failure as failure:
            return self._failed(experiment_id, failure, ctx)

    async def collect(self, experiment_id: str) -> ExperimentView:
        """Running (sandbox exited) → Collecting → Succeeded | Failed."""
        view = self.store.get(experiment_id)
        if view.phase is Phase.RUNNING:
            view = self.store.transition(view.id, Phase.COLLECTING, reason="Collecting", actor=self.actor,
                                         message=f"sandbox {view.sandbox_name} exited")
        if view.phase is not Phase.COLLECTING:
            return view
        ctx = self._ctx(view)
        try:
            return await self._collect(view, ctx)
        except Failure as failure:
            return self._failed(experiment_id, failure, ctx)

    async def kill(self, experiment_id: str, sandbox: str, *, reason: str) -> None:
        """Stop a running sandbox for ``reason`` (timeout | cancelled); collect follows."""
        self.store.set_kill_reason(experiment_id, reason)
        await self.runtime.kill(sandbox)
        if reason == "timeout":
            log.warning("experiment_timeout", extra={**self._ctx(self.store.get(experiment_id)),
                                                     "sandbox": sandbox, "phase": "Running"})
        why = "killed at the timeout" if reason == "timeout" else "killed: cancelled by request"
        self._audit(experiment_id, sandbox, "stopped", why)

    def _ctx(self, view: ExperimentView) -> dict:
        return {"experiment_id": view.id, "instance_id": view.instance_id, "trace_id": view.trace_id}

    def _failed(self, experiment_id: str, failure: "Failure", ctx: dict) -> ExperimentView:
        log.warning("experiment_failed", extra={**ctx, "phase": "Failed", "code": failure.code,
                                                "reason": str(failure)})
        return self.fail(self.store.get(experiment_id), failure.code, str(failure))

    async def _start(self, view: ExperimentView, ctx: dict) -> ExperimentView:
        spec = view.spec
        assert spec is not None and view.commit is not None
        repo = self._repo(spec.repo, view.commit)
        log.info("experiment_start", extra={**ctx, "phase": "Building"})
        changed = dependency_changes(spec, repo)
        if changed and not repo.allow_dependency_changes:
            raise Failure("dependency_change_refused", f"the change edits environment inputs ({', '.join(changed)})")
        snap = await self._snapshot(view, repo)
        own = snap
        if repo.environment and set(changed) - {REPO_FILE}:
            # The change's own dependencies: an environment built from its inputs, without credentials.
            try:
                inputs = await asyncio.to_thread(repofile.changed_inputs, repo, view.commit, patch=spec.changes.patch,
                                                 files=[f.model_dump(exclude_none=True) for f in spec.changes.files])
            except RequestRejected as exc:
                raise Failure(exc.code, str(exc)) from exc
            own = await self._snapshot(view, repo, inputs=inputs)
        metrics.SNAPSHOT_BYTES.set(sum(i["size_bytes"] for i in self.store.images() if i["tier"] == "snapshot"))
        validation = spec.validation or repo.validation
        note = f"; the change's own environment {own.environment}" if own is not snap else ""
        self.store.transition(view.id, Phase.BUILDING, reason="SnapshotReady", actor=self.actor, image=own.tag,
                              baseline_image=snap.tag,
                              message=f"{snap.tag} ({'built' if snap.built else 'cache hit'} in {snap.seconds:.2f}s)"
                                      + note)
        await self._baseline(view, spec, snap.tag, validation, repo)
        name = sandbox_name(view.id, view.attempt)
        bundle = {"changes": spec.changes.model_dump(mode="json", exclude_none=True),
                  "validation": validation.model_dump(mode="json")}
        created_wall_ms = await self._launch(name=name, image=own.tag, spec=spec, experiment_id=view.id,
                                             labels=self._labels(view, role="experiment", attempt=view.attempt),
                                             bundle=bundle)
        deadline = utcnow() + timedelta(milliseconds=spec.timeout_ms)
        log.info("sandbox_created", extra={**ctx, "phase": "Running", "sandbox": name})
        log.info("changes_applied", extra={**ctx, "phase": "Running", "sandbox": name,
                                           "bundle": "delivered to /genesis/in, applied by the runner"})
        return self.store.transition(view.id, Phase.RUNNING, reason="SandboxRunning", actor=self.actor,
                                     message=f"{name}; created at {created_wall_ms} ms", sandbox_name=name,
                                     deadline_at=deadline)

    def _repo(self, name: str, commit: str) -> RepoConfig:
        """The repository's effective configuration at ``commit`` (settings + its .genesis.yaml)."""
        repo = self.settings.repos.get(name)
        if repo is None:
            raise Failure("unknown_repo", f"repo {name!r} is no longer configured")
        try:
            return repofile.effective(repo, commit)
        except RequestRejected as exc:
            raise Failure(exc.code, str(exc)) from exc

    async def _snapshot(self, view: ExperimentView, repo: RepoConfig, *,
                        inputs: dict[str, bytes] | None = None) -> Snapshot:
        """Build or reuse the image tiers; ``inputs`` (a change's own) builds untrusted."""
        assert view.commit is not None
        trusted = inputs is None
        try:
            snap = await self.snapshots.ensure(repo_name=view.repo, repo=repo, commit=view.commit, inputs=inputs,
                                               trusted=trusted)
        except ImageBuildError as exc:
            artifacts.record_builds(self.settings.artifacts_dir, view.id,
                                    [{"tier": "failed", "tag": exc.tag, "built": True}] if exc.tag else [])
            raise Failure("build_failed", str(exc)) from exc
        builds = catalog.record_use(self.store, snap, repo=view.repo, commit=view.commit, toolchain=repo.toolchain)
        if snap.environment_built:
            metrics.observe_phase("environment_build", snap.environment_seconds)
        artifacts.record_builds(self.settings.artifacts_dir, view.id, builds)
        metrics.observe_phase("image_build", snap.seconds)
        return snap

    async def _collect(self, view: ExperimentView, ctx: dict) -> ExperimentView:
        spec = view.spec
        assert spec is not None and view.sandbox_name is not None
        state = await self.runtime.inspect(view.sandbox_name)
        if state.status == "missing":
            if view.kill_reason in ("timeout", "cancelled"):
                # Killed before it ever ran (a Kubernetes pod still pending is deleted, not stopped).
                await self._teardown(view.id, view.sandbox_name, reason=f"rollback: {view.kill_reason}")
                raise Failure(view.kill_reason, f"{view.kill_reason}: the sandbox was stopped before it ran")
            raise SandboxGone(f"sandbox {view.sandbox_name} vanished before its results were collected")
        output = await self.runtime.collect(view.sandbox_name, max_file_bytes=self.settings.max_output_file_bytes)
        result = results.parse_runner_result(output.files, output.log_tail)
        cancelled = view.cancel_requested or view.kill_reason == "cancelled"
        run = SandboxRun(state=state, output=output, result=result, timed_out=view.kill_reason == "timeout",
                         cancelled=cancelled, created_wall_ms=0)
        repo = self._repo(spec.repo, view.commit or "")
        validation = spec.validation or repo.validation
        baseline_image = view.baseline_image or view.image
        baseline = None
        if baseline_image:
            baseline = self.store.baseline(baseline_key(repo=spec.repo, commit=view.commit or "",
                                                        validation=validation, image=baseline_image))
        if baseline is None and not (run.cancelled or run.timed_out):
            raise SandboxGone("the baseline of this experiment is no longer cached")
        return await self._conclude(view, spec, run, baseline, view.image or "", ctx,
                                    changed_inputs=dependency_changes(spec, repo))

    # -- sandboxes ----------------------------------------------------------------

    def _labels(self, view: ExperimentView, *, role: str, attempt: int) -> dict[str, str]:
        return {**self.settings.extra_labels, **self.settings.sandbox_selector(), LABEL_EXPERIMENT: view.id, LABEL_INSTANCE: view.instance_id,
                LABEL_ROLE: role, LABEL_ATTEMPT: str(attempt)}

    async def _launch(self, *, name: str, image: str, labels: dict[str, str], bundle: dict,
                      spec: ExperimentRequest, experiment_id: str) -> int:
        """Create (bundle delivered) and start one sandbox; returns the wall-clock ms of creation."""
        res = spec.resources
        gpus = self.store.get(experiment_id).gpus  # whole devices the controller assigned at admission
        sandbox = SandboxSpec(name=name, image=image, labels=labels, bundle=json.dumps(bundle).encode(),
                              cpu=res.cpu, memory_bytes=res.memory_bytes, pids=res.pids, network=spec.network,
                              gpus=gpus, timeout_s=spec.timeout_ms / 1000)
        # A leftover of an interrupted attempt under this name: never run twice.
        await self._teardown(experiment_id, name, reason="leftover of an interrupted run")
        created_wall_ms = int(time.time() * 1000)
        started = time.monotonic()
        try:
            await self.runtime.create(sandbox)
        except RequestRejected as exc:  # e.g. bundle_too_large: the change cannot travel to this runtime
            raise Failure(exc.code, str(exc)) from exc
        self._audit(experiment_id, name, "created", f"image {image}",
                    details={"cpu": res.cpu, "memory_bytes": res.memory_bytes, "pids": res.pids,
                             "network": spec.network})
        self._audit(experiment_id, name, "changes_applied", "bundle delivered to /genesis/in",
                    details={"bundle_bytes": len(sandbox.bundle)})
        await self.runtime.start(name)
        metrics.observe_phase("sandbox_start", time.monotonic() - started)
        self._audit(experiment_id, name, "started", f"{labels.get(LABEL_ROLE, 'experiment')} sandbox started")
        return created_wall_ms

    async def _run_to_exit(self, *, name: str, experiment_id: str, timeout_s: float) -> tuple[SandboxState, bool, bool]:
        """Wait for a sandbox this step owns (the baseline); kill it at the deadline or on cancel."""
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
                        validation: Validation, repo: RepoConfig) -> CachedBaseline:
        key = baseline_key(repo=spec.repo, commit=view.commit or "", validation=validation, image=image)
        async with self._baseline_locks.setdefault(key, asyncio.Lock()):
            cached = self.store.baseline(key)
            if cached is not None:
                return cached
            return await self._run_baseline(view, spec, image, validation, key, repo)

    async def _run_baseline(self, view: ExperimentView, spec: ExperimentRequest, image: str,
                            validation: Validation, key: str, repo: RepoConfig) -> CachedBaseline:
        self.store.transition(view.id, Phase.BUILDING, reason="RunningBaseline", actor=self.actor,
                              message="validation on the unmodified snapshot")
        name = f"genesis-baseline-{key[:16]}"
        bundle = {"changes": {}, "validation": validation.model_dump(mode="json")}
        await self._launch(name=name, image=image, labels=self._labels(view, role="baseline", attempt=view.attempt),
                           bundle=bundle, spec=spec, experiment_id=view.id)
        state, timed_out, cancelled = await self._run_to_exit(name=name, experiment_id=view.id,
                                                              timeout_s=spec.timeout_ms / 1000)
        if state.status == "missing" and (timed_out or cancelled):
            output = SandboxOutput(files={}, log_tail="")  # stopped before it ever ran (an unschedulable pod)
        else:
            output = await self.runtime.collect(name, max_file_bytes=self.settings.max_output_file_bytes)
        await self._teardown(view.id, name, reason="baseline collected")
        if cancelled:
            raise Failure("cancelled", "cancelled while the baseline ran")
        if state.disrupted:
            raise SandboxGone(f"the baseline sandbox was ended by the infrastructure ({state.reason}: "
                              f"{state.message or 'no message'})")
        timed_out = timed_out or state.reason == "deadline_exceeded"
        result = results.parse_runner_result(output.files, output.log_tail)
        if result.status != "completed" and not (timed_out or state.oom_killed):
            # The runner never finished (daemon restart, sandbox killed): infrastructure.
            raise SandboxGone(f"the baseline sandbox ended without a result ({result.status})")
        run = SandboxRun(state=state, output=output, result=result, timed_out=timed_out, cancelled=False,
                         created_wall_ms=0)
        files = run.output.files if run.output else {}
        report = results.test_report(files, run.result.exit_code)
        if report.failed or report.errors or result.exit_code:  # a clean baseline has no broken environment
            self._check_environment(files, output.log_tail, result.exit_code, repo, view.commit or "")
        # A baseline that times out or runs out of memory is still the truth
        # about the unmodified tree (no passing tests), so it is cached too.
        baseline = CachedBaseline(key=key, cases=report.cases, parse_errors=list(report.parse_errors),
                                  runtime_ms=run.result.runtime_ms, exit_code=run.result.exit_code or 0,
                                  llm_count=await asyncio.to_thread(self._tree_llm_count, spec.repo, view.commit),
                                  created_at=utcnow())
        self.store.put_baseline(baseline, repo=spec.repo, commit=view.commit or "",
                                command=validation.command, image=image)
        return baseline

    @staticmethod
    def _check_environment(files: dict[str, bytes], log_tail: str, exit_code: int | None, repo: RepoConfig,
                           commit: str) -> None:
        """A baseline that failed because of its environment is not a verdict on any
        change: the experiment fails ``baseline_failed`` (and the baseline is not cached)."""
        texts = [data.decode("utf-8", "replace") for name, data in sorted(files.items()) if name.endswith(".xml")]
        why = environment_failure(texts=[*texts, log_tail], exit_code=exit_code,
                                  own_modules=repo_modules(repofile.files(repo, commit)))
        if why is not None:
            raise Failure("baseline_failed", f"the baseline failed in its environment, so no change can be judged "
                                             f"on it: {why}")

    def _tree_llm_count(self, repo_name: str, commit: str | None) -> int:
        repo = self.settings.repos[repo_name]
        extensions = tuple(self.patterns.extensions())
        paths = [p for p in git.list_files(repo.path, commit or "HEAD") if p.endswith(extensions)]
        blobs = git.read_blobs(repo.path, commit or "HEAD", paths)
        return sum(count_file(path, data, self.patterns) for path, data in blobs.items())

    # -- verdict ------------------------------------------------------------------

    async def _conclude(self, view: ExperimentView, spec: ExperimentRequest, run: SandboxRun,
                        baseline: CachedBaseline | None, image: str, ctx: dict, *,
                        changed_inputs: list[str]) -> ExperimentView:
        name = view.sandbox_name or sandbox_name(view.id, view.attempt)
        output = run.output
        full_log = await self._full_log(name)
        if output is not None:
            artifacts.export(self.settings.artifacts_dir, view.id, output, full_log=full_log)
        failure = self._run_failure(run)
        if failure is None and run.state.disrupted:
            # Evicted, preempted, node lost: not the change's fault, so the attempt is retried.
            await self._teardown(view.id, name, reason=f"disrupted: {run.state.reason}")
            raise SandboxGone(f"sandbox {name} was ended by the infrastructure ({run.state.reason}: "
                              f"{run.state.message or 'no message'})")
        if failure is not None:
            await self._teardown(view.id, name, reason=f"rollback: {failure.code}")
            log.info("rollback_initiated", extra={**ctx, "phase": "Collecting", "code": failure.code})
            raise failure
        if run.result.status != "completed" or baseline is None:
            # The runner was killed from outside (daemon restart, host OOM, a
            # node going away): not the change's fault, so the attempt is retried.
            await self._teardown(view.id, name, reason="sandbox ended without a result")
            raise SandboxGone(f"sandbox {name} ended without a result ({run.result.status}, "
                              f"exit {run.state.exit_code})")
        log.info("tests_completed", extra={**ctx, "phase": "Collecting", "exit_code": run.result.exit_code})
        metrics.observe_phase("validation", run.result.runtime_ms / 1000)
        files = output.files if output else {}
        report = results.test_report(files, run.result.exit_code)
        facts = results.run_facts(run.result, files)
        base_report = TestReport(cases=baseline.cases, parse_errors=tuple(baseline.parse_errors))
        base_facts = RunFacts(runtime_ms=baseline.runtime_ms, exit_code=baseline.exit_code)
        changed = results.changed_llm_count(baseline.llm_count, files, self.patterns)
        figures = score(report=report, facts=facts, baseline_report=base_report, baseline_facts=base_facts,
                        llm_reduction=llm_reduction(baseline.llm_count, changed))
        log.info("metrics_measured", extra={**ctx, "phase": "Collecting", "success_rate": figures.success_rate,
                                            "regression": figures.regression})
        recommendation, why = capped_for_dependencies(*self.settings.policy.decide(figures), changed_inputs)
        preserved_until = None
        if recommendation.preserves_sandbox:
            preserved_until = utcnow() + timedelta(seconds=self.settings.preserve_ttl_s)
            self._audit(view.id, name, "preserved", f"{recommendation.value}: kept for review",
                        details={"until": preserved_until.isoformat(),
                                 "artifacts": str(self.settings.artifacts_dir / view.id)})
        else:
            await self._teardown(view.id, name, reason="rollback: " + why)
            log.info("rollback_initiated", extra={**ctx, "phase": "Collecting"})
        outcome = Outcome(
            experiment_id=view.id, instance_id=view.instance_id, status="success", recommendation=recommendation,
            metrics=figures, baseline=baseline_of(base_report, base_facts), trace_id=view.trace_id,
            sandbox=SandboxInfo(runtime=self.runtime.name, image=image, name=name,
                                preserved=preserved_until is not None, preserved_until=preserved_until),
            timestamp=utcnow(),
        )
        final = self.store.finalize(outcome, phase=Phase.SUCCEEDED, reason=recommendation.value, message=why,
                                    preserved_until=preserved_until, actor=self.actor)
        lifecycle.observe_finished(final)
        log.info("experiment_complete", extra={**ctx, "phase": "Succeeded", "recommendation": recommendation.value})
        return final

    @staticmethod
    def _run_failure(run: SandboxRun) -> Failure | None:
        if run.cancelled:
            return Failure("cancelled", "cancelled by request while running")
        if run.timed_out or run.state.reason == "deadline_exceeded":
            return Failure("timeout", "the sandbox ran past timeout_ms and was killed")
        if run.state.oom_killed:
            return Failure("oom_killed", "the sandbox exceeded its memory limit and was killed by the kernel")
        if run.result.status == "patch_failed":
            return Failure("patch_failed", run.result.message or "the change did not apply")
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
