"""Wiring: build the store, runtime, image builder, intake and executor from
settings. Parts are made on first use, so ``genesis get`` needs no Docker."""

from __future__ import annotations

import logging
from functools import cached_property

from orchestrator.domain import disk
from orchestrator.domain.capabilities import pids_startup_warning
from orchestrator.errors import GenesisError

from orchestrator.pipeline.execute import Executor
from orchestrator.pipeline.intake import Intake
from orchestrator.settings import Settings
from orchestrator.store import db
from orchestrator.store.repository import Store

log = logging.getLogger(__name__)


class App:
    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        self.settings = settings
        self._migrate = migrate

    @cached_property
    def engine(self):
        engine = db.make_engine(self.settings.db_url)
        if self._migrate:
            db.upgrade(engine)
        return engine

    @cached_property
    def store(self) -> Store:
        return Store(self.engine, legacy_mirrors=self.settings.nats.legacy_mirrors)

    @cached_property
    def runtime(self):
        """The sandbox runtime ``settings.runtime`` names: the one place that asks which it is;
        everything else asks ``runtime.capabilities``."""
        if self.settings.runtime == "kubernetes":
            from orchestrator.runtimes.kubernetes import from_settings
            return from_settings(self.settings)
        return self.docker

    @cached_property
    def docker(self):
        """The Docker engine: the sandbox runtime, and on Kubernetes the snapshot image builder."""
        from orchestrator.runtimes.docker import DockerRuntime
        # On Kubernetes this engine only builds images: sandbox_runtime is refused there (check_runtime).
        sandbox_runtime = self.settings.sandbox_runtime if self.settings.runtime == "docker" else None
        egress = self.settings.sandbox_egress and self.settings.runtime == "docker"
        return DockerRuntime(base_url=self.settings.docker_url, sandbox_runtime=sandbox_runtime,
                             egress_installation=self.settings.installation if egress else None,
                             egress_labels={**self.settings.extra_labels, **self.settings.sandbox_selector()})

    @cached_property
    def snapshots(self):
        from orchestrator.runtimes.docker_images import DockerImages
        from orchestrator.snapshots.builder import SnapshotBuilder
        images = DockerImages(self.docker.client)
        registry = self.runtime.capabilities.image_registry
        if registry:  # the runtime pulls from there: every snapshot is pushed once built
            from orchestrator.runtimes.docker_images import RegistryMirror
            images = RegistryMirror(images, registry)
        from orchestrator.runtimes.base import LABEL_BUILT_BY
        # Environment and snapshot images carry the installation that built them, so the
        # cleanup job removes only its own from an engine several installations may share.
        labels = {**self.settings.extra_labels, LABEL_BUILT_BY: self.settings.installation}
        return SnapshotBuilder(images, images_dir=self.settings.images_dir,
                               base_image=self.settings.base_image, extra_labels=labels,
                               build=self.settings.build, logs_dir=self.settings.build_logs_dir)

    def check_runtime(self) -> None:
        """Refuse to start (GenesisError bad_config) with a ``sandbox_runtime`` that cannot be
        used: on Kubernetes (``kubernetes.runtime_class`` is that setting there), or one the
        Docker engine has not registered. Reading the runtime's capabilities asks the engine."""
        if self.settings.sandbox_runtime is None:
            return
        if self.settings.runtime != "docker":
            raise GenesisError("sandbox_runtime: a Docker runtime setting; on Kubernetes name the "
                               "RuntimeClass in kubernetes.runtime_class", code="bad_config")
        capabilities = self.runtime.capabilities
        log.info("sandbox runtime", extra={"sandbox_runtime": capabilities.sandbox_runtime,
                                           "kernel": capabilities.kernel, "seccomp": capabilities.seccomp,
                                           "network": capabilities.network})

    def check_network(self) -> None:
        """Once, at start-up: whether sandboxes may have a network (``sandbox_egress``, and on
        Docker the filtered egress network, made ready here), and whether a pids limit can be
        promised; what cannot be given is logged with why, and refused at intake."""
        if "_network_checked" in self.__dict__:
            return
        runtime = self.runtime
        prepare = getattr(runtime, "prepare_egress", None)
        why = prepare() if prepare is not None else runtime.capabilities.network_note or None
        if why and self.settings.sandbox_egress:
            log.warning("sandboxes get no network; network: true is refused", extra={"why": why})
        else:
            log.info("sandbox network", extra={"network": why is None, "why": why})
        warning = pids_startup_warning(runtime.capabilities, runtime=runtime.name)
        if warning:
            log.warning(warning)
        self.__dict__["_network_checked"] = True

    def resolve_gpus(self) -> list[str]:
        """Check the ``gpus`` setting against what the runtime can give, once: host devices
        are detected (``"auto"`` becomes their ids), a count is taken as listed; raises
        GenesisError(bad_config) for GPUs that cannot be given, so Genesis refuses to start
        rather than promise them."""
        if "_gpus" not in self.__dict__:
            gpus = self.settings.gpus
            model = self.runtime.capabilities.gpus
            if gpus and model == "none":
                raise GenesisError(f"gpus: the {self.runtime.name} runtime cannot give sandboxes GPUs",
                                   code="bad_config")
            if gpus == "auto" and model == "count":
                raise GenesisError(f'gpus: "auto" needs a runtime that detects host devices; on '
                                   f"{self.runtime.name} list as many ids as the sandbox quota grants",
                                   code="bad_config")
            if gpus and model == "devices":
                from orchestrator.runtimes.gpus import detect_gpus, docker_can_use_gpus, resolve_gpus
                detected, source = detect_gpus()
                gpus = resolve_gpus(gpus, detected=detected, docker_ready=docker_can_use_gpus(self.docker.info()))
                log.info("gpus resolved", extra={"gpus": gpus, "source": source})
            self.settings = self.settings.model_copy(update={"gpus": list(gpus)})
            self.__dict__["_gpus"] = list(gpus)
        return self.__dict__["_gpus"]

    def check_disk_quota(self) -> None:
        """Once, at start-up: whether the runtime caps ``resources.disk``. Where it cannot, a
        WARNING (``disk_quota: warn``: sandboxes run unbounded) or GenesisError(bad_config)
        (``refuse``: Genesis does not start) — never silently."""
        if "_disk_checked" in self.__dict__:
            return
        runtime = self.runtime
        if self.settings.runtime == "docker":
            runtime.detect_disk_quota()
        capabilities = runtime.capabilities
        problem = disk.startup_problem(enforced=capabilities.disk_quota, storage=capabilities.disk_storage,
                                       mode=self.settings.disk_quota, runtime=runtime.name)
        if problem is not None and problem[0] == "error":
            raise GenesisError(problem[1], code="bad_config")
        if problem is not None:
            log.warning(problem[1], extra={"storage": capabilities.disk_storage})
        else:
            log.info("disk quotas enforced", extra={"storage": capabilities.disk_storage})
        self.__dict__["_disk_checked"] = True

    @cached_property
    def intake(self) -> Intake:
        self.check_runtime()
        self.check_network()
        self.resolve_gpus()
        return Intake(self.settings, self.store, capabilities=self.runtime.capabilities)

    @cached_property
    def executor(self) -> Executor:
        self.check_runtime()
        self.check_network()
        self.resolve_gpus()
        self.check_disk_quota()
        from orchestrator.controller.fenced import FencedRuntime
        # The audit trail names the process that acted: controller:<host>:<pid>:<nonce>,
        # the holder of its lease. Its runtime refuses effects once its term lapsed.
        return Executor(settings=self.settings, store=self.store, runtime=FencedRuntime(self.runtime),
                        snapshots=self.snapshots, actor=f"controller:{self.leader.holder}")

    @cached_property
    def leader(self):
        from orchestrator.store.db import head_revision
        from orchestrator.store.leases import Leader
        return Leader(self.engine, ttl_s=self.settings.lease_ttl_s, schema=head_revision())

    def controller(self, *, leader: bool = True):
        """A reconciling controller; ``leader=False`` skips the election (tests, ``--once``)."""
        from orchestrator.controller.loop import Controller
        return Controller(self.executor, leader=self.leader if leader else None,
                          pass_interval_s=self.settings.pass_interval_s, actor=self.executor.actor)

    def close(self) -> None:
        for part in ("runtime", "docker"):
            if part in self.__dict__:
                self.__dict__[part].close()
        if "engine" in self.__dict__:
            self.engine.dispose()
