"""Intake checks without I/O (SPEC §2): size, JSON, schema, paths, emptiness,
resources. Every bad request must end in ``RequestRejected`` with a specific
code, never in another exception.
"""

from __future__ import annotations

import base64
import copy
import json

import pytest

from orchestrator.domain.capabilities import Capabilities
from orchestrator.domain.intake import IntakeLimits, decode_body, parse_request
from orchestrator.domain.models import ExperimentRequest, parse_memory
from orchestrator.errors import RequestRejected

LIMITS = IntakeLimits(
    max_body_bytes=64 * 1024,
    max_files=3,
    max_cpu=4.0,
    max_memory_bytes=8 * 2**30,
    max_gpus=1,
    max_pids=2048,
    max_timeout_ms=2 * 3_600_000,
    capabilities=Capabilities(network=True, gpus="devices"),
)

VALID = {
    "experiment_id": "0B6F2C9E-8C43-4E51-9A59-1D2B3C4D5E6F",
    "instance_id": "singularity-prod-1",
    "experiment_type": "decomposition",
    "description": "Add pre-classifier to SPARC decomposition",
    "risk_level": "low",
    "estimated_impact": 0.4,
    "repo": "monorepo",
    "base_ref": "3f2a9c1",
    "changes": {
        "description": "pre-classifier",
        "files": [
            {"path": "lib/x.py", "content": "print('x')\n"},
            {"path": "lib/old.py", "delete": True},
        ],
    },
    "validation": {"command": ["pytest", "-q", "--junitxml=/genesis/out/junit.xml"], "workdir": "."},
    "resources": {"cpu": 2, "memory": "4Gi", "gpu": 0, "pids": 1024},
    "network": False,
    "timeout_ms": 3_600_000,
    "priority": 0,
    "rollback_plan": "git reset --hard 3f2a9c1",
}

PATCH = """\
diff --git a/lib/x.py b/lib/x.py
--- a/lib/x.py
+++ b/lib/x.py
@@ -1 +1 @@
-a
+b
"""


def request(**overrides) -> dict:
    """A deep copy of VALID with top-level fields replaced."""
    body = copy.deepcopy(VALID)
    body.update(overrides)
    return body


def with_changes(**changes) -> dict:
    return request(changes=changes)


def with_resources(**resources) -> dict:
    return request(resources={**VALID["resources"], **resources})


def rejected(body, limits: IntakeLimits = LIMITS) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        parse_request(body, limits)
    return info.value


# -- a valid request ----------------------------------------------------------------


@pytest.mark.parametrize("form", ["dict", "bytes", "str"])
def test_valid_request_parses_from_every_body_form(form: str) -> None:
    body = {"dict": VALID, "bytes": json.dumps(VALID).encode(), "str": json.dumps(VALID)}[form]
    parsed = parse_request(body, LIMITS)
    assert isinstance(parsed, ExperimentRequest)
    assert parsed.instance_id == "singularity-prod-1"
    assert parsed.risk_level == "low"
    assert [f.path for f in parsed.changes.files] == ["lib/x.py", "lib/old.py"]
    assert parsed.resources.memory_bytes == 4 * 2**30
    assert parsed.validation is not None and parsed.validation.command[0] == "pytest"


@pytest.mark.parametrize(
    "given",
    [
        "0B6F2C9E-8C43-4E51-9A59-1D2B3C4D5E6F",
        "0b6f2c9e-8c43-4e51-9a59-1d2b3c4d5e6f",
        "0b6f2c9e8c434e519a591d2b3c4d5e6f",
    ],
)
def test_uuid_experiment_id_is_normalised(given: str) -> None:
    parsed = parse_request(request(experiment_id=given), LIMITS)
    assert parsed.experiment_id == "0b6f2c9e-8c43-4e51-9a59-1d2b3c4d5e6f"


def test_non_uuid_experiment_id_is_kept_as_given() -> None:
    assert parse_request(request(experiment_id="manual-run.1"), LIMITS).experiment_id == "manual-run.1"


