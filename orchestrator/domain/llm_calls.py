"""Count LLM call sites in source files, for ``llm_reduction`` (SPEC §4).

Python is parsed with :mod:`ast`: a call counts when the dotted name of the
callee (``client.chat.completions.create``) matches one of the configured
regular expressions, so comments, strings and definitions never count.
Other languages fall back to per-extension regular expressions over the
text. Files that do not parse count zero rather than failing the experiment.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

DEFAULT_PYTHON_CALLEES = (
    r"(^|\.)chat\.completions\.create$",
    r"(^|\.)completions\.create$",
    r"(^|\.)messages\.create$",
    r"(^|\.)responses\.create$",
    r"^(litellm\.)?a?completion$",
    r"(^|\.)(llm|llm_client|model)\.(invoke|ainvoke|generate|agenerate|complete|predict|chat)$",
    r"^(call_llm|ask_llm|query_llm|llm_call|invoke_llm)$",
)
DEFAULT_TEXT_PATTERNS = {
    ".js": (r"\.chat\.completions\.create\(", r"\.messages\.create\(", r"\bcallLLM\("),
    ".ts": (r"\.chat\.completions\.create\(", r"\.messages\.create\(", r"\bcallLLM\("),
    ".rs": (r"\.chat\(\)\.create\(", r"\bcall_llm\("),
    ".go": (r"\.CreateChatCompletion\(", r"\bCallLLM\("),
    ".ex": (r"\bLLM\.(call|chat|complete)\(",),
}


@dataclass(frozen=True)
class LlmPatterns:
    python_callees: tuple[str, ...] = DEFAULT_PYTHON_CALLEES
    text_patterns: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_TEXT_PATTERNS))

    def extensions(self) -> set[str]:
        return {".py", *self.text_patterns}


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    elif isinstance(node, ast.Call):  # a().b() -> "b" suffix only
        parts.append("")
    else:
        return None
    return ".".join(reversed(parts)).lstrip(".")


def count_python(source: str | bytes, patterns: LlmPatterns) -> int:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # too deep for the parser
        return 0
    compiled = [re.compile(p) for p in patterns.python_callees]
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (name := _dotted(node.func)):
            if any(p.search(name) for p in compiled):
                count += 1
    return count


def count_file(path: str, source: bytes, patterns: LlmPatterns) -> int:
    """LLM call sites in one file; zero for languages without patterns."""
    if path.endswith(".py"):
        return count_python(source, patterns)
    for ext, regexes in patterns.text_patterns.items():
        if path.endswith(ext):
            text = source.decode("utf-8", "replace")
            return sum(len(re.findall(r, text)) for r in regexes)
    return 0


def llm_reduction(baseline_count: int, changed_count: int) -> float | None:
    """Relative drop in call sites; ``None`` when the baseline has none."""
    if baseline_count <= 0:
        return None
    return (baseline_count - changed_count) / baseline_count
