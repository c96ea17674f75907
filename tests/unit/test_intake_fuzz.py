"""Property: intake never raises anything but ``RequestRejected`` (SPEC §2
"A bad request never crashes intake"), and every rejection carries one of
the documented intake codes.
"""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.domain.capabilities import Capabilities
from orchestrator.domain.intake import IntakeLimits, parse_request
from orchestrator.domain.models import ExperimentRequest
from orchestrator.errors import RequestRejected

CODES = {
    "invalid_request",
    "invalid_json",
    "body_too_large",
    "too_many_files",
    "invalid_path",
    "empty_change",
    "resources_exceeded",
    "unsupported_by_runtime",
}

LIMITS = IntakeLimits(max_body_bytes=16 * 1024, max_files=5, max_cpu=2.0, max_gpus=1,
                      capabilities=Capabilities(gpus="devices"))  # no network: a fuzzed `network: true` is refused

VALID = {
    "experiment_id": "0b6f2c9e-8c43-4e51-9a59-1d2b3c4d5e6f",
    "instance_id": "singularity-prod-1",
    "experiment_type": "decomposition",
    "risk_level": "low",
    "estimated_impact": 0.4,
    "repo": "monorepo",
    "base_ref": "3f2a9c1",
    "changes": {
        "description": "d",
        "patch": "diff --git a/lib/y.py b/lib/y.py\n--- a/lib/y.py\n+++ b/lib/y.py\n@@ -1 +1 @@\n-a\n+b\n",
        "files": [{"path": "lib/x.py", "content": "x = 1\n"}, {"path": "lib/old.py", "delete": True}],
    },
    "validation": {"command": ["pytest", "-q"], "workdir": "."},
    "resources": {"cpu": 1, "memory": "512Mi", "gpu": 0, "pids": 256},
    "network": False,
    "timeout_ms": 60_000,
    "priority": 0,
}

# Every place a field can be replaced, top level and nested.
FIELD_PATHS = [
    ("experiment_id",), ("instance_id",), ("experiment_type",), ("description",), ("risk_level",),
    ("estimated_impact",), ("repo",), ("base_ref",), ("changes",), ("changes", "description"),
    ("changes", "patch"), ("changes", "files"), ("changes", "files", 0), ("changes", "files", 0, "path"),
    ("changes", "files", 0, "content"), ("changes", "files", 0, "content_b64"), ("changes", "files", 0, "mode"),
    ("changes", "files", 1, "delete"), ("validation",), ("validation", "command"), ("validation", "workdir"),
    ("resources",), ("resources", "cpu"), ("resources", "memory"), ("resources", "gpu"), ("resources", "pids"),
    ("network",), ("timeout_ms",), ("priority",), ("rollback_plan",),
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
# Values that look nearly right, so mutated requests get past the schema and
# reach the path, emptiness and resource checks.
plausible = st.one_of(
    st.sampled_from(["../x", "/etc/passwd", ".git/config", "a/./b", "a\\b", "", ".", "4Gi", "99Ti", "lots",
                     "not base64!", "YWJj", "777", "755", "diff --git a/../x b/../x\n", "x" * 300]),
    st.integers(min_value=-10, max_value=10_000_000),
    st.lists(st.sampled_from(["a.py", "b.py", "a.py"]), max_size=8),
    st.lists(st.fixed_dictionaries({"path": st.sampled_from(["a.py", "b/c.py", "../d", "a.py"]),
                                     "content": st.text(max_size=5)}), max_size=8),
)


def _replace(body: dict, path: tuple, value: object) -> dict:
    body = copy.deepcopy(body)
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


mutated_requests = st.builds(
    _replace, st.just(VALID), st.sampled_from(FIELD_PATHS), st.one_of(json_values, plausible)
)
json_dicts = st.dictionaries(st.text(max_size=15), json_values, max_size=8)

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _outcome(body: object) -> ExperimentRequest | RequestRejected:
    try:
        return parse_request(body, LIMITS)
    except RequestRejected as exc:
        return exc


def _assert_parsed_or_rejected(body: object) -> None:
    result = _outcome(body)  # any other exception fails the test
    if isinstance(result, RequestRejected):
        assert result.code in CODES, result.code
        assert str(result), "a rejection must carry a human message"
    else:
        assert isinstance(result, ExperimentRequest)


def test_the_base_request_is_valid() -> None:
    # Otherwise the mutations below would all be rejected for the same reason.
    assert isinstance(_outcome(VALID), ExperimentRequest)


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(body: bytes) -> None:
    _assert_parsed_or_rejected(body)


@FUZZ
@given(json_dicts)
def test_arbitrary_json_objects(body: dict) -> None:
    _assert_parsed_or_rejected(body)
    _assert_parsed_or_rejected(json.dumps(body).encode())


@FUZZ
@given(mutated_requests)
def test_valid_request_with_one_field_replaced(body: dict) -> None:
    _assert_parsed_or_rejected(body)
    _assert_parsed_or_rejected(json.dumps(body).encode())