def test_defaults_fill_optional_fields() -> None:
    body = {k: VALID[k] for k in ("experiment_id", "instance_id", "repo", "base_ref", "changes")}
    parsed = parse_request(body, IntakeLimits())
    assert parsed.risk_level == "medium"
    assert parsed.network is False
    assert parsed.validation is None
    assert parsed.resources.cpu == 1.0
    assert parsed.resources.memory_bytes == 2**30


def test_patch_only_request_parses() -> None:
    parsed = parse_request(with_changes(patch=PATCH), LIMITS)
    assert parsed.changes.patch == PATCH
    assert parsed.changes.files == []


def test_valid_content_b64_parses() -> None:
    b64 = base64.b64encode(b"\x00\x01binary").decode()
    parsed = parse_request(with_changes(files=[{"path": "bin/blob", "content_b64": b64}]), LIMITS)
    assert parsed.changes.files[0].content_b64 == b64


# -- body --------------------------------------------------------------------------------


def test_oversized_body_is_rejected_before_parsing() -> None:
    body = json.dumps(request(description="x" * 5000)).encode()
    limits = IntakeLimits(max_body_bytes=len(body) - 1)
    error = rejected(body, limits)
    assert error.code == "body_too_large"
    assert str(len(body)) in str(error)


def test_body_exactly_at_the_limit_is_accepted() -> None:
    body = json.dumps(VALID).encode()
    limits = IntakeLimits(max_body_bytes=len(body), max_cpu=4, max_memory_bytes=8 * 2**30)
    assert parse_request(body, limits).repo == "monorepo"


def test_oversized_str_body_counts_encoded_bytes() -> None:
    body = json.dumps(request(description="é" * 600), ensure_ascii=False)
    limits = IntakeLimits(max_body_bytes=len(body) + 100)  # the str is short enough, the bytes are not
    assert len(body.encode()) > limits.max_body_bytes
    assert rejected(body, limits).code == "body_too_large"


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"{'single': 'quotes'}", b"\xff\xfe\x00garbage"])
def test_not_json_is_invalid_json(body: bytes) -> None:
    assert rejected(body).code == "invalid_json"


@pytest.mark.parametrize("body", [b"[]", b"[1, 2]", b'"string"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_invalid_request(body: bytes) -> None:
    error = rejected(body)
    assert error.code == "invalid_request"
    assert "object" in str(error)


def test_decode_body_returns_the_object() -> None:
    assert decode_body(b'{"a": 1}', LIMITS) == {"a": 1}


def test_deeply_nested_json_is_rejected_not_crashing() -> None:
    # BUG: json.loads raises RecursionError on deep nesting (well under the
    # 4 MiB body limit); decode_body lets it escape instead of rejecting.
    depth = 100_000
    body = b'{"description": ' + b"[" * depth + b"]" * depth + b"}"
    assert len(body) < IntakeLimits().max_body_bytes
    assert rejected(body, IntakeLimits()).code in {"invalid_json", "invalid_request"}


def test_integer_with_too_many_digits_is_rejected_not_crashing() -> None:
    # BUG: Python refuses to convert a >4300-digit integer literal with a
    # plain ValueError, which is not a JSONDecodeError and escapes decode_body.
    body = json.dumps(request()).encode()[:-1] + b', "priority": ' + b"1" * 5000 + b"}"
    assert rejected(body).code in {"invalid_json", "invalid_request"}


def test_str_body_with_lone_surrogate_is_rejected_not_crashing() -> None:
    # BUG (minor): a str body is encoded with strict UTF-8, so a lone
    # surrogate raises UnicodeEncodeError out of decode_body.
    assert rejected('{"experiment_id": "\ud800"}').code in {"invalid_json", "invalid_request"}


# -- schema -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in VALID.items() if k != "instance_id"}, "instance_id"),
        ({k: v for k, v in VALID.items() if k != "changes"}, "changes"),
        (request(risk_level="extreme"), "risk_level"),
        (request(experiment_id="../etc"), "experiment_id"),
        (request(experiment_id=""), "experiment_id"),
        (request(timeout_ms=0), "timeout_ms"),
        (request(priority=5000), "priority"),
        (request(validation={"command": []}), "validation.command"),
        (request(resources={"cpu": 0}), "resources.cpu"),
        (request(resources={"memory": "lots"}), "resources.memory"),
        (request(resources={"memory": "1Mi"}), "resources.memory"),
        (request(resources={"pids": 1}), "resources.pids"),
        (with_changes(files=[{"path": "a.py", "content": "x", "delete": True}]), "changes.files.0"),
        (with_changes(files=[{"path": "a.py", "content": "x", "mode": "777"}]), "changes.files.0.mode"),
        (with_changes(files=[{"path": "a.py", "content": "x", "owner": "root"}]), "changes.files.0.owner"),
        (with_changes(patch=PATCH, unknown=1), "changes.unknown"),
    ],
)
def test_schema_error_is_invalid_request_naming_the_field(body: dict, field: str) -> None:
    error = rejected(body)
    assert error.code == "invalid_request"
    assert str(error).startswith(field)


