"""The environment tier, as pure decisions: what keys an environment image,
whether it is pinned, which paths of a change are environment inputs, and
whether a failed baseline failed because of its environment.

Images are built in three tiers (see ``docs/environments.md``):

    toolchain    images/toolchain-<name>: the language, the sandbox user, the runner
    environment  the toolchain + the repository's dependencies, from ``setup`` run over
                 the input files only; keyed by a hash of the toolchain image, the
                 setup commands and the inputs' contents, so commits that leave the
                 inputs alone share one environment image
    snapshot     the environment + the tree at one commit (+ ``snapshot_setup``)

Nothing here does I/O: git reads and builds live in ``orchestrator.snapshots``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from typing import Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.domain.models import Validation

DAY_S = 86_400
REPO_FILE = ".genesis.yaml"  # the repository's own configuration, read at base_ref
# Files whose presence means every dependency version is fixed.
LOCK_FILES = frozenset({
    "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "Cargo.lock",
    "poetry.lock", "uv.lock", "Pipfile.lock", "pdm.lock", "go.sum", "Gemfile.lock", "composer.lock",
})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": DAY_S, "w": 7 * DAY_S}


def parse_duration(value: object) -> float:
    """Seconds from ``3600``, ``"90m"``, ``"7d"`` or ``"2w"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (want seconds, or e.g. 90m, 12h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


class EnvironmentConfig(BaseModel):
    """A repository's dependency tier: ``setup`` run once per set of ``inputs``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    setup: list[str] = Field(default_factory=list, max_length=64)
    inputs: list[str] = Field(default_factory=list, max_length=64)  # globs at the commit
    max_age_s: float = Field(default=7 * DAY_S, alias="max_age", gt=0)  # unpinned images age out

    @field_validator("max_age_s", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)

    @field_validator("inputs")
    @classmethod
    def _relative(cls, globs: list[str]) -> list[str]:
        for glob in globs:
            if not glob or glob.startswith("/") or ".." in glob.split("/"):
                raise ValueError(f"environment input {glob!r} must be a relative path or glob inside the repository")
        return globs


class RepoFile(BaseModel):
    """The keys a repository may set in its own ``.genesis.yaml`` (read at ``base_ref``).

    Operator-only settings (the path, ``allow_dependency_changes``,
    ``allow_validation_override``) are not
    among them: a repository cannot widen what Genesis lets its changes do.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    toolchain: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    environment: EnvironmentConfig | None = None
    snapshot_setup: list[str] | None = Field(default=None, max_length=64)
    validation: Validation | None = None
    protected: list[str] | None = Field(default=None, max_length=256)
    test_files: list[str] | None = Field(default=None, max_length=256)
    pytest_plugins: list[str] | None = Field(default=None, max_length=64)
    test_timeout_s: float | None = Field(default=None, gt=0)


def input_paths(paths: Iterable[str], globs: Iterable[str]) -> list[str]:
    """The repository paths that are environment inputs.

    A glob is matched against the whole repo-relative path with ``fnmatch``
    rules (``requirements*.txt`` matches at the root only; ``*/package.json``
    one level down; ``*`` crosses ``/``).
    """
    globs = list(globs)
    return sorted(p for p in paths if any(fnmatch.fnmatchcase(p, g) for g in globs))


def environment_key(*, toolchain_id: str, setup: Iterable[str], inputs: dict[str, bytes]) -> str:
    """The hash that names an environment image: same key, same image."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"toolchain": toolchain_id, "setup": list(setup)}).encode())
    for path in sorted(inputs):
        digest.update(b"\0" + path.encode() + b"\0" + hashlib.sha256(inputs[path]).digest())
    return digest.hexdigest()


_EXACT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-\[\], ]*===?\s*[A-Za-z0-9][A-Za-z0-9.+!_-]*$")


def _pinned_requirements(text: str) -> bool:
    """Every requirement is ``name==version`` (markers aside); an include, an
    editable, a URL or a wildcard version is not pinned."""
    lines = [line.split(" #", 1)[0].strip() for line in text.replace("\\\n", " ").splitlines()]
    requirements = [line.split(";", 1)[0].strip() for line in lines if line and not line.startswith("#")]
    hashes = re.compile(r"\s--hash=\S+")
    return bool(requirements) and all(
        _EXACT.match(hashes.sub("", line).strip()) is not None for line in requirements if not line.startswith("--hash"))


def is_pinned(inputs: dict[str, bytes]) -> bool:
    """True when the inputs fix every version: every requirement file pins every
    line with ``==``, and any other manifest comes with a lock file
    (``package-lock.json``, ``Cargo.lock``, ``uv.lock``, ...). Unpinned
    environments are rebuilt after ``max_age``: a new release upstream changes
    what the same inputs install."""
    requirements = {p: d for p, d in inputs.items() if p.endswith(".txt")}
    if not all(_pinned_requirements(data.decode("utf-8", "replace")) for data in requirements.values()):
        return False
    others = [p for p in inputs if p not in requirements]
    if not others:
        return bool(requirements)
    return bool({p.rsplit("/", 1)[-1] for p in others} & LOCK_FILES)


def should_rebuild(*, pinned: bool, age_s: float | None, max_age_s: float) -> bool:
    """An existing environment image is reused unless unpinned and older than ``max_age``."""
    return age_s is None or (not pinned and age_s > max_age_s)


# -- a baseline that failed because of its environment ---------------------------

_PY_MISSING = re.compile(r"(?:ModuleNotFoundError|ImportError): No module named '([A-Za-z0-9_.]+)'")
_PY_NO_RUNNER = re.compile(r"^\S*python[0-9.]*: No module named ([A-Za-z0-9_.]+)$", re.M)  # `python3 -m pytest`
_NODE_MISSING = re.compile(r"(?:Cannot find module|Cannot find package) '([^']+)'")
_RUST_MISSING = re.compile(r"error: (?:no matching package named `([^`]+)` found"
                           r"|failed to (?:select a version|load source|get `([^`]+)`)).*")
_NO_COMMAND = re.compile(r"genesis-runner: cannot run validation: .*|^\S*: (?:\d+: )?\S+: (?:command )?not found$",
                         re.M)


def repo_modules(paths: Iterable[str]) -> frozenset[str]:
    """Every module or package name the tree could provide itself: each directory
    name and each ``.py``/``.js`` stem, at any depth (a monorepo keeps packages
    under ``services/billing/billing/``). Deliberately wide: a name found here is
    the repository's own, so its import failing is judged as broken code, never
    excused as a broken environment."""
    names: set[str] = set()
    for path in paths:
        parts = path.split("/")
        names.update(parts[:-1])
        stem, dot, ext = parts[-1].rpartition(".")
        if dot and ext in ("py", "js", "mjs", "cjs", "ts"):
            names.add(stem)
    return frozenset(names)


def environment_failure(*, texts: Iterable[str], exit_code: int | None, own_modules: frozenset[str]) -> str | None:
    """Why a baseline failed because of its environment, quoting the first
    error line; ``None`` when nothing in its output says so.

    Only asked of a baseline that failed. Environment failures: the validation
    command (or one it runs through ``sh``) is missing, or an import of a
    module the repository does not provide itself (``ModuleNotFoundError:
    No module named 'requests'``, node's ``Cannot find module 'lodash'``, an
    unresolved crate). A failing import of the repository's own module is a
    broken base, which is judged as usual (a change that fixes it is FAIL_TO_PASS).
    """
    for text in texts:
        if not text:
            continue
        if exit_code == 127 and (match := _NO_COMMAND.search(text)):
            return match.group(0).strip()[:300]
        for match in [*_PY_MISSING.finditer(text), *_PY_NO_RUNNER.finditer(text)]:
            if match.group(1).split(".")[0] not in own_modules:
                return match.group(0).strip()
        for match in _NODE_MISSING.finditer(text):
            name = match.group(1)
            if not name.startswith((".", "/", "node:")):
                top = "/".join(name.split("/")[:2]) if name.startswith("@") else name.split("/")[0]
                if top not in own_modules:
                    return match.group(0)
        if match := _RUST_MISSING.search(text):
            return match.group(0).strip()[:300]
    return None
