"""LLM call-site counting for ``llm_reduction`` (SPEC §4): AST-aware for
Python, per-extension regular expressions for other languages.
"""

from __future__ import annotations

import pytest

from orchestrator.domain.llm_calls import LlmPatterns, count_file, count_python, llm_reduction

PATTERNS = LlmPatterns()


@pytest.mark.parametrize(
    "call",
    [
        "client.chat.completions.create(model='m', messages=[])",
        "openai_client.completions.create(prompt='p')",
        "anthropic.messages.create(max_tokens=1)",
        "client.responses.create(input='x')",
        "litellm.completion(model='m')",
        "litellm.acompletion(model='m')",
        "completion(model='m')",
        "self.llm.invoke('q')",
        "self.llm_client.generate('q')",
        "model.predict('q')",
        "call_llm('q')",
        "ask_llm('q')",
        "get_client().chat.completions.create()",
    ],
)
def test_counts_known_call_shapes(call: str) -> None:
    assert count_python(call + "\n", PATTERNS) == 1


def test_counts_every_call_site_once() -> None:
    source = """
import openai

client = openai.OpenAI()


def classify(text):
    return client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])


async def summarise(text):
    first = await client.chat.completions.create(model="m", messages=[])
    second = call_llm(text)
    return [client.messages.create(x=i) for i in range(3)], first, second
"""
    # chat.completions.create matches two patterns but is one call site.
    assert count_python(source, PATTERNS) == 4


def test_ignores_strings_comments_and_definitions() -> None:
    source = '''
"""Docs: call client.chat.completions.create(...) to ask the model."""
# client.chat.completions.create(model="m")
PROMPT = "client.messages.create(x)"
text = f"{'call_llm(q)'}"


def call_llm(prompt):
    return prompt


class completions:
    def create(self):
        return None


handler = client.chat.completions.create  # a reference, not a call
'''
    assert count_python(source, PATTERNS) == 0


@pytest.mark.parametrize(
    "call",
    ["client.chat.completions.list()", "create()", "llm_invoke()", "client.chat.create()", "mymodel.invoke()"],
)
def test_similar_names_do_not_count(call: str) -> None:
    assert count_python(call, PATTERNS) == 0


@pytest.mark.parametrize(
    "source",
    ["def broken(:\n    client.chat.completions.create()\n", "client.chat.completions.create(", b"\xff\xfe\xfa",
     b"call_llm()\x00"],
)
def test_source_that_does_not_parse_counts_zero(source) -> None:
    assert count_python(source, PATTERNS) == 0


def test_bytes_source_is_parsed() -> None:
    assert count_python(b"call_llm('x')\ncall_llm('y')\n", PATTERNS) == 2


def test_configured_callees_replace_the_defaults() -> None:
    custom = LlmPatterns(python_callees=(r"(^|\.)ask_oracle$",))
    source = "svc.ask_oracle(1)\nclient.chat.completions.create()\n"
    assert count_python(source, custom) == 1
    assert count_python(source, PATTERNS) == 1  # only the default pattern's call


@pytest.mark.parametrize(
    "source",
    ["x" + ".y" * 5000 + "\n", "-" * 20000 + "1\n"],
    ids=["long-attribute-chain", "deep-unary"],
)
def test_source_too_deep_to_parse_counts_zero(source: str) -> None:
    # BUG: ast.parse raises RecursionError / MemoryError on deeply nested
    # source; count_python only catches SyntaxError and ValueError, so one
    # hostile file in a change crashes the collector instead of counting 0.
    assert count_python(source, PATTERNS) == 0


def test_count_file_python_uses_the_ast() -> None:
    source = b"# call_llm()\ncall_llm()\n"
    assert count_file("pkg/mod.py", source, PATTERNS) == 1


def test_count_file_javascript_uses_regexes() -> None:
    source = b"""
const a = await openai.chat.completions.create({model: "m"});
const b = await anthropic.messages.create({max_tokens: 1});
const c = callLLM("q"); const d = callLLM("r");
// text mode cannot tell comments apart: openai.chat.completions.create(
"""
    assert count_file("web/app.js", source, PATTERNS) == 5
    assert count_file("web/app.ts", source, PATTERNS) == 5


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("svc/main.go", b"c.CreateChatCompletion(ctx, req)\nCallLLM(x)\n", 2),
        ("src/lib.rs", b"client.chat().create(req)\ncall_llm(x)\n", 2),
        ("lib/app.ex", b"LLM.call(x)\nLLM.chat(y)\nLLM.other(z)\n", 2),
        ("README.md", b"client.chat.completions.create(", 0),
        ("data.json", b'{"call": "callLLM("}', 0),
        ("bad.js", b"\xff\xfe callLLM(", 1),
    ],
)
def test_count_file_other_languages(path: str, source: bytes, expected: int) -> None:
    assert count_file(path, source, PATTERNS) == expected


def test_extensions_cover_python_and_text_patterns() -> None:
    assert {".py", ".js", ".ts", ".rs", ".go", ".ex"} <= PATTERNS.extensions()


@pytest.mark.parametrize(
    ("baseline", "changed", "expected"),
    [(3, 2, 1 / 3), (4, 0, 1.0), (4, 4, 0.0), (2, 3, -0.5), (10, 6, 0.4)],
)
def test_llm_reduction(baseline: int, changed: int, expected: float) -> None:
    assert llm_reduction(baseline, changed) == pytest.approx(expected)


@pytest.mark.parametrize("changed", [0, 5])
def test_llm_reduction_without_baseline_calls_is_unmeasured(changed: int) -> None:
    assert llm_reduction(0, changed) is None