def test_unknown_top_level_fields_are_ignored() -> None:
    assert parse_request(request(future_field={"x": 1}), LIMITS).repo == "monorepo"


# -- changes ------------------------------------------------------------------------------


def test_bare_path_list_without_patch_is_empty_change() -> None:
    error = rejected(with_changes(files=["a.py", "b.py"]))
    assert error.code == "empty_change"


def test_bare_path_beside_real_change_is_still_empty_change() -> None:
    error = rejected(with_changes(files=[{"path": "a.py", "content": "x"}, "b.py"]))
    assert error.code == "empty_change"
    assert "b.py" in str(error)


@pytest.mark.parametrize(
    "changes",
    [{}, {"files": []}, {"patch": ""}, {"patch": "   \n\t"}, {"description": "only words"}],
)
def test_empty_changes_are_empty_change(changes: dict) -> None:
    assert rejected(request(changes=changes)).code == "empty_change"


def test_too_many_files() -> None:
    files = [{"path": f"f{i}.py", "content": "x"} for i in range(LIMITS.max_files + 1)]
    error = rejected(with_changes(files=files))
    assert error.code == "too_many_files"
    assert str(LIMITS.max_files) in str(error)


def test_exactly_max_files_is_accepted() -> None:
    files = [{"path": f"f{i}.py", "content": "x"} for i in range(LIMITS.max_files)]
    assert len(parse_request(with_changes(files=files), LIMITS).changes.files) == LIMITS.max_files


@pytest.mark.parametrize(("first", "second"), [("a.py", "a.py"), ("lib/x.py", "lib/./x.py"), ("lib/x.py", "./lib//x.py")])
def test_duplicate_path_is_invalid_path(first: str, second: str) -> None:
    error = rejected(with_changes(files=[{"path": first, "content": "1"}, {"path": second, "delete": True}]))
    assert error.code == "invalid_path"
    assert "twice" in str(error)


@pytest.mark.parametrize("path", ["/etc/passwd", "../x.py", ".git/config", "a\\b.py", "a\x00b"])
def test_unsafe_file_path_is_invalid_path(path: str) -> None:
    assert rejected(with_changes(files=[{"path": path, "content": "x"}])).code == "invalid_path"


def test_unsafe_patch_path_is_invalid_path() -> None:
    assert rejected(with_changes(patch=PATCH.replace("lib/x.py", "../../etc/passwd"))).code == "invalid_path"


def test_unsafe_validation_workdir_is_invalid_path() -> None:
    error = rejected(request(validation={"command": ["pytest"], "workdir": "../outside"}))
    assert error.code == "invalid_path"


@pytest.mark.parametrize("content_b64", ["not base64!", "abc", "YWJj\n===="])
def test_bad_content_b64_is_invalid_request(content_b64: str) -> None:
    error = rejected(with_changes(files=[{"path": "blob.bin", "content_b64": content_b64}]))
    assert error.code == "invalid_request"
    assert "content_b64" in str(error)


