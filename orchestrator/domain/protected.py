"""Protected test infrastructure, and which of a change's files are tests.

A change rewarded for ``merge`` can win by editing what judges it rather
than what it claims to fix: a ``conftest.py`` hook, ``addopts`` that
deselect a broken test, a ``sitecustomize.py``. Those files are *protected*:
the verdict runs with the base commit's version of them, and a change that
edits one is never a plain ``merge`` (the reason names the files).

Protection is by whole file (globs, ``fnmatch`` over the repo-relative
path, ``*`` crossing ``/``), or by one section of a shared file: only the
``[tool.pytest…]`` tables of ``pyproject.toml`` and the ``[tool:pytest]``
section of ``setup.cfg`` are protected, so a change may still bump a
version in ``pyproject.toml``. A section edit restores the whole file for
the verdict (the rest of that file's edit is then not what runs).

Test files decide the two passes (see :mod:`orchestrator.domain.grading`):
pass A runs the base commit's test files against the changed source; pass B
runs the change's own. Where a toolchain keeps tests inside source files
(Rust's ``#[cfg(test)]`` modules) the two cannot be separated and there is
one pass.

Pure: file contents in, paths out.
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import tomllib
from typing import Callable, Iterable, Mapping

# Whole files, per toolchain. `.genesis.yaml` names the validation command itself.
PROTECTED: dict[str, tuple[str, ...]] = {
    "python": ("conftest.py", "*/conftest.py", "pytest.ini", "*/pytest.ini", "tox.ini", "*/tox.ini",
               "sitecustomize.py", "*/sitecustomize.py", "usercustomize.py", "*/usercustomize.py",
               "*.pth", ".genesis.yaml"),
    "node": ("jest.config.*", "*/jest.config.*", "vitest.config.*", "*/vitest.config.*", ".mocharc*",
             "*/.mocharc*", "jest.setup.*", "*/jest.setup.*", ".genesis.yaml"),
    "rust": (".cargo/*", "*/.cargo/*", "rust-toolchain", "rust-toolchain.toml", ".config/nextest.toml",
             ".genesis.yaml"),
}
PROTECTED["cuda"] = PROTECTED["python"]

TEST_FILES: dict[str, tuple[str, ...]] = {
    "python": ("test_*.py", "*/test_*.py", "*_test.py", "tests/*", "*/tests/*", "test/*", "*/test/*"),
    "node": ("*.test.*", "*.spec.*", "test/*", "*/test/*", "tests/*", "*/tests/*", "__tests__/*",
             "*/__tests__/*"),
    "rust": ("tests/*", "*/tests/*", "benches/*", "*/benches/*"),
}
TEST_FILES["cuda"] = TEST_FILES["python"]
# Tests that live in the source files themselves: pass A is pass B.
INSEPARABLE = frozenset({"rust"})


def _toml_pytest(data: bytes) -> object:
    tool = tomllib.loads(data.decode()).get("tool", {})
    return {k: v for k, v in tool.items() if k.startswith("pytest")} if isinstance(tool, dict) else tool


def _cfg_pytest(data: bytes) -> object:
    parser = configparser.RawConfigParser()
    parser.read_string(data.decode())
    return dict(parser["tool:pytest"]) if parser.has_section("tool:pytest") else None


def _package_json_test(data: bytes) -> object:
    doc = json.loads(data)
    return {k: doc.get(k) for k in ("scripts", "jest", "mocha", "ava")} if isinstance(doc, dict) else doc


# A shared file whose one part is protected: basename -> reader of that part.
SECTIONS: dict[str, dict[str, Callable[[bytes], object]]] = {
    "python": {"pyproject.toml": _toml_pytest, "setup.cfg": _cfg_pytest},
    "node": {"package.json": _package_json_test},
    "rust": {},
}
SECTIONS["cuda"] = SECTIONS["python"]


def _matches(path: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, glob) for glob in globs)


def _section(reader: Callable[[bytes], object], data: bytes | None) -> object:
    if data is None:
        return None
    try:
        return reader(data)
    except (ValueError, UnicodeDecodeError, configparser.Error, RecursionError) as exc:
        return ("unreadable", type(exc).__name__)  # never equal to a readable section


def protected_edits(toolchain: str, before: Mapping[str, bytes | None], after: Mapping[str, bytes | None],
                    *, globs: Iterable[str] | None = None) -> list[str]:
    """The paths whose protected part the change edits (``before``/``after``:
    contents of every touched path at the base and with the change; ``None``
    where absent). ``globs`` replaces the toolchain's whole-file list."""
    whole = tuple(globs) if globs is not None else PROTECTED.get(toolchain, (".genesis.yaml",))
    sections = SECTIONS.get(toolchain, {})
    edited = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        if _matches(path, whole):
            edited.append(path)
            continue
        reader = sections.get(path.rsplit("/", 1)[-1])
        if reader is not None and _section(reader, old) != _section(reader, new):
            edited.append(path)
    return edited


def tests_among(toolchain: str, paths: Iterable[str], *, globs: Iterable[str] | None = None) -> list[str]:
    """The test files among ``paths``: run from the base commit in pass A."""
    patterns = tuple(globs) if globs is not None else TEST_FILES.get(toolchain, TEST_FILES["python"])
    return sorted(p for p in paths if _matches(p, patterns))
