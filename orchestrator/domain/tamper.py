"""A change that reaches into what judges it: a static scan (the AST, not regex).

The test runner and the code under test share a process, so a change can
rewrite the runner's reports from the inside (a hook, a monkeypatch of
``_pytest``'s reporter, an ``atexit`` handler that rewrites the JUnit file).
No scan rules that out in principle; this one finds the known techniques
in the Python files a change writes, and the runtime audit hook
(``orchestrator/sandbox/audit.py``) watches what runs. A finding ends the
experiment as ``failed`` with ``tampering_suspected`` and the finding as
evidence: suspicion is never guessed into a verdict.

What counts, in a changed file that is not protected infrastructure (those
run from the base commit anyway), when the base version of the file does
not already have it (:func:`introduced`):

- importing runner internals (``_pytest``, pytest's reporting modules,
  ``pluggy``), statically or through ``__import__`` / ``importlib``, or a
  dynamic import whose name is not a literal;
- defining pytest hooks (``def pytest_...``) other than
  ``pytest_generate_tests`` in a test module; naming reporter objects
  (``TestReport``, ``LogXML``, ``TerminalReporter``, ...);
- ``atexit``, ``sys.modules`` surgery, ``gc.get_objects`` /
  ``get_referrers``, ``sys.settrace`` / ``setprofile`` / ``addaudithook``;
- naming the evidence: ``junit``, ``result.json``, ``coverage.xml``, the
  runner's ``GENESIS-`` markers (``metrics.json`` is the command's own);
- ``exec`` / ``eval`` / ``compile`` of anything but a literal, and signals
  sent to the parent (``os.kill(os.getppid(), …)``).

Pure: file contents in, findings out.
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, Mapping

RUNNER_MODULES = ("_pytest", "pluggy", "pytest_jsonreport", "xdist", "junit_xml")
REPORTER_NAMES = frozenset({
    "TestReport", "CollectReport", "CallInfo", "LogXML", "TerminalReporter", "JunitXml", "_NodeReporter",
    "pytest_runtest_logreport", "pytest_runtest_makereport", "pytest_report_teststatus", "hookimpl",
    "pytest_sessionfinish", "pytest_collection_modifyitems", "pytest_terminal_summary", "ExitCode",
})
ALLOWED_TEST_HOOKS = frozenset({"pytest_generate_tests"})
# The evidence's names. ``/genesis/out`` itself is not among them: a command may
# write its own figures to metrics.json there, which only ever count as custom.
EVIDENCE_WORDS = ("junit", "result.json", "genesis-result", "genesis-applied", "genesis-out", "genesis-audit",
                  "coverage.xml")
_CALLS = {
    ("atexit", "register"): "registers an atexit handler",
    ("gc", "get_objects"): "walks the interpreter's objects (gc.get_objects)",
    ("gc", "get_referrers"): "walks the interpreter's objects (gc.get_referrers)",
    ("sys", "settrace"): "installs a trace function",
    ("sys", "setprofile"): "installs a profile function",
    ("sys", "addaudithook"): "installs an audit hook",
    ("sys", "_getframe"): "reads the caller's frames",
    ("threading", "settrace"): "installs a trace function",
}
MAX_SOURCE_BYTES = 2 * 2**20  # larger files are findings themselves: none of the changes we judge is that


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _runner_module(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in RUNNER_MODULES)


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str, is_test: bool) -> None:
        self.path, self.is_test, self.found = path, is_test, []

    def flag(self, node: ast.AST, what: str) -> None:
        self.found.append(Finding(self.path, getattr(node, "lineno", 0), what))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if _runner_module(alias.name):
                self.flag(node, f"imports the test runner's internals ({alias.name})")
            elif alias.name in ("atexit", "ctypes"):
                self.flag(node, f"imports {alias.name}")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        names = {a.name for a in node.names}
        if _runner_module(module):
            self.flag(node, f"imports the test runner's internals ({module})")
        elif module in ("atexit", "ctypes"):
            self.flag(node, f"imports {module}")
        elif module == "pytest" and names & REPORTER_NAMES:
            self.flag(node, f"imports pytest's reporting objects ({', '.join(sorted(names & REPORTER_NAMES))})")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if node.name.startswith("pytest_") and not (self.is_test and node.name in ALLOWED_TEST_HOOKS):
            self.flag(node, f"defines the pytest hook {node.name} outside protected infrastructure")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in REPORTER_NAMES:
            self.flag(node, f"reaches the test runner's reporting ({_dotted(node) or node.attr})")
        if _dotted(node) == "sys.modules" and not isinstance(node.ctx, ast.Load):
            self.flag(node, "replaces sys.modules")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in REPORTER_NAMES:
            self.flag(node, f"names the test runner's reporting ({node.id})")
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if _dotted(node.value) == "sys.modules" and not isinstance(node.ctx, ast.Load):
            self.flag(node, "rewrites sys.modules")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and len(node.value) < 100_000:
            text = node.value.lower()
            for word in EVIDENCE_WORDS:
                if word in text:
                    self.flag(node, f"names the evidence ({word!r})")
                    break
            else:
                if _runner_module(node.value):
                    self.flag(node, f"names the test runner's internals ({node.value!r})")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = _dotted(node.func)
        head, _, tail = name.rpartition(".")
        if (head.rpartition(".")[2], tail) in _CALLS:
            self.flag(node, _CALLS[(head.rpartition(".")[2], tail)])
        if name in ("sys.modules.__setitem__", "sys.modules.update", "sys.modules.pop", "sys.modules.setdefault"):
            self.flag(node, "rewrites sys.modules")
        first = node.args[0] if node.args else None
        literal = isinstance(first, ast.Constant)
        if name in ("__import__", "importlib.import_module", "import_module") and first is not None and not literal:
            self.flag(node, "imports a module whose name is computed")
        if name in ("exec", "eval", "compile", "builtins.exec", "builtins.eval") and first is not None \
                and not literal:
            self.flag(node, f"runs computed code ({name})")
        if name in ("os.kill", "os.killpg") and any("getppid" in _dotted(n.func) for arg in node.args
                                                     for n in ast.walk(arg) if isinstance(n, ast.Call)):
            self.flag(node, "signals its parent process (the runner)")
        self.generic_visit(node)


def scan(files: Mapping[str, bytes | None], *, test_paths: frozenset[str] | set[str] = frozenset()) -> list[Finding]:
    """Findings in the changed Python files (``None``: deleted, skipped)."""
    found: list[Finding] = []
    for path, data in sorted(files.items()):
        if data is None or not (path.endswith(".py") or path.endswith(".pyw")):
            continue
        if len(data) > MAX_SOURCE_BYTES:
            found.append(Finding(path, 0, f"a {len(data)}-byte source file is too large to verify"))
            continue
        try:
            tree = ast.parse(data, filename=path)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue  # it will not import either; the tests say so
        scanner = _Scanner(path, path in test_paths)
        try:
            scanner.visit(tree)
        except RecursionError:
            scanner.found.append(Finding(path, 0, "nested too deeply to verify"))
        found.extend(_dedupe(scanner.found))
    return found


def introduced(*, before: Mapping[str, bytes | None], after: Mapping[str, bytes | None],
               test_paths: frozenset[str] | set[str] = frozenset()) -> list[Finding]:
    """Findings of ``after`` that the base versions (``before``) do not already
    have: a change is not blamed for what its repository always did (an
    upstream file with a computed import), only for what it brings."""
    old = Counter((f.path, f.what) for f in scan(before, test_paths=test_paths))
    found = []
    for finding in scan(after, test_paths=test_paths):
        key = (finding.path, finding.what)
        if old[key] > 0:
            old[key] -= 1
        else:
            found.append(finding)
    return found


def _dedupe(findings: list[Finding]) -> Iterator[Finding]:
    seen = set()
    for finding in findings:
        if (finding.line, finding.what) not in seen:
            seen.add((finding.line, finding.what))
            yield finding