# -- resources ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "resource"),
    [
        (with_resources(cpu=4.5), "cpu"),
        (with_resources(memory="9Gi"), "memory"),
        (with_resources(memory=8 * 2**30 + 1), "memory"),
        (with_resources(gpu=2), "gpu"),
        (with_resources(pids=4096), "pids"),
        (request(timeout_ms=2 * 3_600_000 + 1), "timeout_ms"),
    ],
)
def test_resources_over_the_limits_are_rejected_naming_the_resource(body: dict, resource: str) -> None:
    error = rejected(body)
    assert error.code == "resources_exceeded"
    assert resource in str(error)


def test_resources_exactly_at_the_limits_are_accepted() -> None:
    body = with_resources(cpu=4, memory="8Gi", gpu=1, pids=2048)
    body["timeout_ms"] = 2 * 3_600_000
    parsed = parse_request(body, LIMITS)
    assert parsed.resources.gpu == 1
    assert parsed.resources.memory_bytes == LIMITS.max_memory_bytes


def test_every_exceeded_resource_is_named() -> None:
    error = rejected(with_resources(cpu=8, memory="16Gi", gpu=4, pids=4096))
    assert error.code == "resources_exceeded"
    for resource in ("cpu", "memory", "gpu", "pids"):
        assert resource in str(error)


def test_gpu_is_refused_on_a_host_without_gpus() -> None:
    no_gpus_listed = IntakeLimits(capabilities=Capabilities(gpus="devices"))
    error = rejected(with_resources(cpu=1, memory="512Mi", gpu=1), no_gpus_listed)
    assert error.code == "resources_exceeded"
    assert "gpu" in str(error)


# -- what the runtime can honour -----------------------------------------------------


@pytest.mark.parametrize("gpus", ["devices", "count"])
def test_gpus_are_accepted_where_the_runtime_can_give_them(gpus: str) -> None:
    limits = IntakeLimits(max_gpus=1, capabilities=Capabilities(gpus=gpus))
    assert parse_request(with_resources(cpu=1, memory="512Mi", gpu=1), limits).resources.gpu == 1


def test_gpus_are_refused_by_a_runtime_that_cannot_give_any_before_any_count() -> None:
    error = rejected(with_resources(cpu=1, memory="512Mi", gpu=1), IntakeLimits(max_gpus=4))
    assert error.code == "unsupported_by_runtime"
    assert "gpu" in str(error)


def test_network_is_refused_by_a_runtime_that_gives_sandboxes_none() -> None:
    body = request(network=True, resources={"cpu": 1, "memory": "512Mi"})
    error = rejected(body, IntakeLimits(capabilities=Capabilities(gpus="count")))
    assert error.code == "unsupported_by_runtime"
    assert "network" in str(error)
    assert parse_request(body, IntakeLimits(capabilities=Capabilities(network=True))).network is True


def test_a_runtime_promises_nothing_optional_unless_it_says_so() -> None:
    assert Capabilities() == Capabilities(network=False, gpus="none", disk_usage=False, events=False,
                                          image_registry=None)
    assert Capabilities(network=True, gpus="devices").refusals(network=True, gpus=2) == []


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("512Mi", 512 * 2**20),
        ("4Gi", 4 * 2**30),
        ("1G", 10**9),
        ("1Ti", 2**40),
        ("100k", 100_000),
        ("1.5Gi", int(1.5 * 2**30)),
        ("64MiB", 64 * 2**20),
        (" 2gi ", 2 * 2**30),
        ("1048576", 2**20),
        (1048576, 2**20),
    ],
)
def test_parse_memory(quantity, expected: int) -> None:
    assert parse_memory(quantity) == expected


@pytest.mark.parametrize("quantity", ["", "lots", "4 Gigs", "-1Gi", "1e9", "Gi"])
def test_parse_memory_rejects_non_quantities(quantity: str) -> None:
    with pytest.raises(ValueError):
        parse_memory(quantity)


def test_absurdly_large_memory_quantity_is_rejected_not_crashing() -> None:
    # BUG: parse_memory does int(float(digits) * unit); 400 digits overflow
    # the float to inf and int(inf) raises OverflowError, which pydantic does
    # not turn into a validation error, so it escapes parse_request.
    error = rejected(with_resources(memory="1" * 400 + "Gi"))
    assert error.code in {"invalid_request", "resources_exceeded"}
