"""Run one recorded experiment to its verdict, and roll back or preserve.

Steps, each a phase transition on the record (SPEC §5): Building (the
change computed on the host and scanned, snapshot image, baseline),
Running (pass A: the base commit's tests against the changed source),
Collecting (pass B when the change edits test files, reruns of pass A when
a test went PASS_TO_FAIL, then the grade and the verdict), then Succeeded or
Failed. The sandbox is torn down on ``rollback`` and every failure, and
preserved (stopped, artifacts exported) on ``merge*`` until its TTL.

The decisions in here are delegated to pure functions (grading, evidence,
tamper scan, scoring, policy); this module sequences I/O and records it.
See docs/verdicts.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta

from orchestrator.domain import evidence, grading, results, tamper
from orchestrator.domain.environment import REPO_FILE, environment_failure, repo_modules
from orchestrator.domain.junit import TestReport
from orchestrator.domain.llm_calls import LlmPatterns, count_file, llm_reduction
from orchestrator.domain.models import (ExperimentRequest, Outcome, Phase, Resources, SandboxInfo, Validation,
                                        parse_memory)
from orchestrator.domain.planner import baseline_label
from orchestrator.domain.policy import capped_for_dependencies, named
from orchestrator.domain.protected import INSEPARABLE, protected_edits, tests_among
from orchestrator.domain.records import AuditLine, CachedBaseline, ExperimentView
from orchestrator.domain.scoring import RunFacts, baseline_of, score
from orchestrator.errors import ImageBuildError, RequestRejected, SandboxGone
from orchestrator.pipeline import artifacts, lifecycle, passes
from orchestrator.pipeline.intake import dependency_changes
from orchestrator.pipeline.passes import Failure, Run
from orchestrator.pipeline.pools import Pools
from orchestrator.runtimes.base import (
    LABEL_ATTEMPT, LABEL_EXPERIMENT, LABEL_INSTANCE, LABEL_ROLE, Runtime, SandboxOutput, SandboxSpec,
)
from orchestrator.settings import RepoConfig, Settings
from orchestrator.snapshots import catalog, changes, git, repofile
from orchestrator.snapshots.builder import Snapshot, SnapshotBuilder
from orchestrator.store.aio import as_async
from orchestrator.store.repository import Store, utcnow
from orchestrator.telemetry import metrics

log = logging.getLogger(__name__)
__all__ = ["Executor", "Failure", "baseline_key", "sandbox_name"]
PLANS_KEPT = 256  # experiments whose plan stays in memory between their start and their collection


@dataclass(frozen=True)
class Plan:
    """How one change is judged, computed on the host from the request and the snapshot."""

    change: changes.Change
    protected: list[str]  # protected infrastructure it edits: run from the base commit
    tests: list[str]  # test files it edits: pass A runs the base's, pass B its own
    pass_a: list[dict]  # the runner's file writes for pass A
    pass_b: list[dict] | None  # None: pass A is the whole change


def sandbox_name(experiment_id: str, attempt: int) -> str:
    return f"genesis-{experiment_id}-a{attempt}"


def baseline_key(*, repo: str, commit: str, validation: Validation, image: str, resources: Resources,
                 plugins: list[str], grading_version: int, repetitions: int, test_timeout_s: float | None,
                 sandbox_runtime: str | None = None, seccomp: str = "default") -> str:
    """One baseline per tree, command, image, resources, sandbox runtime and way of grading:
    a change is timed against a baseline that ran with its own resources, under the same
    runtime (gVisor runs a test suite several times slower than runc)."""
    fields = [repo, commit, validation.command, validation.workdir, validation.report, image,
              resources.cpu, resources.memory_bytes, resources.gpu, sorted(plugins), grading_version,
              repetitions, test_timeout_s]
    if sandbox_runtime is not None:  # absent for the default: baselines kept from before stay valid
        fields.append(sandbox_runtime)
    if seccomp != "default":  # a stricter filter may fail tests the default lets pass
        fields.append(f"seccomp={seccomp}")
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


class Executor:
    def __init__(self, *, settings: Settings, store: Store, runtime: Runtime, snapshots: SnapshotBuilder,
                 actor: str = "controller", llm_patterns: LlmPatterns | None = None) -> None:
        self.settings = settings
        self.runtime = runtime
        self.snapshots = snapshots
        self.actor = actor
        self.patterns = llm_patterns or LlmPatterns()
        self.store = as_async(store)  # never blocks the loop
        self.pools = Pools(runtime=runtime, store=self.store, settings=settings, actor=actor)
        self._snapshot_bytes_known = False  # the snapshot-bytes gauge, set once and after each build
        self._plans: OrderedDict[tuple[str, str], Plan] = OrderedDict()  # made at start, read again at collect
        self.sandboxes = passes.Sandboxes(runtime=runtime, store=self.store, actor=actor,
                                          max_file_bytes=settings.max_output_file_bytes, pools=self.pools)

    # -- steps the controller drives ---------------------------------------------

    async def start(self, experiment_id: str, *, view: ExperimentView | None = None) -> ExperimentView:
        """Building → Running: the plan, snapshot image, baseline, then pass A's sandbox.
        ``view``: the record as its admission left it (read from the store otherwise).

        Idempotent for one attempt: an interrupted start is simply run again
        (deterministic image tags and sandbox names; leftovers are removed).
        Infrastructure errors (``RuntimeFailure``) propagate for the
        controller to retry; failures of the change finalize the experiment.
        """
        resumed = view is None  # not its admission's own start: an earlier one may have been cut short
        view = view if view is not None else await self.store.get(experiment_id)
        if view.phase is not Phase.BUILDING:
            return view
        ctx = self._ctx(view)
        try:
            if view.cancel_requested:
                raise Failure("cancelled", "cancelled before it started")
            return await self._start(view, ctx, resumed=resumed)
        except Failure as failure:
            return await self._failed(experiment_id, failure, ctx)

    async def collect(self, experiment_id: str) -> ExperimentView:
        """Running (pass A exited) → Collecting → Succeeded | Failed."""
        view = await self.store.transition(experiment_id, Phase.COLLECTING, reason="Collecting", actor=self.actor,
                                           message="its sandbox exited", only_from=Phase.RUNNING)
        if view.phase is not Phase.COLLECTING:
            return view
        ctx = self._ctx(view)
        try:
            return await self._collect(view, ctx)
        except Failure as failure:
            return await self._failed(experiment_id, failure, ctx)

    async def kill(self, experiment_id: str, sandbox: str, *, reason: str) -> None:
        """Stop a running sandbox for ``reason`` (timeout | cancelled); collect follows."""
        await self.store.set_kill_reason(experiment_id, reason)
        view = await self.store.get(experiment_id)
        await self.runtime.kill(sandbox, uid=view.sandbox_uid)  # the object recorded at creation
        if reason == "timeout":
            log.warning("experiment_timeout", extra={**self._ctx(view), "sandbox": sandbox, "phase": "Running"})
        why = "killed at the timeout" if reason == "timeout" else "killed: cancelled by request"
        await self.sandboxes.audit(experiment_id, sandbox, "stopped", why)

    def _ctx(self, view: ExperimentView) -> dict:
        return {"experiment_id": view.id, "instance_id": view.instance_id, "trace_id": view.trace_id}

    async def _failed(self, experiment_id: str, failure: Failure, ctx: dict) -> ExperimentView:
        log.warning("experiment_failed", extra={**ctx, "phase": "Failed", "code": failure.code,
                                                "reason": str(failure)})
        return await self.fail(await self.store.get(experiment_id), failure.code, str(failure))

    async def _start(self, view: ExperimentView, ctx: dict, *, resumed: bool = False) -> ExperimentView:
        spec = view.spec
        assert spec is not None and view.commit is not None
        repo = self._repo(spec.repo, view.commit)
        log.info("experiment_start", extra={**ctx, "phase": "Building"})
        changed = dependency_changes(spec, repo)
        if changed and not repo.allow_dependency_changes:
            raise Failure("dependency_change_refused", f"the change edits environment inputs ({', '.join(changed)})")
        plan = await self._plan(spec, repo, view.commit)
        findings = await asyncio.to_thread(self._scan, plan)
        if findings:
            raise Failure("tampering_suspected", "the change reaches into the test runner or its evidence: "
                          + "; ".join(str(f) for f in findings[:10]))
        snap = await self._snapshot(view, repo)
        own = snap
        if repo.environment and set(changed) - {REPO_FILE}:
            # The change's own dependencies: an environment built from its inputs, without credentials.
            inputs = await asyncio.to_thread(repofile.inputs_after, repo, view.commit, plan.change)
            own = await self._snapshot(view, repo, inputs=inputs)
        if snap.built or own.built or not self._snapshot_bytes_known:  # the sum changes only with a build
            images = await self.store.images()
            metrics.SNAPSHOT_BYTES.set(sum(i["size_bytes"] for i in images if i["tier"] == "snapshot"))
            self._snapshot_bytes_known = True
        validation = spec.validation or repo.validation
        note = f"; the change's own environment {own.environment}" if own is not snap else ""
        # The images go on the record with its next change (waiting for the baseline, or running).
        images = dict(image=own.tag, baseline_image=snap.tag)
        ready = f"snapshot {snap.tag} ({'built' if snap.built else 'cache hit'} in {snap.seconds:.2f}s){note}"
        waiting = await self._await_baseline(view, spec, snap.tag, validation, repo, images=images, ready=ready)
        if waiting is not None:
            return waiting
        launched = await self.sandboxes.launch(
            await self._sandbox(view, name=sandbox_name(view.id, view.attempt), image=own.tag, role="experiment",
                                writes=plan.pass_a, validation=validation, repo=repo),
            experiment_id=view.id, pooled=True, resumed=resumed)
        name = launched.name
        deadline = utcnow() + timedelta(milliseconds=spec.timeout_ms)
        log.info("sandbox_created", extra={**ctx, "phase": "Running", "sandbox": name})
        log.info("changes_applied", extra={**ctx, "phase": "Running", "sandbox": name,
                                           "bundle": "delivered to /genesis/in, applied by the runner"})
        passes_note = "pass A of two" if plan.pass_b is not None else "the whole change in one pass"
        return await self.store.transition(view.id, Phase.RUNNING, reason="SandboxRunning", actor=self.actor,
                                     message=f"{name} ({passes_note}, {launched.tier}); "
                                             f"created at {launched.created_wall_ms} ms; {ready}",
                                     audits=launched.audits, sandbox_name=name, sandbox_uid=self.sandboxes.uid(name),
                                     deadline_at=deadline, **images)

    async def _plan(self, spec: ExperimentRequest, repo: RepoConfig, commit: str) -> Plan:
        """The change on the host; which of its files are protected, which are tests. An
        experiment's request and commit never change, so its plan is made once per process
        (the last PLANS_KEPT are kept: the start makes it, the collection reads it)."""
        key = (spec.experiment_id, commit)
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        plan = await self._make_plan(spec, repo, commit)
        self._plans[key] = plan
        while len(self._plans) > PLANS_KEPT:
            self._plans.popitem(last=False)
        return plan

    async def _make_plan(self, spec: ExperimentRequest, repo: RepoConfig, commit: str) -> Plan:
        files = [f.model_dump(exclude_none=True) for f in spec.changes.files]
        try:
            change = await asyncio.to_thread(changes.compute, repo, commit, patch=spec.changes.patch, files=files)
        except RequestRejected as exc:
            raise Failure(exc.code, str(exc)) from exc
        edited = change.edited
        protected = protected_edits(repo.toolchain, change.contents("before"), change.contents("after"),
                                    globs=repo.protected)
        tests = [] if repo.toolchain in INSEPARABLE else \
            [t for t in tests_among(repo.toolchain, edited, globs=repo.test_files) if t not in protected]
        source = [p for p in edited if p not in protected and p not in tests]
        pass_b = change.writes([p for p in edited if p not in protected]) if tests else None
        return Plan(change=change, protected=protected, tests=tests, pass_a=change.writes(source), pass_b=pass_b)

    @staticmethod
    def _scan(plan: Plan) -> list[tamper.Finding]:
        """What the change brings in: findings of its files that the base versions lack."""
        judged = [p for p in plan.change.edited if p not in plan.protected]
        before, after = plan.change.contents("before"), plan.change.contents("after")
        return tamper.introduced(before={p: before[p] for p in judged}, after={p: after[p] for p in judged},
                                 test_paths=set(plan.tests))

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
        builds = await self.store.call(catalog.record_use, snap, repo=view.repo, commit=view.commit, toolchain=repo.toolchain)
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
                await self.sandboxes.teardown(view.id, view.sandbox_name, uid=view.sandbox_uid,
                                              reason=f"rollback: {view.kill_reason}")
                raise Failure(view.kill_reason, f"{view.kill_reason}: the sandbox was stopped before it ran")
            raise SandboxGone(f"sandbox {view.sandbox_name} vanished before its results were collected")
        cancelled = view.cancel_requested or view.kill_reason == "cancelled"
        run = await self.sandboxes.collect(view.sandbox_name, state, timed_out=view.kill_reason == "timeout",
                                           cancelled=cancelled)
        repo = self._repo(spec.repo, view.commit or "")
        validation = spec.validation or repo.validation
        baseline = await self.store.baseline(self._baseline_key(spec, view.commit or "", validation,
                                                          view.baseline_image or view.image or "", repo))
        plan = await self._plan(spec, repo, view.commit or "")
        artifacts.export(self.settings.artifacts_dir, view.id, run.output, full_log=run.log,
                         diff=plan.change.diff())
        try:
            return await self._conclude(view, spec, run, baseline, plan, repo, validation, ctx)
        except Failure as failure:
            await self.sandboxes.teardown(view.id, run.name, uid=view.sandbox_uid, reason=f"rollback: {failure.code}")
            log.info("rollback_initiated", extra={**ctx, "phase": "Collecting", "code": failure.code})
            raise
        except SandboxGone:  # the infrastructure's doing: the attempt is retried
            why = f"disrupted: {run.state.reason}" if run.state.disrupted else "sandbox ended without a result"
            await self.sandboxes.teardown(view.id, run.name, uid=view.sandbox_uid, reason=why)
            raise

    # -- sandboxes ----------------------------------------------------------------

    def _labels(self, *, experiment: str, instance: str, role: str, attempt: int) -> dict[str, str]:
        return {**self.settings.extra_labels, **self.settings.sandbox_selector(), LABEL_EXPERIMENT: experiment,
                LABEL_INSTANCE: instance, LABEL_ROLE: role, LABEL_ATTEMPT: str(attempt)}

    async def _sandbox(self, view: ExperimentView, *, name: str, image: str, role: str, writes: list[dict],
                 validation: Validation, repo: RepoConfig) -> SandboxSpec:
        spec = view.spec
        assert spec is not None
        res = spec.resources
        gpus = view.gpus  # whole devices the controller assigned at admission (the view is read after it)
        labels = self._labels(experiment=view.id, instance=view.instance_id, role=role, attempt=view.attempt)
        return SandboxSpec(name=name, image=image, labels=labels,
                           bundle=passes.bundle(writes, validation, pytest_plugins=repo.pytest_plugins,
                                                test_timeout_s=repo.test_timeout_s,
                                                seccomp=self.settings.sandbox_seccomp),
                           cpu=res.cpu, memory_bytes=res.memory_bytes, pids=res.pids, network=spec.network,
                           gpus=gpus, timeout_s=spec.timeout_ms / 1000, disk_bytes=res.disk_bytes,
                           **self._log_caps())

    def _log_caps(self) -> dict:
        return {"log_max_bytes": parse_memory(self.settings.sandbox_log_max_size),
                "log_max_files": self.settings.sandbox_log_max_files}

    async def _extra_run(self, view: ExperimentView, *, suffix: str, writes: list[dict], validation: Validation,
                         repo: RepoConfig) -> passes.Evidence:
        """Pass B or a rerun of pass A, in a fresh sandbox of its own, to its evidence."""
        spec = view.spec
        assert spec is not None and view.sandbox_name is not None
        own = sandbox_name(view.id, view.attempt)  # not a claimed pooled sandbox's name
        sandbox = await self._sandbox(view, name=f"{own}-{suffix}", image=view.image or "",
                                role="experiment-" + suffix.rstrip("0123456789"), writes=writes,
                                validation=validation, repo=repo)
        run = await self.sandboxes.run(sandbox, experiment_id=view.id, timeout_s=spec.timeout_ms / 1000)
        artifacts.export(self.settings.artifacts_dir, view.id, run.output, full_log=run.log, run=suffix)
        failure = passes.failure_of(run)
        if failure is not None:
            raise failure
        return passes.judge(run, validation)

    # -- baseline -----------------------------------------------------------------

    def _baseline_key(self, spec: ExperimentRequest, commit: str, validation: Validation, image: str,
                      repo: RepoConfig) -> str:
        verdict = self.settings.verdict
        return baseline_key(repo=spec.repo, commit=commit, validation=validation, image=image,
                            resources=spec.resources, plugins=repo.pytest_plugins,
                            grading_version=verdict.grading_version, repetitions=verdict.baseline_repetitions,
                            test_timeout_s=repo.test_timeout_s,
                            sandbox_runtime=self.runtime.capabilities.sandbox_runtime,
                            seccomp=self.settings.sandbox_seccomp)

    async def _await_baseline(self, view: ExperimentView, spec: ExperimentRequest, image: str, validation: Validation,
                              repo: RepoConfig, *, images: dict[str, str], ready: str) -> ExperimentView | None:
        """None when the baseline of this experiment's key is ready; otherwise it
        is planned (a record the controller drives, once per key) and the
        experiment waits in Building for it (its ``images`` and the snapshot's
        note, ``ready``, recorded with that). A failed baseline fails the
        experiments that waited for it; a later one plans it afresh."""
        key = self._baseline_key(spec, view.commit or "", validation, image, repo)
        if await self.store.baseline_phase(key) == "Succeeded":
            return None
        record = await self.store.baseline_record(key)
        if record is not None and record.phase == "Failed" and view.baseline_key == key:
            raise Failure("baseline_failed", record.message or "the baseline failed")
        if record is None or record.phase == "Failed":
            gpus = list((await self.store.get(view.id)).gpus)
            plan = {"validation": validation.model_dump(mode="json"), "cpu": spec.resources.cpu,
                    "memory_bytes": spec.resources.memory_bytes, "pids": spec.resources.pids,
                    "disk_bytes": spec.resources.disk_bytes,
                    "network": spec.network, "gpus": gpus, "timeout_ms": spec.timeout_ms,
                    "instance_id": view.instance_id}
            record = await self.store.plan_baseline(key=key, repo=spec.repo, commit=view.commit or "",
                                              command=validation.command, image=image, owner=view.id, plan=plan,
                                              repetitions=self.settings.verdict.baseline_repetitions)
        if record.phase == "Succeeded":
            return None
        return await self.store.transition(view.id, Phase.BUILDING, reason="WaitingForBaseline", actor=self.actor,
                                     baseline_key=key, **images,
                                     message=f"{ready}; baseline {key[:12]}: {record.phase}, repetition "
                                             f"{record.repetition + 1} of {record.repetitions}")

    # -- baselines (records the controller drives) ----------------------------------

    async def start_baseline(self, key: str) -> None:
        """Launch the next repetition of a Pending baseline, with its own deadline."""
        record = await self.store.baseline_record(key)
        if record is None or record.phase != "Pending":
            return
        plan = record.plan
        repo = self._repo(record.repo, record.commit)
        validation = Validation.model_validate(plan["validation"])
        name = f"genesis-baseline-{key[:16]}-{record.repetition}-a{record.attempts}"  # per launch
        labels = self._labels(experiment=baseline_label(key), instance=plan.get("instance_id", "baseline"),
                              role="baseline", attempt=record.attempts)
        sandbox = SandboxSpec(name=name, image=record.image, labels=labels,
                              bundle=passes.bundle([], validation, pytest_plugins=repo.pytest_plugins,
                                                   test_timeout_s=repo.test_timeout_s,
                                                   seccomp=self.settings.sandbox_seccomp),
                              cpu=plan["cpu"], memory_bytes=plan["memory_bytes"], pids=plan["pids"],
                              network=plan["network"], gpus=tuple(plan.get("gpus") or ()),
                              timeout_s=plan["timeout_ms"] / 1000, disk_bytes=plan.get("disk_bytes"),
                              **self._log_caps())
        owner = record.owner or baseline_label(key)
        try:
            launched = await self.sandboxes.launch(sandbox, experiment_id=owner)
        except Failure as failure:  # the runtime refused it as sent: no repetition can run
            await self.store.fail_baseline(key, str(failure))
            return
        await self.store.audit_lines(owner, launched.audits, actor=self.actor)
        await self.store.baseline_launched(key, sandbox_name=name, sandbox_uid=self.sandboxes.uid(name) or "",
                                     deadline_at=utcnow() + timedelta(milliseconds=plan["timeout_ms"]))

    async def kill_baseline(self, key: str, sandbox: str) -> None:
        """The repetition ran past its deadline: stopped, then collected as a timeout."""
        await self.store.set_baseline_kill_reason(key, "timeout")
        record = await self.store.baseline_record(key)
        await self.runtime.kill(sandbox, uid=record.sandbox_uid if record else None)
        await self.sandboxes.audit(record.owner if record else None, sandbox, "stopped", "baseline killed at its timeout")

    async def baseline_lost(self, key: str) -> None:
        """Its sandbox vanished: the repetition is launched again, within the backoff limit."""
        record = await self.store.baseline_record(key)
        if record is None or record.phase != "Running":
            return
        if record.sandbox_name:
            await self.sandboxes.teardown(record.owner, record.sandbox_name, uid=record.sandbox_uid,
                                          reason="baseline sandbox lost")
        if await self.store.baseline_lost(key) >= self.settings.backoff_limit:
            await self.store.fail_baseline(key, f"the baseline's sandbox was lost {self.settings.backoff_limit} times")

    async def collect_baseline(self, key: str) -> None:
        """Read the repetition that exited; plan the next, or finish the baseline."""
        record = await self.store.baseline_record(key)
        if record is None or record.phase != "Running" or not record.sandbox_name:
            return
        state = await self.runtime.inspect(record.sandbox_name)
        timed_out = record.kill_reason == "timeout"
        if state.status == "missing" and not timed_out:
            await self.baseline_lost(key)
            return
        if state.status == "missing":  # stopped at its deadline before it ever ran
            run = Run(record.sandbox_name, state, SandboxOutput(files={}, log_tail=""), "", "", timed_out=True)
        else:
            run = await self.sandboxes.collect(record.sandbox_name, state, timed_out=timed_out)
        await self.sandboxes.teardown(record.owner, record.sandbox_name, uid=record.sandbox_uid,
                                      reason="baseline repetition collected")
        validation = Validation.model_validate(record.plan["validation"])
        try:
            report, facts, final = self._baseline_run(run, validation, self._repo(record.repo, record.commit),
                                                      record.commit)
        except SandboxGone:
            if await self.store.baseline_lost(key) >= self.settings.backoff_limit:
                await self.store.fail_baseline(key, f"the baseline's sandbox ended without a result "
                                              f"{self.settings.backoff_limit} times")
            return
        except Failure as failure:
            await self.store.fail_baseline(key, str(failure))
            return
        last = final or record.repetition + 1 >= record.repetitions
        done = await self.store.baseline_repetition(key, {"cases": report.cases, "parse_errors": list(report.parse_errors),
                                                    "runtime_ms": facts.runtime_ms, "exit_code": facts.exit_code},
                                              last=last)
        if last:
            await self._finish_baseline(done)

    async def _finish_baseline(self, record) -> None:
        """The repetitions as one cached baseline: tests whose outcome varied are flaky on this key."""
        reports = [TestReport(cases=r["cases"], parse_errors=tuple(r.get("parse_errors") or ())) for r in record.runs]
        runtimes = [int(r["runtime_ms"]) for r in record.runs]
        combined = grading.combine(reports)
        baseline = CachedBaseline(key=record.key, cases=combined.cases, parse_errors=list(combined.parse_errors),
                                  runtime_ms=grading.Timing(tuple(runtimes)).median_ms,
                                  exit_code=int(record.runs[-1]["exit_code"]),
                                  llm_count=await asyncio.to_thread(self._tree_llm_count, record.repo, record.commit),
                                  flaky=sorted(grading.varying(reports)), runtimes_ms=runtimes, created_at=utcnow())
        await self.store.put_baseline(baseline, repo=record.repo, commit=record.commit,
                                command=record.plan["validation"]["command"], image=record.image)

    def _baseline_run(self, run: Run, validation: Validation, repo: RepoConfig,
                      commit: str) -> tuple[TestReport, RunFacts, bool]:
        """One repetition's report and figures, and whether it ended the series.

        A baseline that times out or runs out of memory or disk is still the truth
        about the unmodified tree (no passing tests), so it is cached too.
        """
        failure = passes.failure_of(run)
        files = run.output.files
        if failure is not None and failure.code in ("timeout", "oom_killed", "disk_exceeded"):
            exit_code = run.state.exit_code if run.state.exit_code is not None else -1
            report = results.test_report(files, exit_code) if validation.report == "junit" \
                else results.test_report({}, exit_code)
            return report, RunFacts(runtime_ms=0, exit_code=exit_code), True
        try:
            found = passes.judge(run, validation)
        except Failure as exc:  # the unmodified tree's evidence does not hang together: not a change's fault
            exit_code = run.state.exit_code if run.state.exit_code is not None else -1
            self._check_environment(files, run.log, exit_code, repo, commit)  # the cause, when it is that
            raise Failure("baseline_failed", f"the baseline's evidence is unusable, so no change can be judged "
                                             f"on it: {exc}") from exc
        report = found.report
        if report.failed or report.errors or found.facts.exit_code:  # a clean baseline has no broken environment
            self._check_environment(files, run.log, found.facts.exit_code, repo, commit)
        return report, found.facts, False

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

    async def _conclude(self, view: ExperimentView, spec: ExperimentRequest, run: Run,
                        baseline: CachedBaseline | None, plan: Plan, repo: RepoConfig, validation: Validation,
                        ctx: dict) -> ExperimentView:
        failure = passes.failure_of(run)
        if failure is not None:
            raise failure
        evidence_a = passes.judge(run, validation)
        if baseline is None:
            raise SandboxGone("the baseline of this experiment is no longer cached")
        base_report = TestReport(cases=baseline.cases, parse_errors=tuple(baseline.parse_errors))
        missing = evidence.missing_tests(base_report, evidence_a.report, exempt=set(baseline.flaky))
        if missing:  # pass A runs the base's own test files: every base test must be there
            raise Failure("evidence_inconsistent", f"{run.name}: {len(missing)} of the base's tests did not run and "
                                                   f"no error says why: {', '.join(missing[:5])}")
        log.info("tests_completed", extra={**ctx, "phase": "Collecting", "exit_code": evidence_a.facts.exit_code})
        metrics.observe_phase("validation", evidence_a.facts.runtime_ms / 1000)
        evidence_b = None
        if plan.pass_b is not None:
            evidence_b = await self._extra_run(view, suffix="b", writes=plan.pass_b, validation=validation, repo=repo)
        grade, reruns = await self._grade(view, baseline, plan, repo, validation, evidence_a, evidence_b)
        base_facts = RunFacts(runtime_ms=baseline.runtime_ms, exit_code=baseline.exit_code)
        timing = grading.Timing(tuple(baseline.runtimes_ms))
        changed = results.changed_llm_count(baseline.llm_count, plan.change.contents("before"),
                                            plan.change.contents("after"), self.patterns)
        figures = score(report=grade.report, facts=evidence_a.facts, baseline_report=base_report,
                        baseline_facts=base_facts, llm_reduction=llm_reduction(baseline.llm_count, changed),
                        grade=grade, protected_changed=len(plan.protected), performance_noise=timing.noise)
        log.info("metrics_measured", extra={**ctx, "phase": "Collecting", "success_rate": figures.success_rate,
                                            "regression": figures.regression})
        recommendation, why = capped_for_dependencies(*self.settings.policy.decide(figures),
                                                      dependency_changes(spec, repo))
        why = named(why, pass_to_fail=grade.pass_to_fail, protected=plan.protected, flaky=grade.names(grading.FLAKY))
        return await self._finish(view, recommendation, why, figures=figures,
                                  baseline=baseline_of(base_report, base_facts, timing),
                                  tests=grade.summary(reruns=reruns, protected=plan.protected), ctx=ctx)

    async def _grade(self, view: ExperimentView, baseline: CachedBaseline, plan: Plan, repo: RepoConfig,
                     validation: Validation, evidence_a: passes.Evidence,
                     evidence_b: passes.Evidence | None) -> tuple[grading.Grade, int]:
        """Grade the passes; rerun pass A (fresh sandboxes, up to ``reruns``) while
        a test that went PASS_TO_FAIL has not passed again. One that does is
        flaky, and stays labelled for this baseline key."""
        base = TestReport(cases=baseline.cases, parse_errors=tuple(baseline.parse_errors))
        flaky = set(baseline.flaky)

        def graded() -> grading.Grade:
            return grading.grade(base=base, pass_a=evidence_a.report,
                                 pass_b=evidence_b.report if evidence_b is not None else None,
                                 edited_tests=plan.tests, flaky=flaky)

        grade = graded()
        suspects = grade.pass_to_fail
        reruns: list[TestReport] = []
        while suspects and len(reruns) < self.settings.verdict.reruns:
            found = await self._extra_run(view, suffix=f"r{len(reruns) + 1}", writes=plan.pass_a,
                                          validation=validation, repo=repo)
            reruns.append(found.report)
            if grading.passed_in(reruns, suspects) == set(suspects):
                break
        newly = grading.passed_in(reruns, suspects)
        if newly:
            await self.store.add_flaky(baseline.key, sorted(newly))
            flaky |= newly
            grade = graded()
        return grade, len(reruns)

    async def _finish(self, view: ExperimentView, recommendation, why: str, *, figures, baseline, tests: dict,
                      ctx: dict) -> ExperimentView:
        """Preserve or roll back pass A's sandbox, and record the outcome."""
        name = view.sandbox_name or sandbox_name(view.id, view.attempt)
        preserved_until, preserved = None, ()
        if recommendation.preserves_sandbox:  # its audit line is written with the outcome
            preserved_until = utcnow() + timedelta(seconds=self.settings.preserve_ttl_s)
            preserved = (AuditLine(name, "preserved", f"{recommendation.value}: kept for review",
                                   {"until": preserved_until.isoformat(),
                                    "artifacts": str(self.settings.artifacts_dir / view.id)}),)
        else:
            await self.sandboxes.teardown(view.id, name, uid=view.sandbox_uid, reason="rollback: " + why[:200])
            log.info("rollback_initiated", extra={**ctx, "phase": "Collecting"})
        outcome = Outcome(
            experiment_id=view.id, instance_id=view.instance_id, status="success", recommendation=recommendation,
            metrics=figures, baseline=baseline, tests=tests, trace_id=view.trace_id,
            sandbox=SandboxInfo(runtime=self.runtime.name, image=view.image or "", name=name,
                                sandbox_runtime=self.runtime.capabilities.sandbox_runtime,
                                preserved=preserved_until is not None, preserved_until=preserved_until),
            timestamp=utcnow(),
        )
        final = await self.store.finalize(outcome, phase=Phase.SUCCEEDED, reason=recommendation.value, message=why,
                                          preserved_until=preserved_until, actor=self.actor, audits=preserved)
        lifecycle.observe_finished(final)
        log.info("experiment_complete", extra={**ctx, "phase": "Succeeded", "recommendation": recommendation.value})
        return final

    async def fail(self, view: ExperimentView, code: str, message: str) -> ExperimentView:
        return await lifecycle.fail(self.store, view, code=code, message=message, actor=self.actor,
                              runtime_name=self.runtime.name,
                              sandbox_runtime=self.runtime.capabilities.sandbox_runtime)
